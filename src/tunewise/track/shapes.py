"""The shapes of a run's JSON and YAML files as the views and reports read them, checked in one place.

tunewise writes these files itself, but a run directory can be hand-edited, copied half or damaged: what has the
wrong type is dropped here (an empty section, a missing cell), so a reader indexing into them never crashes.
"""

from __future__ import annotations

from typing import Any

CONFIG_SECTIONS = ("model", "data", "prompt", "train", "lora", "eval", "output", "curate", "track", "sweep", "ablate")


def as_dict(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> dict[str, dict[str, Any]]:
    """A mapping of name -> object, keeping only the entries that are one."""
    return {str(k): v for k, v in as_dict(value).items() if isinstance(v, dict)}


def eval_summary(raw: Any) -> dict[str, Any]:
    """eval.json: primary_metric a string (or None), models and differences mappings of objects."""
    summary = dict(as_dict(raw))
    if not isinstance(summary.get("primary_metric"), str):
        summary.pop("primary_metric", None)
    for key in ("models", "differences"):
        if key in summary:
            summary[key] = _dicts(summary[key])
    for key in ("train", "adapters", "delta"):
        if key in summary:
            summary[key] = as_dict(summary[key])
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
