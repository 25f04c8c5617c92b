"""`tunewise report`: self-contained HTML pages for a run, a sweep, or a comparison of runs.

Pages embed their figures as PNG data: URIs and render through `tunewise.core.html` (sandboxed, autoescaped,
under a Content-Security-Policy that allows no script and no fetch). Every input is optional: a crashed run with
only a half-written metrics.jsonl still gets a page with whatever it has.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunewise.config import greater_is_better
from tunewise.core import format as fmt
from tunewise.core.html import render_page, write_page
from tunewise.core.plots import data_uri
from tunewise.core.safeio import writing
from tunewise.errors import TunewiseError
from tunewise.track import charts, shapes
from tunewise.track.run_report_templates import TEMPLATES
from tunewise.track.shapes import Series, as_dict, finite_number
from tunewise.track.store import flatten, read_info, read_json, read_metrics, read_yaml

FULL_DISK_HINT = "free some space (or pass --out on another disk) and run `tunewise report` again"


def render_report(targets: Path | list[Path], out: Path | None = None) -> Path:
    """One run dir -> `<run>/report.html`; one sweep dir (trials.json) -> `<sweep>/report.html`;
    several run dirs -> a comparison page (default `./comparison.html`). Figures also go to
    `<out dir>/plots/*.png`. Returns the page's path."""
    paths = [Path(targets)] if isinstance(targets, str | Path) else [Path(t) for t in targets]
    if not paths:
        raise TunewiseError("report: give a run directory, a sweep directory, or several run directories")
    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        raise TunewiseError(f"report: not a directory: {', '.join(missing)}")
    if len(paths) == 1:
        target = paths[0]
        if (target / "trials.json").is_file():
            return render_sweep(target, out or target / "report.html")
        if is_run(target):
            return render_run(load_run(target), out or target / "report.html")
        raise TunewiseError(f"{target}: no metrics.jsonl or eval.json (a run) nor trials.json (a sweep)")
    not_runs = [str(p) for p in paths if not is_run(p)]
    if not_runs:
        raise TunewiseError(f"report: to compare, give run directories; no metrics.jsonl or eval.json in {not_runs}")
    return render_comparison([load_run(p) for p in paths], out or Path("comparison.html"))


# ---- reading a run directory -------------------------------------------------------------------


@dataclass
class Run:
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    eval: dict[str, Any] = field(default_factory=dict)
    matrix: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # run.json: status, started, finished, error
    curation: dict[str, Any] | None = None
    curation_path: Path | None = None
    n_rejects: int | None = None

    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def train_end(self) -> dict[str, Any]:
        return next((m for m in reversed(self.metrics) if m.get("event") == "train_end"), {})

    @property
    def train(self) -> dict[str, Any]:
        """eval.json's training summary, else what the metrics log's train_end event says."""
        end = self.train_end
        fallback = {k: end.get(k) for k in ("best_step", "best_metric", "stopped_early") if k in end}
        if end:
            fallback["steps"] = end.get("step")
        return {**fallback, **(self.eval.get("train") or {})}

    def series(self, key: str) -> Series:
        return shapes.metric_series(self.metrics, key)


def is_run(path: Path) -> bool:
    return (path / "metrics.jsonl").is_file() or (path / "eval.json").is_file()


def load_run(path: Path) -> Run:
    config = shapes.config_sections(read_yaml(path / "config.yaml"))
    rejects = path / "rejects.jsonl"
    run = Run(
        path=path,
        config=config,
        metrics=read_metrics(path / "metrics.jsonl"),
        eval=shapes.eval_summary(read_json(path / "eval.json")),
        matrix=shapes.eval_matrix(read_json(path / "eval_matrix.json")),
        info=asdict(info) if (info := read_info(path)) is not None else {},  # damaged: status `damaged` and why
        n_rejects=sum(1 for line in rejects.read_text(errors="replace").splitlines() if line.strip())
        if rejects.is_file()
        else None,
    )
    run.curation_path = find_curation_report(path, config)
    run.curation = shapes.curation_summary(read_json(run.curation_path)) if run.curation_path else None
    return run


def find_curation_report(run_path: Path, config: dict[str, Any]) -> Path | None:
    """curation_report.json in curate.output (a run that curated), else beside the training file (a run on
    curated files). Relative paths in a run's config.yaml are relative to the directory `tunewise run` ran in,
    which is output.dir's parent as seen from the run dir."""
    curate = config.get("curate") if isinstance(config.get("curate"), dict) else {}
    output = curate.get("output")
    train = (config.get("data") or {}).get("train")
    if isinstance(output, str) and output:
        path = Path(output) / "curation_report.json"
    elif isinstance(train, str) and train:
        path = Path(train)
    else:
        return None
    bases = [Path.cwd(), run_path]
    out_dir = Path(str((config.get("output") or {}).get("dir") or "runs"))
    if not out_dir.is_absolute() and ".." not in out_dir.parts:
        base = run_path.resolve().parent
        for _ in out_dir.parts:
            base = base.parent
        bases.insert(0, base)
    for candidate in [path] if path.is_absolute() else [b / path for b in bases]:
        report = candidate.parent / "curation_report.json"
        if report.is_file():
            return report
    return None


# ---- pages -------------------------------------------------------------------------------------


def render_run(run: Run, out: Path) -> Path:
    train, val = run.series("loss"), run.series("eval_loss")
    info = run.train
    best = info.get("best_step") if finite_number(info.get("best_step")) else None
    stop = info.get("steps") if info.get("stopped_early") and finite_number(info.get("steps")) else None
    figures: list[dict[str, str]] = []
    if train or val:
        png = charts.loss_plot(train, val, best, stop)
        figures.append(_figure(out, "loss", png, "training and validation loss by step"))
    task_series = {k.removeprefix("eval_"): run.series(k) for k in shapes.task_metric_keys(run.metrics)}
    if task_series:
        png = charts.metric_plot(task_series, best, stop)
        figures.append(_figure(out, "val_metric", png, "validation task metric by step"))
    confusions = []
    for cell, metrics in (run.eval.get("models") or {}).items():
        matrix = shapes.confusion_matrix(metrics.get("confusion_matrix")) if isinstance(metrics, dict) else None
        if matrix is not None:  # n labels, n rows of n numbers; another shape is not drawn
            png = charts.confusion_plot(matrix["labels"], matrix["rows_gold_cols_pred"], cell)
            confusions.append(_figure(out, f"confusion-{_slug(cell)}", png, f"confusion matrix, {cell}"))
    cells, rows = eval_cells(run), metric_rows(run)
    context = {
        "run": run,
        "summary": run_summary(run),
        "notes": run_notes(run, train, val),
        "figures": figures,
        "confusions": confusions,
        "cells": cells,
        "metric_rows": rows,
        "p_note": p_note(cells, rows),
        "curation": run.curation,
        "curation_path": run.curation_path,
    }
    return _write(out, "run.html", context)


def run_summary(run: Run) -> list[tuple[str, str]]:
    ev, config, info, status = run.eval, run.config, run.train, run.info
    data, lora, train_cfg = (config.get(k) or {} for k in ("data", "lora", "train"))
    rows = [
        ("status", status.get("status")),
        ("task", ev.get("task") or data.get("kind")),
        ("model", ev.get("model") or (config.get("model") or {}).get("name")),
        ("training data", data.get("train")),
    ]
    if run.curation and isinstance(run.curation.get("split_sizes"), dict):
        rows.append(("curated sizes", ", ".join(f"{k} {v}" for k, v in run.curation["split_sizes"].items())))
    if ev.get("n_examples") is not None:
        rows.append(("evaluated on", f"{ev['n_examples']} {ev.get('split', '')} examples".replace("  ", " ")))
    if run.n_rejects:
        rows.append(("rejected records", f"{run.n_rejects} (rejects.jsonl)"))
    steps = info.get("steps") or max((s for s, _ in run.series("loss")), default=None)
    planned = info.get("planned_steps")
    rows.append(("training steps", f"{steps} of {planned}" if steps and planned else steps))
    if info.get("best_step") is not None:
        metric = info.get("metric") or train_cfg.get("metric") or "eval_loss"
        rows.append(("best step", f"{info['best_step']} ({metric} = {fmt.metric(info.get('best_metric'))})"))
    if "stopped_early" in info:
        rows.append(("stopped early", "yes" if info["stopped_early"] else "no"))
    runtime = next((m["train_runtime"] for m in run.metrics if finite_number(m.get("train_runtime"))), None)
    times = [m["time"] for m in run.metrics if finite_number(m.get("time"))]
    if finite_number(status.get("started")) and finite_number(status.get("finished")):
        rows.append(("run time", fmt.duration(status["finished"] - status["started"])))
    if runtime is not None:
        rows.append(("training time", fmt.duration(runtime)))
    elif len(times) > 1:
        rows.append(("training time", f"{fmt.duration(max(times) - min(times))} (from the metrics log)"))
    if lora:
        rows.append(("LoRA", f"r {lora.get('r')}, alpha {lora.get('alpha')}, dropout {lora.get('dropout')}"))
    if train_cfg:
        rows.append(("learning rate", train_cfg.get("lr")))
    if info.get("trainable_params"):
        total = fmt.count(info.get("total_params"), missing="0")
        rows.append(("trainable params", f"{fmt.count(info['trainable_params'])} of {total}"))
    return [(k, str(v)) for k, v in rows if v not in (None, "")]


def run_notes(run: Run, train: Series, val: Series) -> list[str]:
    notes = [f"The run ended with an error: {run.info['error']}"] if run.info.get("error") else []
    if run.metrics and not run.train_end and not run.eval:
        notes.append("No train_end event and no eval.json: the run crashed, was stopped, or is still running.")
    if not train and not val:
        notes.append("No training or validation loss logged (an evaluation-only run, or none logged yet).")
    warned = run.train.get("divergence_warnings_at")
    if warned and isinstance(warned, list):
        steps = ", ".join(map(str, warned))
        notes.append(f"Overfitting warning during training at step(s) {steps}.")
    return notes


def eval_cells(run: Run) -> list[dict[str, Any]]:
    """Each model·prompt cell: primary metric and its difference from the prompted base model (CI, p)
    from eval.json's `differences` or eval_matrix.json; a bare difference when neither has a CI."""
    ev, metric = run.eval, run.eval.get("primary_metric")
    models = {k: v for k, v in (ev.get("models") or {}).items() if isinstance(v, dict)}
    reference = run.matrix.get("reference") or ("base" if "base" in models else None)
    base_value = (models.get(reference) or {}).get(metric)
    cells = []
    for cell, metrics in models.items():
        value, diff = metrics.get(metric), None
        if cell == "fine-tuned" and reference == "base":
            diff = (ev.get("differences") or {}).get(metric)
        diff = diff or as_dict((run.matrix.get("cells") or {}).get(cell)).get("vs_reference")
        diff = diff if isinstance(diff, dict) else None
        if diff is None and cell != reference and finite_number(value) and finite_number(base_value):
            diff = {"delta": value - base_value}  # an eval.json from before bootstrap CIs: the bare difference
        cells.append({"cell": cell, "value": value, "n": metrics.get("n"), "diff": diff, "is_ref": cell == reference})
    return cells


def p_note(cells: list[dict[str, Any]], rows: dict[str, Any]) -> str | None:
    """The footnote on what p means and its floor, for the resample count of the page's first p; None when
    the page shows no p."""
    diffs = [c["diff"] for c in cells if c["diff"]] + [r["diff"] for r in rows["rows"] if isinstance(r["diff"], dict)]
    shown = [d for d in diffs if finite_number(d.get("p_value"))]
    return fmt.p_floor_note(fmt.stored_resamples(shown[0].get("resamples"))) if shown else None


def metric_rows(run: Run) -> dict[str, Any]:
    """Every scalar metric (and per-class F1) by cell, with fine-tuned vs base differences where computed."""
    models = {k: v for k, v in (run.eval.get("models") or {}).items() if isinstance(v, dict)}
    names: dict[str, None] = {}
    values: dict[str, dict[str, Any]] = {}
    for cell, metrics in models.items():
        for key, value in metrics.items():
            if key == "per_class" and isinstance(value, dict):
                for label, stats in value.items():
                    if isinstance(stats, dict) and fmt.is_number(stats.get("f1")):
                        names[f"F1 {label}"] = None
                        values.setdefault(f"F1 {label}", {})[cell] = stats["f1"]
            elif isinstance(value, dict):  # e.g. pass@k by k
                for sub, v in value.items():
                    if fmt.is_number(v):
                        names[f"{key} {sub}"] = None
                        values.setdefault(f"{key} {sub}", {})[cell] = v
            elif fmt.is_number(value) and key != "n":
                names[key] = None
                values.setdefault(key, {})[cell] = value
    differences = run.eval.get("differences") or {}
    rows = [{"name": n, "values": values[n], "diff": differences.get(n)} for n in names]
    return {"cells": list(models), "rows": rows, "has_diff": bool(differences)}


def render_sweep(sweep: Path, out: Path) -> Path:
    raw = read_json(sweep / "trials.json")
    listing = raw.get("trials", []) if isinstance(raw, dict) else raw if isinstance(raw, list) else []
    trials = [
        {**t, "run_dir": _under(t.get("run_dir"), sweep), "params": as_dict(t.get("params"))}
        for t in listing
        if isinstance(t, dict)
    ]
    best_path = sweep / "best.yaml"
    best_yaml = best_path.read_text(encoding="utf-8", errors="replace") if best_path.is_file() else None
    train_cfg = (read_yaml(best_path).get("train") or {}) if best_yaml else {}
    direction = raw.get("direction") if isinstance(raw, dict) else None
    if direction not in ("minimize", "maximize"):
        # The Trainer's rule for the metric's direction, unless the config says.
        metric = str(train_cfg.get("metric") or "eval_loss")
        greater = train_cfg.get("greater_is_better")
        greater = greater if isinstance(greater, bool) else greater_is_better(metric)
        direction = "maximize" if greater else "minimize"
    complete = [t for t in trials if str(t.get("state", "complete")).lower() == "complete"]
    done = [t for t in complete if fmt.is_number(t.get("value"))]
    best = next((t for t in trials if t.get("best") is True), None)
    if best is None and done:
        best = (max if direction == "maximize" else min)(done, key=lambda t: t["value"])
    params = list(dict.fromkeys(k for t in trials for k in (t.get("params") or {})))
    order = {"history": 0, "importance": 1}
    pngs = sorted((sweep / "plots").glob("*.png"), key=lambda p: (order.get(p.stem, 2), p.name))
    images = [{"title": p.stem, "src": data_uri(p.read_bytes())} for p in pngs]
    states = Counter(str(t.get("state", "?")) for t in trials)
    context = {
        "name": sweep.resolve().name,
        "trials": trials,
        "best": best,
        "params": params,
        "images": images,
        "best_yaml": best_yaml,
        "direction": direction,
        "metric": train_cfg.get("metric"),
        "states": states,
    }
    return _write(out, "sweep.html", context)


def render_comparison(runs: list[Run], out: Path) -> Path:
    names: list[str] = []
    for run in runs:  # two runs may share a directory name (from different output dirs)
        name, n = run.name, 2
        while name in names:
            name, n = f"{run.name} ({n})", n + 1
        names.append(name)
    cells = list(dict.fromkeys(c for run in runs for c in (run.eval.get("models") or {})))
    rows = []
    for name, run in zip(names, runs, strict=True):
        info, models = run.train, run.eval.get("models") or {}
        metric = run.eval.get("primary_metric")
        best_metric, best_value = info.get("metric") or "eval_loss", info.get("best_metric")
        if not fmt.is_number(best_value):  # no summary (crashed run): the lowest validation loss logged
            best_metric, best_value = "eval_loss", min((v for _, v in run.series("eval_loss")), default=None)
        rows.append(
            {
                "name": name,
                "metric": metric,
                "cells": {c: (models.get(c) or {}).get(metric) for c in cells},
                "best": f"{best_metric} = {fmt.metric(best_value)}" if best_value is not None else None,
                "steps": info.get("steps") or max((s for s, _ in run.series("loss")), default=None),
                "stopped": info.get("stopped_early"),
            }
        )
    flat = [flatten(run.config) for run in runs]
    keys = sorted({k for f in flat for k in f})
    diff = [
        {"key": k, "values": [_show(f[k]) if k in f else "—" for f in flat]}
        for k in keys
        if len({json.dumps(f[k], sort_keys=True, default=str) if k in f else "\0absent" for f in flat}) > 1
    ]
    curves = {name: run.series("eval_loss") for name, run in zip(names, runs, strict=True) if run.series("eval_loss")}
    figures = (
        [_figure(out, "val_loss_overlay", charts.overlay_plot(curves), "validation loss by run")] if curves else []
    )
    context = {"names": names, "cells": cells, "rows": rows, "diff": diff, "figures": figures, "runs": runs}
    return _write(out, "compare.html", context)


# ---- helpers -----------------------------------------------------------------------------------


def _figure(out: Path, stem: str, png: bytes, alt: str) -> dict[str, str]:
    """Also written to <out dir>/plots/<stem>.png, for slides, issues, or other pages."""
    directory = out.parent / "plots"
    path = directory / f"{stem}.png"
    with writing(path, FULL_DISK_HINT):  # a full disk: one line naming the file, not a traceback
        directory.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
    return {"alt": alt, "src": data_uri(png)}


def _write(out: Path, template: str, context: dict[str, Any]) -> Path:
    return write_page(out, render_page(TEMPLATES[template], context), FULL_DISK_HINT)


def _show(value: Any) -> str:
    """Config values as YAML/JSON spell them (null, true, [1]), not as Python does (None, True)."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _under(path: Any, directory: Path) -> Any:
    """A trial's run dir relative to its sweep (trials/<run>), when it lies inside it: shorter to read."""
    try:
        return str(Path(path).resolve().relative_to(directory.resolve()))
    except (TypeError, ValueError):
        return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "cell"
