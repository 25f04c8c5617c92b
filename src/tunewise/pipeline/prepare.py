"""The first stages of a run: the data it reads (checked, normalized, with its task) and the model it loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from tunewise.config import Config
from tunewise.data.normalize import inference_normalization
from tunewise.data.prompt import PromptRenderer
from tunewise.data.records import Record
from tunewise.data.splits import DataSplits, load_splits
from tunewise.data.variants import DEFAULT_PROMPT, prompt_variants
from tunewise.evaluate.tasks import EvalTask, task_for
from tunewise.models import load_model
from tunewise.models.adapters import attach_adapter
from tunewise.pipeline.summary import print_data_summary
from tunewise.track import RunDir


@dataclass
class PreparedData:
    """The run's splits as the model sees them, the task that scores them and the split it is scored on."""

    splits: DataSplits
    task: EvalTask
    eval_records: list[Record]
    normalization: dict[str, Any] | None  # what inference normalization changed, for eval.json


@dataclass
class LoadedModel:
    """The model (with any adapters attached under their cell names), its tokenizer and one prompt per variant."""

    model: Any
    tokenizer: Any
    renderers: dict[str, PromptRenderer]
    adapters: dict[str, Path]

    @property
    def renderer(self) -> PromptRenderer:
        """The prompt training uses."""
        return self.renderers[DEFAULT_PROMPT]


def prepare_data(
    config: Config, run_dir: RunDir, console: Console, curated: dict[str, Path] | None, *, resuming: bool = False
) -> PreparedData:
    """Read and check the splits before the model loads, so bad data fails in a second. If no usable records are
    left, the rejects are written to the run directory first, and the error says where."""
    if resuming:
        (run_dir.path / "rejects.jsonl").unlink(missing_ok=True)  # written again below, not appended twice
    splits = load_splits(config.data, config.train.seed, save_rejects=run_dir.write_rejects, curated=curated)
    rejects_path = run_dir.write_rejects(splits.rejects)
    print_data_summary(console, splits, rejects_path, config.data)
    normalization = normalize_eval_inputs(config, splits, console)
    task = task_for(config.data.kind, splits.labels, config.eval, config.train.max_length)
    eval_records = splits.test if config.eval.split == "test" else splits.val
    return PreparedData(splits, task, eval_records, normalization)


def load_model_for_run(
    config: Config, splits: DataSplits, console: Console, adapters: list[Path] | None = None
) -> LoadedModel:
    """The base model, each adapter attached by name (see `adapter_names`), and the prompt variants."""
    with console.status(f"loading model {escape(str(config.model.name))} (the first GGUF load converts it, ~25 s)"):
        loaded = load_model(config.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    cells = adapter_names(adapters or [])
    for name, path in cells.items():
        model = attach_adapter(model, path, name)
    return LoadedModel(model, tokenizer, prompt_variants(config, tokenizer, splits), cells)


def normalize_eval_inputs(config: Config, splits: DataSplits, console: Console) -> dict[str, Any] | None:
    """The text normalization curation applied to the training text, applied to val and test too (the curated
    records are unchanged by it: it is idempotent), so the model is scored on the text distribution it was
    trained on. Returns what was applied and how many records it changed, for eval.json."""
    normalization = inference_normalization(config.curate.steps if config.curate else None)
    if normalization is None:
        return None
    changed = {}
    for split in ("val", "test"):
        records = getattr(splits, split)
        normalized = [normalization.apply(record) for record in records]
        changed[split] = sum(new is not old for new, old in zip(normalized, records, strict=True))
        setattr(splits, split, normalized)
    console.print(
        "evaluation inputs normalized as curation normalized the training text: "
        + ", ".join(f"{n} of {len(getattr(splits, split))} {split} records changed" for split, n in changed.items())
    )
    return {**normalization.to_json(), "changed": changed}


def adapter_names(adapters: list[Path]) -> dict[str, Path]:
    """Matrix cell names: one adapter is "fine-tuned"; several are named by their run directory."""
    if len(adapters) == 1:
        return {"fine-tuned": adapters[0]}
    names: dict[str, Path] = {}
    for path in adapters:
        stem = path.resolve().parent.name if path.name == "adapter" else path.name
        name, n = stem, 2
        while name in names:
            name, n = f"{stem}-{n}", n + 1
        names[name] = path
    return names


def with_curated_data(config: Config, splits: dict[str, Path]) -> Config:
    """The same config, reading the curated splits (canonical field names) instead of the raw files."""
    data = config.data.model_copy(
        update={
            "train": splits["train"],
            "val": splits.get("val"),
            "test": splits.get("test"),
            "fields": {},
            "format": "jsonl",
            "encoding": "utf-8",
        }
    )
    return config.model_copy(update={"data": data, "curate": None})
