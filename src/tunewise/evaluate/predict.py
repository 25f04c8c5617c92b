"""`tunewise predict`: model outputs for an input file, as JSONL (batched), base model or an adapter."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from tunewise.config import Config
from tunewise.core.progress import progress_bar
from tunewise.core.safeio import writing
from tunewise.data.jsonl import write_jsonl
from tunewise.data.normalize import inference_normalization
from tunewise.data.prompt import PromptRenderer
from tunewise.data.records import Record
from tunewise.data.splits import load_file
from tunewise.errors import ConfigError
from tunewise.evaluate.generate import generate_answers
from tunewise.evaluate.tasks import ClassificationTask

FULL_DISK_HINT = "free some space (or pass --output on another disk) and run predict again"


def default_output(input_path: Path) -> Path:
    """Where predictions go without --output: `<input stem>.predictions.jsonl` beside the input
    (new.jsonl -> new.predictions.jsonl)."""
    return input_path.with_name(f"{input_path.stem}.predictions.jsonl")


def rejects_output(output_path: Path) -> Path:
    """Where unreadable input rows go: `<output stem>.rejects.jsonl` beside the predictions."""
    return output_path.with_suffix(".rejects.jsonl")


def predict(config: Config, input_path: Path, output_path: Path | None, adapter: Path | None, console: Console) -> Path:
    """One JSON line per readable input row: the row, its `source` and the model's `pred` (as in a run's
    predictions.jsonl), with `logprobs` of every label for classification. When the config's curation normalizes
    text, the model reads each row's text normalized the same way. Written to `output_path`
    (default `default_output`); returns that path."""
    output_path = output_path or default_output(input_path)
    check_output(output_path, input_path)  # before the model loads and the predictions are computed, not after
    if config.data.kind == "classification" and not config.data.labels:
        raise ConfigError("predict for classification needs the label set: set data.labels in the config")
    data = config.data.model_copy(update={"on_error": "skip"})
    records, rejects, total = load_file(input_path, data, need_answer=False)
    # The model reads text normalized as curation normalized its training text; the rows are written as given.
    normalization = inference_normalization(config.curate.steps if config.curate else None)
    model_inputs = [normalization.apply(r) for r in records] if normalization else records
    outputs = _predictions(config, adapter, model_inputs, console)
    rows = ({"source": r.where, **r.to_row(), **output} for r, output in zip(records, outputs, strict=True))
    _write_whole(output_path, rows)
    if rejects:
        _write_whole(rejects_output(output_path), (reject.to_json() for reject in rejects))
        console.print(
            f"[yellow]{len(rejects)} of {total} input rows rejected; "
            f"reasons in {escape(str(rejects_output(output_path)))}[/]"
        )
    console.print(f"{len(records)} predictions -> {escape(str(output_path))}")
    return output_path


def _predictions(config: Config, adapter: Path | None, records: list[Record], console: Console) -> list[dict]:
    """The model's output fields for each record: `pred` (and `logprobs` for classification)."""
    from tunewise.models import load_model
    from tunewise.models.adapters import attach_adapter

    with console.status(f"loading model {escape(str(config.model.name))}"):
        loaded = load_model(config.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    if adapter is not None:
        model = attach_adapter(model, adapter)
    labels = list(config.data.labels or [])
    renderer = PromptRenderer(config.prompt, config.data.kind, tokenizer, labels)
    with progress_bar(console) as progress:
        if config.data.kind == "classification":
            task = ClassificationTask(labels)
            scores = task.score(model, tokenizer, renderer, records, config.eval.batch_size, progress, "predicting")
            return [
                {
                    "pred": labels[int(row.argmax())],
                    "logprobs": {k: round(float(v), 4) for k, v in zip(labels, row, strict=True)},
                }
                for row in scores
            ]
        texts = generate_answers(
            model,
            tokenizer,
            renderer,
            records,
            config.eval.max_new_tokens,
            config.eval.batch_size,
            config.eval.stop,
            progress=progress,
            description="predicting",
        )
        return [{"pred": text} for text in texts]


def check_output(path: Path, input_path: Path | None = None) -> None:
    """The output must be a file that can be created: not the input, not a directory, under a directory
    (made if missing)."""
    if input_path is not None and path.resolve() == input_path.resolve():
        raise ConfigError(f"predict: the output {path} is the input file; pass another --output")
    if path.is_dir():
        raise ConfigError(
            f"predict: the output {path} is a directory; "
            f"pass --output with a file name, e.g. {path / 'predictions.jsonl'}"
        )
    existing = next((p for p in path.parents if p.exists() or p.is_symlink()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"predict: cannot write {path}: {existing} is not a directory; pass another --output")
    with writing(path.parent, FULL_DISK_HINT):
        path.parent.mkdir(parents=True, exist_ok=True)


def _write_whole(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Written to a temporary file, then renamed: a full disk leaves the previous file (or none), never half of
    one, and fails in one line naming the file."""
    path = path.resolve() if path.is_symlink() else path  # through a symlink, as a plain open would write
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with writing(path, FULL_DISK_HINT):
            write_jsonl(tmp, rows)
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
