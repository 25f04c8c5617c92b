"""`tunewise export`: a finished run shipped as merged safetensors, GGUF + Ollama Modelfile and/or the adapter,
built in a staging directory and published whole, with every artifact's fidelity measured and written to
export.json."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from tunewise.config import ExportConfig
from tunewise.core.safeio import save_dir_atomically, writing
from tunewise.errors import ExportError
from tunewise.export.card import write_model_card
from tunewise.export.checks import Stopwatch
from tunewise.export.gguf_export import check_gguf_support, write_gguf
from tunewise.export.merge import load_adapted, merge_and_save, save_merged, stop_token_ids
from tunewise.export.modelfile import build_modelfile
from tunewise.export.report import print_checks
from tunewise.export.run_source import (
    ExportSource,
    check_mergeable,
    evaluated_data,
    read_run_source,
    recorded_predictions,
)
from tunewise.export.verify import (
    Measuring,
    check_adapter_copy,
    check_gguf,
    check_merged,
    check_modelfile,
    reference_run,
)

EXPORT_JSON = "export.json"


@dataclass
class ExportResult:
    """Where the export was published, each artifact's path, and export.json's content."""

    out_dir: Path
    artifacts: dict[str, Path]
    report: dict[str, Any] = field(default_factory=dict)


def export_run(
    run_dir: Path, settings: ExportConfig, console: Console, *, out: Path | None = None, overwrite: bool = False
) -> ExportResult:
    """Read and check the run, then build every requested artifact in a staging directory beside `out` (default:
    RUN_DIR/export) and rename it into place: the export directory appears whole or not at all."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the export prints its own progress; per-shard bars are noise
    source = read_run_source(run_dir)
    if settings.formats != ["adapter"]:
        check_mergeable(source)
    out_dir = out or run_dir / "export"
    _check_target(out_dir, run_dir, overwrite)
    result = ExportResult(out_dir, {})

    def build(staged: Path) -> None:
        result.report = _build(source, settings, staged, console)
        result.artifacts = {name: out_dir / rel for name, rel in result.report["artifacts"].items()}

    with writing(out_dir, hint="free some space (or pass --out on another disk) and export again"):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        save_dir_atomically(out_dir, build)
    console.print(f"export: {escape(str(out_dir))} ({', '.join(result.artifacts)})")
    return result


def _check_target(out_dir: Path, run_dir: Path, overwrite: bool) -> None:
    """--overwrite replaces an earlier export (a directory holding export.json) or an empty directory, nothing else:
    never the run, a folder holding it, or a folder of the user's that happens to be named."""
    target, run = out_dir.resolve(), run_dir.resolve()
    if target == run or target in run.parents:
        raise ExportError(f"--out {out_dir} is the run directory or holds it; pass --out a new directory")
    if not os.path.lexists(out_dir):
        return
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a directory; pass --out another directory")
    if not overwrite:
        raise ExportError(f"{out_dir} already exists; pass --overwrite to replace it, or --out another directory")
    if not (out_dir / EXPORT_JSON).is_file() and any(out_dir.iterdir()):
        raise ExportError(
            f"{out_dir} is not an earlier export (no {EXPORT_JSON}) and not empty; --overwrite replaces only an "
            "export: pass --out a new directory"
        )


def _build(source: ExportSource, settings: ExportConfig, staged: Path, console: Console) -> dict[str, Any]:
    config = source.config
    data = evaluated_data(source, console)
    with console.status(f"loading {escape(config.model.name)} in float32 with the run's adapter"):
        adapted = load_adapted(config, source.adapter_dir, source.adapter_settings, data.splits)
    if "gguf" in settings.formats:
        check_gguf_support(adapted.model.config.to_dict())  # before minutes of scoring, not after
    stops = stop_token_ids(adapted.renderer, adapted.tokenizer)
    recorded = recorded_predictions(source, data)
    reference = reference_run(adapted, data, config, settings.probe_prompts, stops, recorded, console)
    artifacts: dict[str, str] = {}
    checks = []
    if "adapter" in settings.formats:
        checks.append(check_adapter_copy(source.adapter_dir, adapted.tokenizer, staged / "adapter"))
        artifacts["adapter"] = "adapter"
    timings: dict[str, float] = {}
    if {"merged", "gguf"} & set(settings.formats):
        merged_dir = staged / "merged"
        generation, timings["merge_and_save_s"] = _timed(lambda: merge_and_save(adapted, merged_dir, settings.dtype))
        full_precision = merged_dir  # the GGUF is written from float32 weights, never from a cast copy
        if "gguf" in settings.formats and settings.dtype != "float32":
            full_precision = staged / ".merged-float32"  # hidden, removed before the export is published
            save_merged(adapted, full_precision, "float32", generation)
        adapted.model = None  # the merged copy is re-read from disk below: the artifact, not the object
        measuring = Measuring(reference, data, adapted.renderer, config.eval.batch_size, console)
        merged_check, merged_logits = check_merged(merged_dir, settings.dtype, measuring)
        checks.append(merged_check)
        if settings.dtype != "float32":  # the GGUF then answers to base + adapter, not to a rounded copy
            merged_logits = reference.logits
        if "gguf" in settings.formats:
            gguf_file = staged / f"{_stem(config.model.name)}.{settings.gguf_type}.gguf"
            summary, timings["gguf_write_s"] = _timed(
                lambda: write_gguf(
                    full_precision,
                    gguf_file,
                    tensor_type=settings.gguf_type,
                    source_gguf=adapted.source_gguf,
                    eos_token_id=stops[0],
                    name=f"{config.model.name} + {source.run_dir.name}",
                )
            )
            artifacts["gguf"] = gguf_file.name
            against = "merged" if settings.dtype == "float32" else "base + adapter"
            checks.append(check_gguf(gguf_file, merged_logits, measuring, against))
            if full_precision != merged_dir:
                shutil.rmtree(full_precision)
            modelfile = build_modelfile(adapted.renderer, gguf_file.name)
            (staged / "Modelfile").write_text(modelfile.text, encoding="utf-8")
            artifacts["modelfile"] = "Modelfile"
            modelfile_check = check_modelfile(modelfile, adapted.renderer, adapted.tokenizer, data.records)
        if "merged" in settings.formats:
            artifacts["merged"] = "merged"
        else:
            shutil.rmtree(merged_dir)  # only the GGUF was asked for
    report: dict[str, Any] = {
        "run": str(source.run_dir),
        "base_model": config.model.name,
        "formats": settings.formats,
        "artifacts": artifacts,
        "task": data.task.name,
        "primary_metric": data.task.primary_metric,
        "split": config.eval.split,
        "n_examples": len(data.records),
        "probe_prompts": len(reference.sequences),
        "adapter": {
            "metrics": reference.output.metrics,
            "predictions": "the run's predictions.jsonl" if reference.recorded else "scored by the export",
        },
        "checks": [c.to_json() for c in checks],
        "timings": timings,
        "stop_token_ids": stops,
    }
    if "gguf" in settings.formats:
        report["gguf"] = {**_plain(summary), "path": gguf_file.name}  # relative: the export directory moves
        report["modelfile"] = modelfile_check
        report["generation_config"] = generation
    write_model_card(staged, source, data, report, adapted.renderer)
    if "merged" in artifacts:
        shutil.copy2(staged / "README.md", staged / "merged" / "README.md")
    (staged / EXPORT_JSON).write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    _readable_like_other_files(staged)
    print_checks(console, checks, data.task.primary_metric, report)
    return report


def _readable_like_other_files(root: Path) -> None:
    """Some writers (safetensors) create their files 0600; an export is shared like any file the user writes."""
    umask = os.umask(0)
    os.umask(umask)
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o666 & ~umask)


def _timed(action: Callable[[], Any]) -> tuple[Any, float]:
    clock = Stopwatch()
    value = action()
    return value, round(clock.seconds, 2)


def _stem(model_name: str) -> str:
    """A file-name-safe stem for the GGUF from model.name: its last path part without a .gguf suffix."""
    import re

    stem = Path(model_name).name.removesuffix(".gguf") or "model"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem)[:80].strip("-.") or "model"


def _plain(value: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(value).items()} if is_dataclass(value) else value
