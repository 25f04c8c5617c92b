"""Typed run configuration: YAML file + dotted CLI overrides, unknown keys are errors (described by
tunewise.config.error_messages)."""

from __future__ import annotations

import codecs
import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunewise.config.curate import CurateConfig
from tunewise.config.error_messages import CODE_FLAG_ONLY, check, is_config_key, origins
from tunewise.core.yaml_input import decode_utf8, parse_yaml
from tunewise.errors import ConfigError

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
    """The base model that is evaluated and fine-tuned."""

    name: str = Field(
        "smollm2-135m-instruct",
        description="an alias (smollm2-135m-instruct), a Hugging Face model folder, a .gguf file or a hub id",
    )
    gguf_file: str | None = Field(None, description="GGUF file name inside `name` when `name` is a folder")
    revision: str | None = Field(None, description="branch, tag or commit of a hub model (default: its main branch)")
    trust_remote_code: bool = Field(
        False, description="load a model that ships its own Python code, which then runs: review that code first"
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="precision the model weights are loaded, trained and evaluated in"
    )


class DataConfig(Section):
    """The data files and how their records are read. Relative paths resolve against the config file."""

    kind: RecordKind = Field(
        "classification",
        description="record kind: classification (text, label), completion (prompt, completion), "
        "chat (messages), alpaca (instruction, input, output)",
    )
    train: Path = Field(description="training file: .jsonl, .csv or .parquet")
    val: Path | None = Field(None, description="validation file (default: split off train, see val_fraction)")
    test: Path | None = Field(None, description="test file (default: split off train, see test_fraction)")
    format: Literal["auto", "jsonl", "csv", "parquet"] = Field(
        "auto", description="file format; auto: from the extension (.jsonl/.json/.ndjson, .csv, .parquet)"
    )
    encoding: str = Field("utf-8", description="text encoding of JSONL/CSV files, e.g. utf-8, utf-16, latin-1")
    fields: dict[str, str] = Field(
        default_factory=dict, description="column of the file for each field of the kind, e.g. {text: tweet}"
    )
    labels: list[str] | None = Field(
        None, description="allowed labels (classification); other labels are bad records; default: those in train"
    )
    on_error: Literal["raise", "skip"] = Field(
        "raise", description="a bad record: raise stops with file, line and field; skip writes it to rejects.jsonl"
    )
    val_fraction: float = Field(
        0.1, gt=0, lt=1, description="without `val`: share of the training records held out for validation"
    )
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="without `test`: share of the training records held out for testing"
    )
    max_train_examples: int | None = Field(None, gt=0, description="train on a seeded sample of at most this many")
    max_val_examples: int | None = Field(None, gt=0, description="validate on a seeded sample of at most this many")
    max_test_examples: int | None = Field(None, gt=0, description="test on a seeded sample of at most this many")

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
    """How a record becomes the model's prompt, the same in training, evaluation and prediction."""

    template: str | None = Field(
        None,
        description="Jinja2 template of the user turn (sandboxed): the record's fields, its other columns and "
        "`labels` are variables; default: one per data kind",
    )
    system: str | None = Field(None, description="system message, used with the chat template and for chat data")
    chat_template: bool = Field(
        True, description="wrap the prompt in the model's chat template; false for base models without one"
    )
    answer_prefix: str | None = Field(
        None, description="text between prompt and answer; default ' ' without a chat template ('Label: positive')"
    )
    few_shot: int = Field(0, ge=0, description="seeded solved training examples shown before each question (not chat)")


class PromptConfig(PromptSettings):
    """How a record becomes the model's prompt, the same in training, evaluation and prediction."""

    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="more prompts every model is also evaluated with: name -> the keys above it changes, "
        "e.g. {few: {few_shot: 3}}",
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
    """The LoRA adapter that is trained; the base model's weights stay frozen."""

    r: int = Field(16, gt=0, description="rank of the LoRA update matrices")
    alpha: int = Field(32, gt=0, description="scaling: the LoRA update is multiplied by alpha / r")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the LoRA input during training")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="names of the modules to adapt, or all-linear: every linear layer but the output"
    )


class TrainConfig(Section):
    """Fine-tuning: AdamW, learning-rate schedule, validation, early stopping and the best checkpoint."""

    lr: float = Field(2e-4, gt=0, description="peak learning rate")
    epochs: float = Field(1.0, gt=0, description="passes over the training set (fractions allowed)")
    max_steps: int = Field(-1, description="optimizer steps to train; overrides epochs when > 0")
    batch_size: int = Field(8, gt=0, description="examples per micro-batch, in training and validation")
    grad_accum: int = Field(1, gt=0, description="micro-batches per optimizer step")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    warmup: float = Field(0.05, ge=0, description="ratio of total steps if < 1, else steps")
    scheduler: Literal["cosine", "linear", "constant_with_warmup"] = Field(
        "cosine", description="learning-rate schedule after warmup"
    )
    max_grad_norm: float = Field(1.0, description="gradients are clipped to this total norm; 0 = no clipping")
    max_length: int = Field(
        512,
        gt=8,
        description="tokens per example, prompt and answer; longer ones are truncated, and one whose answer "
        "would be cut entirely is rejected",
    )
    eval_steps: int = Field(50, gt=0, description="validate and save a checkpoint every this many steps")
    logging_steps: int = Field(5, gt=0, description="log the training loss every this many steps")
    metric: str = Field(
        "eval_loss", description="validation metric for early stopping and best checkpoint: loss or a task metric"
    )
    metric_examples: int = Field(64, gt=0, description="validation examples scored for a task metric per evaluation")
    greater_is_better: bool | None = Field(None, description="inferred from the metric name when unset")
    patience: int = Field(3, ge=0, description="evaluations without improvement before stopping; 0 = off")
    min_delta: float = Field(0.0, ge=0, description="smallest change of the metric that counts as an improvement")
    divergence_evals: int = Field(
        3, gt=0, description="warn when validation loss rises while training loss falls this many evaluations in a row"
    )
    seed: int = Field(42, description="seed of the data splits, example order, LoRA initialisation and sampling")
    packing: bool = Field(
        True, description="padding-free packed batches + LM head on answer tokens only (same loss, less work)"
    )
    fused_lora: bool = Field(
        True, description="add the LoRA update into the base output in place (same math, less memory and time)"
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute each layer's activations in backward: less memory, one more forward per step"
    )
    sampler: Literal["random", "stratified", "length_grouped"] = Field(
        "random",
        description="order of training examples in an epoch. random: shuffled, each epoch in its own seeded order; "
        "stratified (classification): every batch holds the labels in about their training-set proportions; "
        "length_grouped: batches of similar length (less padding when train.packing is off; when length goes "
        "with the label, batches can hold one label only, and tunewise warns)",
    )


class EvalConfig(Section):
    """Evaluation of the base and the fine-tuned model on the same split with the same prompt."""

    split: Literal["test", "val"] = Field("test", description="the split evaluated")
    base: bool = Field(True, description="also evaluate the base model with the same prompt")
    batch_size: int = Field(16, gt=0, description="examples per evaluation batch")
    task: Literal["auto", "classification", "summarization", "qa", "generation", "code", "perplexity"] = Field(
        "auto", description="auto: label likelihood for classification, chrF/BLEU on generated text otherwise"
    )
    max_new_tokens: int = Field(128, gt=0, description="most tokens generated per answer")
    label_mode: Literal["likelihood", "generate"] = Field(
        "likelihood", description="classification: score each label, or generate freely and parse the label"
    )
    stop: list[str] = Field(default_factory=list, description="generation stops at the first of these")
    perplexity: bool = Field(True, description="also report reference perplexity for generative tasks")
    samples: int = Field(1, gt=0, description="code task: completions per problem (sampled when > 1)")
    k: list[int] = Field(default_factory=lambda: [1], description="code task: report pass@k for these k")
    timeout: float = Field(5.0, gt=0, description="code task: seconds per program")
    calibrate: bool = Field(
        False,
        description="classification with label_mode likelihood, evaluated on split test: also report base · "
        "calibrated and fine-tuned · calibrated rows, with per-label score offsets fitted on the validation split "
        "only to maximise macro-F1; the uncalibrated rows stay",
    )


class OutputConfig(Section):
    """Where runs are written."""

    dir: Path = Field(
        Path("runs"), description="workspace of runs, sweeps and ablations; relative to the current folder"
    )
    name: str | None = Field(
        None,
        description="name of runs, sweeps and ablations (default: the config file's name; config.yaml: its folder's)",
    )


TRACKERS = ("mlflow", "tensorboard", "wandb", "trackio")


class TrackConfig(Section):
    """Experiment trackers that receive each run besides its run directory."""

    report_to: list[Literal["mlflow", "tensorboard", "wandb", "trackio"]] = Field(
        default_factory=list, description="also send params, metrics and artifacts to these trackers"
    )
    experiment: str | None = Field(None, description="tracker experiment/project name (default: output.name)")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI (default: sqlite:///<output.dir>/mlflow.db)")


class SweepParam(Section):
    """A range (low/high, optionally log-scaled; ints stay ints) or a list of choices."""

    low: int | float | None = Field(None, description="lower end of the range; with two ints, only ints are tried")
    high: int | float | None = Field(None, description="upper end of the range")
    log: bool = Field(False, description="sample the range on a log scale (needs low > 0)")
    choices: list[Any] | None = Field(None, description="values to try instead of a range")

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
    """A hyperparameter search with Optuna (`tunewise sweep`): each trial is one run with sampled values."""

    params: dict[str, SweepParam] = Field(
        description="dotted config key -> its range or choices, e.g. {train.lr: {low: 1e-5, high: 1e-3, log: true}}"
    )
    n_trials: int = Field(10, gt=0, description="trials in all; running the sweep again resumes up to this many")
    timeout_minutes: float | None = Field(None, gt=0, description="stop starting trials after this long")
    prune: bool = Field(True, description="median pruner on the validation metric at each evaluation")
    warmup_evals: int = Field(1, ge=0, description="evaluations before a trial may be pruned")


class AblateConfig(Section):
    """Data ablations (`tunewise ablate`): a learning curve, and curated against raw data."""

    fractions: list[float] = Field(
        default_factory=lambda: [0.1, 0.25, 0.5, 1.0],
        description="learning curve: fine-tune on nested seeded shares of the training set, each in (0, 1]; "
        "1.0 is always added",
    )
    curated_vs_raw: bool = Field(True, description="equal-budget fine-tune on a random raw sample vs curated")
    raw: Path | None = Field(None, description="raw training file (default: data.train of a curated config)")

    @model_validator(mode="after")
    def _check_fractions(self) -> AblateConfig:
        if any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError("fractions must be in (0, 1]")
        return self


class Config(Section):
    """A config file: YAML with these sections, of which only `data` is required."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="the base model")
    data: DataConfig = Field(description="the data files and how their records are read")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="how a record becomes the prompt")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="the LoRA adapter")
    train: TrainConfig = Field(default_factory=TrainConfig, description="fine-tuning")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="evaluation of base and fine-tuned model")
    output: OutputConfig = Field(default_factory=OutputConfig, description="where runs are written")
    curate: CurateConfig | None = Field(
        None, description="curation steps run before training (`tunewise curate`, first stage of `tunewise run`)"
    )
    track: TrackConfig = Field(default_factory=TrackConfig, description="experiment trackers")
    sweep: SweepConfig | None = Field(None, description="the hyperparameter search of `tunewise sweep`")
    ablate: AblateConfig | None = Field(None, description="the data ablations of `tunewise ablate`")

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
            if not is_config_key(type(self), key):
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

    @model_validator(mode="after")
    def _check_calibrate(self) -> Config:
        if self.eval.calibrate and self.eval_task != "classification":
            raise ValueError(
                f"eval.calibrate: true is for classification, and this config evaluates the {self.eval_task} task; "
                "set eval.calibrate: false"
            )
        if self.eval.calibrate and self.eval.label_mode == "generate":
            raise ValueError(
                "eval.calibrate: true calibrates label scores, which eval.label_mode: generate does not give; "
                "set eval.label_mode: likelihood or eval.calibrate: false"
            )
        if self.eval.calibrate and self.eval.split == "val":
            raise ValueError(
                "eval.calibrate: true fits its offsets on the validation split, so the evaluated split must be "
                "test; set eval.split: test"
            )
        return self

    @model_validator(mode="after")
    def _check_sampler(self) -> Config:
        if self.train.sampler == "stratified" and self.data.kind != "classification":
            raise ValueError(
                f"train.sampler: stratified batches need class labels, and data.kind: {self.data.kind} records "
                "have none; set train.sampler: random"
            )
        return self

    @property
    def eval_task(self) -> str:
        """The evaluation task `eval.task: auto` stands for with this data."""
        if self.eval.task != "auto":
            return self.eval.task
        return "classification" if self.data.kind == "classification" else "generation"


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read YAML, apply `a.b=value` overrides, validate. Relative data paths resolve against the file."""
    path = Path(path)
    raw = _read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    config = validate_config(raw, source=str(path), overrides=overrides or [])
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


def validate_config(raw: dict[str, Any], source: str = "config", overrides: Sequence[str] = ()) -> Config:
    """`raw` (read from `source`) with the `a.b=value` overrides applied, validated. Each problem is reported
    with its origin: `source`, or the override that brought it."""
    merged = copy.deepcopy(raw) if overrides else raw
    for override in overrides:
        apply_override(merged, override)
    config, problems = check(Config, merged)
    if config is not None:
        return config
    blamed = origins(Config, raw, overrides, problems, apply_override) if overrides else {}
    raise ConfigError("; ".join(f"{blamed.get(key, source)}: {text}" for key, text in problems.items()))


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
