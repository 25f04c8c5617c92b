"""`tunewise runs list|show|compare`: the run store as console tables."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunewise.track.store import RunInfo, display_name, flatten, read_info, read_json, read_metrics, read_yaml, sync


def list_runs(console: Console, workspace: Path) -> list[tuple[Path, RunInfo]]:
    runs = sync(workspace)
    table = Table(title=f"Runs in {workspace} ({len(runs)})")
    table.add_column("name", no_wrap=True)  # names are what users copy into `runs show`
    for column in ("task", "status", "best metric", "best val", "duration", "started"):
        table.add_column(column, justify="right" if column in ("best metric", "best val", "duration") else "left")
    for path, info in runs:
        table.add_row(
            escape(display_name(workspace, path)),
            info.task or "",
            _status(info.shown_status),
            _metric(info.primary_metric, info.best_metric),
            _metric(info.validation_metric, info.best_validation),
            _duration(info.duration),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(info.started)),
        )
    console.print(table)
    return runs


def show_run(console: Console, run: Path) -> None:
    info = read_info(run)
    console.print(f"[bold]{escape(run.name)}[/]  {escape(str(run))}")
    if info is not None:
        console.print(f"status {_status(info.shown_status)}, duration {_duration(info.duration)}")
        if info.error:
            console.print(f"[red]{escape(info.error)}[/]")
    evaluation = _json(run / "eval.json")
    if evaluation and {"primary_metric", "models", "task"} <= set(evaluation):
        metric = evaluation["primary_metric"]
        table = Table(
            title=f"{evaluation['task']} on {evaluation.get('n_examples')} {evaluation.get('split')} examples"
        )
        table.add_column("model · prompt")
        table.add_column(metric, justify="right")
        for cell, metrics in evaluation["models"].items():
            table.add_row(escape(cell), _number(metrics.get(metric)))
        console.print(table)
        for name, diff in evaluation.get("differences", {}).items():
            console.print(
                f"Δ {name} (fine-tuned − base) {diff['delta']:+.4f}, 95% CI "
                f"[{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}], p={diff['p_value']:.3f}"
            )
    end = _train_end(run)
    if end:
        console.print(
            f"training: {end['step']} steps, best step {end['best_step']} ({end.get('best_metric')}), "
            f"stopped early: {end['stopped_early']}"
        )
    environment = _json(run / "env.json")
    if environment:
        libraries = ", ".join(f"{k} {v}" for k, v in environment["libraries"].items() if v)
        console.print(f"environment: python {environment['python']}, {libraries}; seed {environment['seed']}")
        for split, digest in environment["data"].items():
            console.print(f"  {split}: {digest['path']} sha256 {digest.get('sha256', 'missing')[:16]}")


def compare_runs(console: Console, runs: list[Path]) -> dict[str, Any]:
    """A metric table across runs and the config keys whose values differ."""
    names = [r.name for r in runs]
    rows: dict[str, list[str]] = {}
    for index, run in enumerate(runs):
        evaluation = _json(run / "eval.json") or {}
        metric = evaluation.get("primary_metric")
        for cell, metrics in evaluation.get("models", {}).items():
            rows.setdefault(f"{metric} · {cell}", [""] * len(runs))[index] = _number(metrics.get(metric))
        end = _train_end(run) or {}
        if end.get("best_metric") is not None:
            rows.setdefault("best validation metric", [""] * len(runs))[index] = f"{end['best_metric']:.4f}"
        if end:
            rows.setdefault("training steps", [""] * len(runs))[index] = str(end["step"])
        info = read_info(run)
        rows.setdefault("duration", [""] * len(runs))[index] = _duration(info.duration if info else None)
    table = Table(title="Metrics")
    table.add_column("")
    for name in names:
        table.add_column(name, justify="right")
    for label, values in rows.items():
        table.add_row(escape(label), *values)
    console.print(table)

    diff = config_diff(runs)
    diff_table = Table(title=f"Config differences ({len(diff)} keys)")
    diff_table.add_column("key")
    for name in names:
        diff_table.add_column(name)
    for key, values in diff.items():
        diff_table.add_row(escape(key), *[escape(json.dumps(v, ensure_ascii=False)) for v in values])
    console.print(diff_table)
    return {"metrics": rows, "config_diff": diff}


def config_diff(runs: list[Path]) -> dict[str, list[Any]]:
    configs = [flatten(read_yaml(r / "config.yaml")) for r in runs]
    keys = sorted({k for c in configs for k in c})
    missing = object()
    diff = {}
    for key in keys:
        values = [c.get(key, missing) for c in configs]
        if any(v != values[0] for v in values[1:]):
            diff[key] = [None if v is missing else v for v in values]
    return diff


def _train_end(run: Path) -> dict[str, Any] | None:
    return next((m for m in reversed(read_metrics(run / "metrics.jsonl")) if m.get("event") == "train_end"), None)


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else ""


def _json(path: Path) -> dict[str, Any] | None:
    loaded = read_json(path)
    return loaded if isinstance(loaded, dict) else None


def _metric(name: str | None, value: float | None) -> str:
    return "" if value is None else f"{name.removeprefix('eval_') if name else ''} {value:.4f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _status(status: str) -> str:
    colour = {"completed": "green", "failed": "red", "crashed": "red", "running": "yellow"}.get(status, "white")
    return f"[{colour}]{status}[/]"
