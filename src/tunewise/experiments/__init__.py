"""Experiments built from many runs: hyperparameter sweeps (`sweep`) and data ablations (`ablate`), and
what they share: naming, curating once, dotted config edits, a bootstrap CI of one run's metric.

The submodules are imported on use (`from tunewise.experiments.sweep import sweep`), so the ablation never
needs optuna.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console

from tunewise.config import Config
from tunewise.evaluate.stats import Difference, macro_f1_from_indices, paired_bootstrap
from tunewise.track.rundir import run_name

if TYPE_CHECKING:
    from tunewise.data.records import Record
    from tunewise.data.splits import DataSplits
    from tunewise.evaluate.tasks import EvalTask


def experiment_name(config: Config, config_path: Path) -> str:
    """Named as run directories are (see `run_name`)."""
    return run_name(config, config_path, fallback="experiment")


def curated_once(config: Config, console: Console) -> Config:
    """Curate now, if configured, and return the config reading the curated splits: every run of the
    experiment then trains on the same data instead of curating again."""
    if config.curate is None:
        return config
    from tunewise.curate.stage import curate
    from tunewise.pipeline.prepare import with_curated_data

    return with_curated_data(config, curate(config, console, for_run=True).splits)


@dataclass
class ExperimentData:
    """What every arm of an experiment shares: its name and folder, the curated config, the splits and the task."""

    name: str
    out: Path  # <output.dir>/<kind>/<name>/, with a data/ folder for the files the arms read
    config: Config  # reading the curated splits
    splits: DataSplits
    task: EvalTask


def experiment_data(config: Config, config_path: Path, kind: str, console: Console) -> ExperimentData:
    """Name the experiment, make `<output.dir>/<kind>/<name>/data/`, curate once and load the splits and task."""
    from tunewise.data.splits import load_splits
    from tunewise.evaluate.tasks import task_for

    name = experiment_name(config, config_path)
    out = config.output.dir / kind / name
    (out / "data").mkdir(parents=True, exist_ok=True)
    curated = curated_once(config, console)
    splits = load_splits(curated.data, curated.train.seed)
    task = task_for(curated.data.kind, splits.labels, curated.eval, curated.train.max_length)
    return ExperimentData(name, out, curated, splits, task)


def write_records(path: Path, records: list[Record]) -> Path:
    """An arm's data file: the records' canonical fields as JSONL, as curation writes them."""
    from tunewise.data.jsonl import write_jsonl

    return write_jsonl(path, (record.to_row() for record in records))


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """`a.b = value` in a raw config dict, keeping the value's Python type: `apply_override` parses a
    string as YAML, which would turn 1e-05 into a string and "yes" into True."""
    node = raw
    *sections, last = key.split(".")
    for part in sections:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


def metric_ci(
    task: EvalTask, predictions: list[dict[str, Any]], seed: int = 0, resamples: int = 1000
) -> Difference | None:
    """One-sample 95% bootstrap CI of the task's primary metric over a run's per-example predictions.

    It is the paired bootstrap of evaluate.stats against a constant-zero system, so `delta` is the metric
    and the resampling is the one every difference uses. Macro-F1 is recomputed on each resample from
    gold/pred (the same confusion-matrix F1 the paired bootstrap uses); per-example scores are averaged.
    """
    score = resampled_score(task, predictions)
    if score is None or not predictions:
        return None
    return paired_bootstrap(lambda idx: (0.0, score(idx)), len(predictions), resamples=resamples, seed=seed)


def resampled_score(task: EvalTask, predictions: list[dict[str, Any]]) -> Callable[[np.ndarray], float] | None:
    metric = task.primary_metric
    labels = getattr(task, "labels", None)
    if metric == "macro_f1" and labels and predictions and "gold" in predictions[0]:
        index = {label: i for i, label in enumerate(labels)}
        gold = np.array([index[p["gold"]] for p in predictions])
        pred = np.array([index.get(p["pred"], len(labels)) for p in predictions])  # unparsed: always wrong
        return lambda idx: macro_f1_from_indices(gold[idx], pred[idx], len(labels) + 1, len(labels))
    if predictions and metric in predictions[0]:  # generative tasks and code: the mean of per-example scores
        values = np.array([float(p[metric]) for p in predictions])
        return lambda idx: float(values[idx].mean())
    return None  # e.g. corpus perplexity: no per-example scores
