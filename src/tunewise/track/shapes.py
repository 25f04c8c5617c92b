"""The shapes of a run's JSON and YAML files as the views and reports read them, checked in one place.

tunewise writes these files itself, but a run directory can be hand-edited, copied half or damaged: what has the
wrong type is dropped here (an empty section, a missing cell), so a reader indexing into them never crashes.
"""

from __future__ import annotations

import math
from typing import Any

EVAL_OVERHEAD = {"eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second"}
Series = list[tuple[int, float]]  # (step, value)
CONFIG_SECTIONS = (
    "model",
    "data",
    "prompt",
    "train",
    "lora",
    "eval",
    "output",
    "curate",
    "track",
    "sweep",
    "ablate",
    "bakeoff",
    "export",
)


def as_dict(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> dict[str, dict[str, Any]]:
    """A mapping of name -> object, keeping only the entries that are one."""
    return {str(k): v for k, v in as_dict(value).items() if isinstance(v, dict)}


# eval.json's `train` summary: the type each field must have; a field of another type is dropped (None is kept).
_TRAIN_FIELDS: dict[str, str] = {
    "steps": "count",
    "planned_steps": "count",
    "best_step": "count",
    "trainable_params": "count",
    "total_params": "count",
    "resumed_from_step": "count",
    "best_metric": "number",
    "train_seconds": "number",
    "peak_memory_gib": "number",
    "metric": "text",
    "adapter": "text",
    "stopped_early": "flag",
    "divergence_warnings_at": "counts",
}


def finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is finite as a float: a 400-digit int overflows one, so it is not."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _count(value: Any) -> bool:
    return isinstance(value, int) and finite_number(value)


def _fits(kind: str, value: Any) -> bool:
    if kind == "count":
        return _count(value)
    if kind == "number":  # NaN or infinity is a float a run may really end with; a 400-digit int is damage
        return isinstance(value, float) or _count(value)
    if kind == "text":
        return isinstance(value, str)
    if kind == "flag":
        return isinstance(value, bool)
    return isinstance(value, list) and all(_count(v) for v in value)  # counts


def train_summary(raw: Any) -> dict[str, Any]:
    """eval.json's `train`: steps and parameter counts whole numbers, the metric a number, the warnings a list
    of steps; a field of the wrong shape is dropped, so the report shows the rest."""
    summary = {str(k): v for k, v in as_dict(raw).items()}
    for key, kind in _TRAIN_FIELDS.items():
        if key in summary and summary[key] is not None and not _fits(kind, summary[key]):
            del summary[key]
    return summary


def confusion_matrix(raw: Any) -> dict[str, Any] | None:
    """A model's confusion matrix: n labels (strings or numbers) and n rows of n finite counts; else None."""
    matrix = as_dict(raw)
    labels, rows = matrix.get("labels"), matrix.get("rows_gold_cols_pred")
    if not isinstance(labels, list) or not labels or not isinstance(rows, list) or len(rows) != len(labels):
        return None
    if not all(isinstance(label, str) or finite_number(label) for label in labels):
        return None
    if not all(isinstance(row, list) and len(row) == len(labels) and all(map(finite_number, row)) for row in rows):
        return None
    return {**matrix, "labels": [str(label) for label in labels]}


def _model(metrics: dict[str, Any]) -> dict[str, Any]:
    """One cell of eval.json's `models`: a confusion matrix of the wrong shape is dropped."""
    if "confusion_matrix" not in metrics:
        return metrics
    matrix = confusion_matrix(metrics["confusion_matrix"])
    rest = {k: v for k, v in metrics.items() if k != "confusion_matrix"}
    return rest if matrix is None else {**rest, "confusion_matrix": matrix}


def eval_summary(raw: Any) -> dict[str, Any]:
    """eval.json: primary_metric a string (or None), models and differences mappings of objects, each model's
    confusion matrix square and numeric, the train summary's fields of their types (see `train_summary`)."""
    summary = dict(as_dict(raw))
    if not isinstance(summary.get("primary_metric"), str):
        summary.pop("primary_metric", None)
    for key in ("models", "differences"):
        if key in summary:
            summary[key] = _dicts(summary[key])
    if "models" in summary:
        summary["models"] = {cell: _model(metrics) for cell, metrics in summary["models"].items()}
    for key in ("adapters", "delta"):
        if key in summary:
            summary[key] = as_dict(summary[key])
    if "train" in summary:
        summary["train"] = train_summary(summary["train"])
    return summary


def eval_matrix(raw: Any) -> dict[str, Any]:
    """eval_matrix.json: a reference cell name and cells of objects."""
    matrix = dict(as_dict(raw))
    if not isinstance(matrix.get("reference"), str):
        matrix.pop("reference", None)
    if "cells" in matrix:
        matrix["cells"] = _dicts(matrix["cells"])
    return matrix


def config_sections(raw: Any) -> dict[str, Any]:
    """config.yaml: each known section an object (a damaged `data: [1]` reads as an empty section)."""
    config = {str(k): v for k, v in as_dict(raw).items()}
    for section in CONFIG_SECTIONS:
        if section in config and not isinstance(config[section], dict):
            config[section] = {}
    return config


def curation_summary(raw: Any) -> dict[str, Any] | None:
    """curation_report.json as a page reads it: totals and split sizes objects, steps objects whose `dropped`
    counts are numbers; what has another shape is dropped. None when it is not an object at all."""
    if not isinstance(raw, dict):
        return None
    report = {**raw, "totals": as_dict(raw.get("totals"))}
    if "split_sizes" in report:
        report["split_sizes"] = as_dict(report["split_sizes"])
    steps = raw.get("steps") if isinstance(raw.get("steps"), list) else []
    report["steps"] = [
        {**step, "dropped": {str(k): v for k, v in as_dict(step.get("dropped")).items() if finite_number(v)}}
        for step in steps
        if isinstance(step, dict)
    ]
    return report


def metric_series(metrics: list[dict[str, Any]], key: str) -> Series:
    """metrics.jsonl rows as (step, value) of `key` sorted by step, the last value per step; non-numeric and
    non-finite values dropped, and so are numbers too large for a float (a 400-digit int in a damaged file)."""
    points: dict[int, float] = {}
    for row in metrics:
        step, value = row.get("step"), row.get(key)
        if finite_number(step) and finite_number(value):
            points[int(step)] = float(value)
    return sorted(points.items())


def task_metric_keys(metrics: list[dict[str, Any]]) -> list[str]:
    """The validation task metrics (eval_macro_f1, ...) metrics.jsonl logs a number for, in first-seen order;
    not the loss nor the Trainer's timings."""
    keys: dict[str, None] = {}
    for row in metrics:
        for key, value in row.items():
            if key.startswith("eval_") and key not in EVAL_OVERHEAD and _is_number(value):
                keys[key] = None
    return list(keys)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
