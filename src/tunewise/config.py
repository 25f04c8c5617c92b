"""Typed run configuration: YAML file + dotted CLI overrides, unknown keys are errors."""

from __future__ import annotations

import codecs
import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunewise.curate.settings import CurateConfig
from tunewise.errors import ConfigError
from tunewise.yaml_input import decode_utf8, parse_yaml

# Validation metrics for early stopping, by evaluation task ("loss" is the Trainer's own, for any task).
TASK_METRICS = {
    "classification": ("accuracy", "macro_f1"),
    "summarization": ("rouge1", "rouge2", "rougeL"),
    "qa": ("exact_match", "f1"),
    "generation": ("sentence_chrf", "chrf", "bleu"),
    "code": ("pass@1",),
    "perplexity": ("perplexity",),
}
TRAINING_METRICS = ("eval_loss", *sorted({f"eval_{m}" for names in TASK_METRICS.values() for m in names}))
LOWER_IS_BETTER = ("loss", "perplexity", "error")  # metric names containing these: smaller wins


def greater_is_better(metric: str) -> bool:
    return not any(word in metric for word in LOWER_IS_BETTER)


RecordKind = Literal["classification", "completion", "chat", "alpaca"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(Section):
    name: str = Field("smollm2-135m-instruct", description="alias, HF model dir, .gguf file or hub id")
    gguf_file: str | None = Field(None, description="GGUF file name inside `name` when `name` is a dir")
    revision: str | None = None
    trust_remote_code: bool = False
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class DataConfig(Section):
    kind: RecordKind = "classification"
    train: Path
    val: Path | None = None
    test: Path | None = None
    format: Literal["auto", "jsonl", "csv", "parquet"] = "auto"
    encoding: str = Field("utf-8", description="text encoding of JSONL/CSV files, e.g. utf-8, utf-16, latin-1")
    fields: dict[str, str] = Field(default_factory=dict, description="canonical field -> column in the file")
    labels: list[str] | None = Field(None, description="allowed labels; inferred from train when unset")
    on_error: Literal["raise", "skip"] = "raise"
    val_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    max_train_examples: int | None = Field(None, gt=0)
    max_val_examples: int | None = Field(None, gt=0)
    max_test_examples: int | None = Field(None, gt=0)

    @field_validator("encoding")
    @classmethod
    def _text_encoding(cls, value: str) -> str:
        """Python's codecs also hold byte transforms (hex, base64, rot13): they cannot decode a file."""
        try:
            info = codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}; e.g. utf-8, utf-16, latin-1") from None
        if not getattr(info, "_is_text_encoding", True) or info.name in {"punycode", "idna", "undefined"}:
            raise ValueError(f"{value!r} is a codec, not a text encoding; e.g. utf-8, utf-16, latin-1")
        return value


class PromptSettings(Section):
    template: str | None = Field(None, description="Jinja2 template of the user turn; record fields are vars")
    system: str | None = None
    chat_template: bool = Field(True, description="wrap the prompt in the model's chat template")
    answer_prefix: str | None = Field(
        None, description="text between prompt and answer; default ' ' without a chat template ('Label: positive')"
    )
    few_shot: int = Field(0, ge=0, description="solved training examples shown before each question")


class PromptConfig(PromptSettings):
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="more prompts to evaluate side by side: name -> changed keys"
    )

    @model_validator(mode="after")
    def _check_variants(self) -> PromptConfig:
        for name in self.variants:
            self.variant(name)
        return self

    def variant(self, name: str) -> PromptSettings:
        """This prompt with the variant's keys changed; unknown keys are errors naming the variant."""
        base = self.model_dump(exclude={"variants"})
        try:
            return PromptSettings.model_validate({**base, **(self.variants[name] or {})})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"prompt.variants.{name}: {problems}") from None


class LoraSettings(Section):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class TrainConfig(Section):
    lr: float = Field(2e-4, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="overrides epochs when > 0")
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup: float = Field(0.05, ge=0, description="ratio of total steps if < 1, else steps")
    scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    max_grad_norm: float = 1.0
    max_length: int = Field(512, gt=8)
    eval_steps: int = Field(50, gt=0)
    logging_steps: int = Field(5, gt=0)
    metric: str = Field(
        "eval_loss", description="validation metric for early stopping and best checkpoint: loss or a task metric"
    )
    metric_examples: int = Field(64, gt=0, description="validation examples scored for a task metric per evaluation")
    greater_is_better: bool | None = Field(None, description="inferred from the metric name when unset")
    patience: int = Field(3, ge=0, description="evaluations without improvement before stopping; 0 = off")
    min_delta: float = Field(0.0, ge=0)
    divergence_evals: int = Field(3, gt=0, description="warn when val loss rises while train loss falls")
    seed: int = 42
    packing: bool = Field(
        True, description="padding-free packed batches + LM head on answer tokens only (same loss, less work)"
    )
    fused_lora: bool = Field(
        True, description="add the LoRA update into the base output in place (same math, less memory and time)"
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute each layer's activations in backward: less memory, one more forward per step"
    )


class EvalConfig(Section):
    split: Literal["test", "val"] = "test"
    base: bool = Field(True, description="also evaluate the base model with the same prompt")
    batch_size: int = Field(16, gt=0)
    task: Literal["auto", "classification", "summarization", "qa", "generation", "code", "perplexity"] = Field(
        "auto", description="auto: label likelihood for classification, chrF/BLEU on generated text otherwise"
    )
    max_new_tokens: int = Field(128, gt=0)
    label_mode: Literal["likelihood", "generate"] = Field(
        "likelihood", description="classification: score each label, or generate freely and parse the label"
    )
    stop: list[str] = Field(default_factory=list, description="generation stops at the first of these")
    perplexity: bool = Field(True, description="also report reference perplexity for generative tasks")
    samples: int = Field(1, gt=0, description="code task: completions per problem (sampled when > 1)")
    k: list[int] = Field(default_factory=lambda: [1], description="code task: report pass@k for these k")
    timeout: float = Field(5.0, gt=0, description="code task: seconds per program")


class OutputConfig(Section):
    dir: Path = Path("runs")
    name: str | None = None


TRACKERS = ("mlflow", "tensorboard", "wandb", "trackio")


class TrackConfig(Section):
    report_to: list[Literal["mlflow", "tensorboard", "wandb", "trackio"]] = Field(
        default_factory=list, description="also send params, metrics and artifacts to these trackers"
    )
    experiment: str | None = Field(None, description="tracker experiment/project name (default: output.name)")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI (default: sqlite:///<output.dir>/mlflow.db)")


class SweepParam(Section):
    """A range (low/high, optionally log-scaled; ints stay ints) or a list of choices."""

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> SweepParam:
        if (self.choices is None) == (self.low is None or self.high is None):
            raise ValueError("give either low and high, or choices")
        if self.choices is None and self.low is not None and self.high is not None and self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.choices is not None and not self.choices:
            raise ValueError("choices is empty")
        return self


class SweepConfig(Section):
    params: dict[str, SweepParam] = Field(description="dotted config key -> range or choices, e.g. train.lr")
    n_trials: int = Field(10, gt=0)
    timeout_minutes: float | None = Field(None, gt=0, description="stop starting trials after this long")
    prune: bool = Field(True, description="median pruner on the validation metric at each evaluation")
    warmup_evals: int = Field(1, ge=0, description="evaluations before a trial may be pruned")


class AblateConfig(Section):
    fractions: list[float] = Field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0], description="learning curve")
    curated_vs_raw: bool = Field(True, description="equal-budget fine-tune on a random raw sample vs curated")
    raw: Path | None = Field(None, description="raw training file (default: data.train of a curated config)")

    @model_validator(mode="after")
    def _check_fractions(self) -> AblateConfig:
        if any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError("fractions must be in (0, 1]")
        return self


class Config(Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    curate: CurateConfig | None = None
    track: TrackConfig = Field(default_factory=TrackConfig)
    sweep: SweepConfig | None = None
    ablate: AblateConfig | None = None

    @model_validator(mode="after")
    def _check_sweep_keys(self) -> Config:
        for key in self.sweep.params if self.sweep else ():
            if key == "prompt.variant":
                unknown = [
                    c for c in self.sweep.params[key].choices or [] if c not in {"default", *self.prompt.variants}
                ]
                if unknown:
                    raise ValueError(f"sweep.params.prompt.variant: {unknown} not in prompt.variants")
                continue
            if key == "eval.allow_code_execution":
                raise ValueError(f"sweep.params: {CODE_FLAG_ONLY}")
            if not _is_config_key(key):
                raise ValueError(f"sweep.params: '{key}' is not a config key (use dotted paths like train.lr)")
        return self

    @model_validator(mode="after")
    def _check_metric(self) -> Config:
        if not self.train.metric.startswith("eval_"):
            self.train.metric = f"eval_{self.train.metric}"
        if self.train.metric not in TRAINING_METRICS:
            raise ValueError(
                f"train.metric '{self.train.metric}' is not computed during training; "
                f"use one of: {', '.join(TRAINING_METRICS)}"
            )
        name = self.train.metric.removeprefix("eval_")
        if name != "loss" and name not in TASK_METRICS[self.eval_task]:
            raise ValueError(
                f"train.metric '{name}' is not a metric of the {self.eval_task} task; "
                f"use loss or one of: {', '.join(TASK_METRICS[self.eval_task])}"
            )
        return self

    @property
    def eval_task(self) -> str:
        """The evaluation task `eval.task: auto` stands for with this data."""
        if self.eval.task != "auto":
            return self.eval.task
        return "classification" if self.data.kind == "classification" else "generation"


def _is_config_key(dotted: str) -> bool:
    model: Any = Config
    for part in dotted.split("."):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return False
        annotation = fields[part].annotation
        candidates = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        model = next((a for a in candidates if issubclass(a, BaseModel)), None)
    return True


CODE_FLAG_ONLY = (
    "eval.allow_code_execution is not a setting: generated code runs only when the command line of this "
    "invocation says so (--allow-code-execution)"
)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read YAML, apply `a.b=value` overrides, validate. Relative data paths resolve against the file."""
    path = Path(path)
    raw = _read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    for override in overrides or []:
        apply_override(raw, override)
    config = validate_config(raw, source=str(path))
    _resolve_data_paths(config.data, path.parent)
    if config.curate is not None and not config.curate.output.is_absolute():
        config.curate.output = path.parent / config.curate.output
    if config.ablate is not None and config.ablate.raw is not None and not config.ablate.raw.is_absolute():
        config.ablate.raw = path.parent / config.ablate.raw
    return config


MAX_CONFIG_BYTES = 1 << 20  # a config is a page of settings; a larger file is a mistake or an attack


def _read_yaml(path: Path) -> Any:
    """The YAML of a config file, refused with one line when it is no regular file or too large (see
    yaml_input for what else is refused)."""
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if not path.is_file():
        raise ConfigError(f"{path}: not a regular file; give the path of a YAML config file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes; a config is at most {MAX_CONFIG_BYTES} bytes")
    return parse_yaml(decode_utf8(path.read_bytes(), str(path)), str(path), in_file=True)


def apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{override}': expected KEY=VALUE, e.g. train.lr=1e-4")
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        if node.get(part) is None:  # absent, or left empty in the YAML (`prompt:`)
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"override '{override}': '{part}' is not a section")
    node[parts[-1]] = parse_yaml(value, f"override '{override}'") if value.strip() else None


def validate_config(raw: dict[str, Any], source: str = "config") -> Config:
    if isinstance(raw.get("eval"), dict) and "allow_code_execution" in raw["eval"]:
        # Whatever the value: a config, override, sweep or ablation arm never carries this permission.
        raise ConfigError(f"{source}: {CODE_FLAG_ONLY}")
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(err, source) for err in exc.errors())) from None


def _describe(err: Any, source: str) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        parent = _model_at(err["loc"][:-1])
        hint = ""
        if parent is not None:
            close = difflib.get_close_matches(str(err["loc"][-1]), list(parent.model_fields), n=1)
            hint = f" (did you mean '{'.'.join([*map(str, err['loc'][:-1]), close[0]])}'?)" if close else ""
            hint = hint or f" (known: {', '.join(parent.model_fields)})"
        return f"{source}: unknown key '{loc}'{hint}"
    if not loc:  # a check across sections: pydantic's message already says what is wrong
        return f"{source}: {str(err['msg']).removeprefix('Value error, ')}"
    if err["type"] == "missing":
        return f"{source}: missing required key '{loc}'"
    return f"{source}: '{loc}': {err['msg']} (got {err.get('input')!r})"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _resolve_data_paths(data: DataConfig, base: Path) -> None:
    for name in ("train", "val", "test"):
        value = getattr(data, name)
        if value is not None:
            value = value.expanduser()  # `~/data.jsonl` means the home folder, as in a shell
            setattr(data, name, value if value.is_absolute() else base / value)


def dump_config(config: Config) -> str:
    """YAML of the config, loadable from anywhere: file paths are written absolute (a relative path
    would be read against the new file's folder, not the one it was written for)."""
    raw = config.model_dump(mode="json")
    for section, key in (("data", "train"), ("data", "val"), ("data", "test"), ("curate", "output"), ("ablate", "raw")):
        if raw.get(section) and raw[section].get(key):
            raw[section][key] = str(Path(raw[section][key]).resolve())
    return yaml.safe_dump(raw, sort_keys=False)
