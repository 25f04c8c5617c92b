"""What an export starts from: a finished run directory, its config, its adapter and the data it was evaluated on,
each checked before any weights load, so a bad run directory is one line, not a half-written export."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from tunewise.config import Config, load_config
from tunewise.core.hashing import sha256_file
from tunewise.core.safeio import Unreadable, read_json_file
from tunewise.data.records import Record
from tunewise.data.splits import DataSplits, load_splits
from tunewise.errors import ExportError, TunewiseError
from tunewise.evaluate.tasks import EvalOutput, EvalTask, task_for
from tunewise.pipeline.prepare import normalize_eval_inputs
from tunewise.track.store import read_json

ADAPTER = "adapter"
# PEFT adapter types whose update is a weight delta that merge_and_unload folds into the base weights.
MERGEABLE = {"LORA", "IA3", "LOHA", "LOKR", "OFT", "BOFT", "VERA"}
MAX_ADAPTER_CONFIG = 1 << 20


@dataclass
class ExportSource:
    """A run directory as an export reads it: the config it ran with, its adapter and what it recorded."""

    run_dir: Path
    config: Config
    adapter_dir: Path
    adapter_settings: dict[str, Any]
    evaluation: dict[str, Any] | None  # eval.json, when the run evaluated a test split
    environment: dict[str, Any] | None  # env.json: library versions and the SHA-256 of the data files


@dataclass
class EvaluatedData:
    """The split the run was scored on, rebuilt exactly (same files, seed and normalization), with its task."""

    splits: DataSplits
    records: list[Record]
    task: EvalTask
    files: dict[str, dict[str, Any]]  # split -> {path, sha256, bytes}: for the model card


def read_run_source(run_dir: Path) -> ExportSource:
    """The run's config and adapter; a directory that is not a trained run is an `ExportError` saying why."""
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: no such run directory; pass a directory under output.dir (runs/...)")
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise ExportError(f"{run_dir}: no config.yaml; is it a tunewise run directory (runs/<time>-<name>)?")
    try:
        config = load_config(config_file)
    except TunewiseError as exc:
        raise ExportError(f"{config_file}: {exc}") from None
    adapter_dir = run_dir / ADAPTER
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ExportError(
            f"{run_dir}: no trained adapter (adapter/adapter_config.json); the run did not finish training. "
            "Export a run of `tunewise run` or `tunewise train` that completed"
        )
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        raise ExportError(f"{adapter_dir}: no adapter_model.safetensors (only safetensors weights are exported)")
    settings = _adapter_settings(adapter_dir)
    return ExportSource(
        run_dir,
        config,
        adapter_dir,
        settings,
        json_object(read_json(run_dir / "eval.json")),
        json_object(read_json(run_dir / "env.json")),
    )


def check_mergeable(source: ExportSource) -> None:
    """Merged weights and GGUF need an adapter whose update folds into the weights (LoRA, DoRA, IA3, ...);
    prompt or prefix tuning adds virtual tokens that no merged checkpoint or GGUF can carry."""
    kind = str(source.adapter_settings.get("peft_type"))
    if kind not in MERGEABLE:
        raise ExportError(
            f"{source.adapter_dir}: a {kind[:40]!r} adapter cannot be merged into the model weights, so it cannot be "
            f"exported merged or as GGUF (mergeable: {', '.join(sorted(MERGEABLE))}); use --format adapter"
        )


def evaluated_data(source: ExportSource, console: Console) -> EvaluatedData:
    """The evaluated split rebuilt from the files the run hashed. A file that changed since is an error: its
    records would not be the ones the run was scored on, so a comparison with them would prove nothing."""
    config = source.config
    files = _recorded_files(source)
    for name, entry in files.items():
        if name.startswith("curated ") and (entry.get("missing") or not entry.get("path")):
            raise ExportError(
                f"{source.run_dir / 'env.json'}: the {name} file of the run is not recorded, so the evaluated "
                "split cannot be rebuilt; export a run whose env.json is intact"
            )
        _check_unchanged(name, entry)
    curated = {
        name.removeprefix("curated "): Path(str(entry["path"]))
        for name, entry in files.items()
        if name.startswith("curated ")
    }
    try:
        splits = load_splits(config.data, config.train.seed, curated=curated or None)
    except TunewiseError as exc:
        raise ExportError(f"the run's data cannot be read again: {exc}") from None
    normalize_eval_inputs(config, splits, console)
    task = _export_task(config, splits.labels)
    records = splits.test if config.eval.split == "test" else splits.val
    if not records:
        raise ExportError(f"the run's {config.eval.split} split is empty: there is nothing to check the export on")
    return EvaluatedData(splits, records, task, files)


MAX_PREDICTIONS_BYTES = 1 << 30  # predictions.jsonl of millions of records; beyond that, score again


def recorded_predictions(source: ExportSource, data: EvaluatedData) -> EvalOutput | None:
    """The fine-tuned model's predictions as the run recorded them (predictions.jsonl, eval.json), when they cover
    exactly the evaluated records in order: the export is then compared with the very predictions the run's
    figures came from, and the adapter need not be scored again. None when anything does not line up."""
    path = source.run_dir / "predictions.jsonl"
    metrics = json_object(((source.evaluation or {}).get("models") or {}).get("fine-tuned"))
    if metrics is None or not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_PREDICTIONS_BYTES:
        return None
    rows = []
    try:
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                row = json.loads(line)
                if isinstance(row, dict) and row.get("model") == "fine-tuned":
                    rows.append({key: value for key, value in row.items() if key != "model"})
    except (OSError, ValueError, RecursionError):
        return None
    if source.config.eval_task == "code" or [row.get("source") for row in rows] != [r.where for r in data.records]:
        return None  # a code run recorded pass@k, not the text comparison its export makes
    try:  # the rows must hold what the task compares (gold, pred, per-example scores), as the run wrote them
        data.task.compare(rows, rows)
        hash(tuple(str(row["pred"]) for row in rows))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    if data.task.name == "classification" and [row.get("gold") for row in rows] != [
        str(r.fields["label"]) for r in data.records
    ]:
        return None
    return EvalOutput(metrics, rows)


def _recorded_files(source: ExportSource) -> dict[str, dict[str, Any]]:
    """env.json's data entries, which must name the files the config reads: they prove the data is unchanged."""
    env_file = source.run_dir / "env.json"
    data = (source.environment or {}).get("data")
    if not isinstance(data, dict) or not all(isinstance(e, dict) for e in data.values()):
        raise ExportError(
            f"{env_file}: missing or damaged (no data hashes), so the export cannot prove it is checked on the "
            "data the run evaluated; export a run whose env.json is intact"
        )
    config = source.config.data
    for split in ("train", "val", "test"):
        given, entry = getattr(config, split), data.get(split)
        if given is not None and (entry is None or Path(str(entry.get("path"))).resolve() != Path(given).resolve()):
            raise ExportError(
                f"{env_file}: the {split} file it hashed is not {given}, the one config.yaml reads; the run "
                "directory has been edited: export a run as tunewise wrote it"
            )
    return data


def _export_task(config: Any, labels: list[str]) -> EvalTask:
    """The run's task, except code: pass@k runs model-written programs, which an export never does (it has no
    --allow-code-execution); a code run's export is compared on its generated text (chrF) instead."""
    if config.eval_task != "code":
        return task_for(config.data.kind, labels, config.eval, config.train.max_length)
    from tunewise.evaluate.tasks.generative import GenerativeTask

    return GenerativeTask(
        "generation", config.eval.max_new_tokens, list(config.eval.stop), config.train.max_length, False
    )


def _check_unchanged(name: str, entry: dict[str, Any]) -> None:
    path = Path(str(entry.get("path")))
    expected = entry.get("sha256")
    if entry.get("missing") or not expected:
        return  # the run had no such file either
    if not path.is_file():
        raise ExportError(
            f"data file {path} ({name}) is gone; the export is checked on the split the run evaluated: restore it"
        )
    if sha256_file(path) != expected:
        raise ExportError(
            f"data file {path} ({name}) changed since the run (SHA-256 differs from env.json); the export is "
            "checked on the split the run evaluated: restore the file as it was"
        )


def _adapter_settings(adapter_dir: Path) -> dict[str, Any]:
    path = adapter_dir / "adapter_config.json"
    try:
        settings = read_json_file(path, MAX_ADAPTER_CONFIG)
    except Unreadable as exc:
        raise ExportError(f"{path}: {exc}") from None
    if not isinstance(settings, dict):
        raise ExportError(f"{path}: not a JSON object; is it a PEFT adapter?")
    return settings


def json_object(value: Any) -> dict[str, Any] | None:
    """A JSON value from a run file when it is an object, else None (run files are checked, never trusted)."""
    return value if isinstance(value, dict) else None
