"""`tunewise predict`: model outputs for an input file, as JSONL (batched), base model or an adapter."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tunewise.config import Config
from tunewise.data.jsonl import write_jsonl
from tunewise.data.prompt import PromptRenderer
from tunewise.data.splits import load_file
from tunewise.errors import ConfigError
from tunewise.evaluate.generate import generate_answers
from tunewise.evaluate.tasks import ClassificationTask
from tunewise.track.safeio import writing

FULL_DISK_HINT = "free some space (or pass --output on another disk) and run predict again"


def predict(config: Config, input_path: Path, output_path: Path, adapter: Path | None, console: Console) -> Path:
    from tunewise.models import load_model
    from tunewise.pipeline import attach_adapter

    check_output(output_path)  # before the model loads and the predictions are computed, not after
    data = config.data.model_copy(update={"on_error": "skip"})
    records, rejects, total = load_file(input_path, data, need_answer=False)
    if config.data.kind == "classification" and not config.data.labels:
        raise ConfigError("predict for classification needs the label set: set data.labels in the config")
    with console.status(f"loading model {escape(str(config.model.name))}"):
        loaded = load_model(config.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    if adapter is not None:
        model = attach_adapter(model, adapter)
    labels = list(config.data.labels or [])
    renderer = PromptRenderer(config.prompt, config.data.kind, tokenizer, labels)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        if config.data.kind == "classification":
            task = ClassificationTask(labels)
            scores = task.score(model, tokenizer, renderer, records, config.eval.batch_size, progress, "predicting")
            outputs = [
                {
                    "prediction": labels[int(row.argmax())],
                    "logprobs": {k: round(float(v), 4) for k, v in zip(labels, row, strict=True)},
                }
                for row in scores
            ]
        else:
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
            outputs = [{"prediction": text} for text in texts]
    rows = ({"source": r.where, **r.to_row(), **output} for r, output in zip(records, outputs, strict=True))
    _write_whole(output_path, rows)
    if rejects:
        rejects_path = output_path.with_suffix(".rejects.jsonl")
        _write_whole(rejects_path, (reject.to_json() for reject in rejects))
        console.print(
            f"[yellow]{len(rejects)} of {total} input rows rejected; reasons in {escape(str(rejects_path))}[/]"
        )
    console.print(f"{len(records)} predictions -> {escape(str(output_path))}")
    return output_path


def check_output(path: Path) -> None:
    """The output must be a file that can be created: not a directory, under a directory (made if missing)."""
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
