"""`tunewise runs list|show|compare`: the run store as console tables."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunewise.core import format as fmt
from tunewise.track.shapes import eval_summary
from tunewise.track.store import RunInfo, display_name, flatten, read_json, read_metrics, read_yaml, run_info, sync


def list_runs(console: Console, workspace: Path) -> list[tuple[Path, RunInfo]]:
    runs = sync(workspace, warn=lambda message: console.print(f"[yellow]warning: {escape(message)}[/]"))
    table = Table(title=f"Runs in {_text(str(workspace))} ({len(runs)})")
    table.add_column("name", no_wrap=True)  # names are what users copy into `runs show`
    for column in ("task", "status", "best metric", "best val", "duration", "started"):
        table.add_column(column, justify="right" if column in ("best metric", "best val", "duration") else "left")
    for path, info in runs:
        table.add_row(
            _text(display_name(workspace, path)),
            _text(info.task or ""),
            _status(info.shown_status),
            _metric(info.primary_metric, info.best_metric),
            _metric(info.validation_metric, info.best_validation),
            fmt.duration(info.duration, missing=""),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(info.started)),
        )
    console.print(table)
    return runs


def show_run(console: Console, run: Path) -> None:
    """Everything the run's files tell; a damaged file is named and skipped, the rest is still shown."""
    info = run_info(run)
    console.print(f"[bold]{_text(run.name)}[/]  {_text(str(run))}")
    if info is not None:
        console.print(f"status {_status(info.shown_status)}, duration {fmt.duration(info.duration, missing='-')}")
        if info.error:
            console.print(f"[red]{_text(info.error)}[/]")
    evaluation = eval_summary(read_json(run / "eval.json"))
    metric, models = evaluation.get("primary_metric"), _dict(evaluation.get("models"))
    if isinstance(metric, str) and models:
        table = Table(
            title=f"{_text(str(evaluation.get('task')))} on {_text(str(evaluation.get('n_examples')))} "
            f"{_text(str(evaluation.get('split')))} examples"
        )
        table.add_column("model · prompt")
        table.add_column(_text(metric), justify="right")
        for cell, metrics in models.items():
            table.add_row(_text(str(cell)), _cell(_dict(metrics).get(metric)))
        console.print(table)
        for name, diff in _dict(evaluation.get("differences")).items():
            figures = [_dict(diff).get(k) for k in ("delta", "ci_low", "ci_high", "p_value")]
            if all(fmt.is_number(f) for f in figures):
                delta, low, high, p_value = figures
                p = fmt.format_p(p_value, _dict(diff).get("resamples"))
                console.print(
                    f"Δ {_text(str(name))} (fine-tuned − base) {fmt.signed(delta)}, "
                    f"95% CI [{fmt.signed(low)}, {fmt.signed(high)}], {p}"
                )
    elif (run / "eval.json").exists():
        console.print("[yellow]eval.json is damaged or not a tunewise evaluation; not shown[/]")
    end = _train_end(run)
    if end:
        console.print(
            f"training: {_text(str(end.get('step')))} steps, best step {_text(str(end.get('best_step')))} "
            f"({_text(str(end.get('best_metric')))}), stopped early: {_text(str(end.get('stopped_early')))}"
        )
    environment = _json(run / "env.json")
    if environment:
        libraries = ", ".join(f"{k} {v}" for k, v in _dict(environment.get("libraries")).items() if v)
        console.print(
            _text(f"environment: python {environment.get('python')}, {libraries}; seed {environment.get('seed')}")
        )
        for split, digest in _dict(environment.get("data")).items():
            digest = _dict(digest)
            sha = digest.get("sha256") if isinstance(digest.get("sha256"), str) else "missing"
            console.print(_text(f"  {split}: {digest.get('path')} sha256 {sha[:16]}"))


def compare_runs(console: Console, runs: list[Path]) -> dict[str, Any]:
    """A metric table across runs and the config keys whose values differ."""
    names = [_text(r.name) for r in runs]
    rows: dict[str, list[str]] = {}
    for index, run in enumerate(runs):
        evaluation = eval_summary(read_json(run / "eval.json"))
        metric = evaluation.get("primary_metric")  # a string or None
        for cell, metrics in _dict(evaluation.get("models")).items():
            rows.setdefault(f"{metric} · {cell}", [""] * len(runs))[index] = _cell(_dict(metrics).get(metric))
        end = _train_end(run) or {}
        if fmt.is_number(end.get("best_metric")):
            rows.setdefault("best validation metric", [""] * len(runs))[index] = fmt.metric(end["best_metric"])
        if end:
            rows.setdefault("training steps", [""] * len(runs))[index] = _text(str(end.get("step")))
        info = run_info(run)
        rows.setdefault("duration", [""] * len(runs))[index] = fmt.duration(info.duration if info else None, missing="")
    table = Table(title="Metrics")
    table.add_column("")
    for name in names:
        table.add_column(name, justify="right")
    for label, values in rows.items():
        table.add_row(_text(label), *values)
    console.print(table)

    diff = config_diff(runs)
    diff_table = Table(title=f"Config differences ({len(diff)} keys)")
    diff_table.add_column("key")
    for name in names:
        diff_table.add_column(name)
    for key, values in diff.items():
        diff_table.add_row(_text(key), *[_text(json.dumps(v, ensure_ascii=False, default=str)) for v in values])
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


def _cell(value: Any) -> str:
    """A metric in a console table: empty where the run has none."""
    return fmt.metric(value, missing="")


def _dict(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _json(path: Path) -> dict[str, Any]:
    return _dict(read_json(path))


def _text(value: str) -> str:
    """Text from run files, safe for the terminal: Rich markup escaped, control characters (a planted escape
    sequence would rewrite the screen) shown as escapes instead of sent."""
    if not value.isprintable():
        value = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in value)
    return escape(value)


def _metric(name: str | None, value: float | None) -> str:
    return "" if value is None else _text(f"{name.removeprefix('eval_') if name else ''} {fmt.metric(value)}")


def _status(status: str) -> str:
    colour = {"completed": "green", "failed": "red", "crashed": "red", "damaged": "red", "running": "yellow"}
    return f"[{colour.get(status, 'white')}]{_text(status)}[/]"
