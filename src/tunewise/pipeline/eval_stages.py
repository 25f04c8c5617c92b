"""The evaluation stages of a run: score one model under every prompt variant, compare, write eval.json."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from tunewise.config import Config
from tunewise.core.progress import progress_bar
from tunewise.data.prompt import PromptRenderer
from tunewise.data.records import Record
from tunewise.data.variants import DEFAULT_PROMPT
from tunewise.evaluate.calibration import calibrate_predictions
from tunewise.evaluate.metrics import positive_label
from tunewise.evaluate.stats import Difference
from tunewise.evaluate.tasks import EvalTask
from tunewise.pipeline.prepare import LoadedModel, PreparedData
from tunewise.pipeline.summary import print_comparison, print_matrix
from tunewise.track import RunDir
from tunewise.track.store import read_json

BASE_EVAL = "base_eval.json"  # the base model's results, kept until the run completes so a resume skips them


@dataclass
class Evaluation:
    """Every scored cell ("base", "fine-tuned", "base · terse", "… · calibrated"): metrics and predictions."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    predictions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)

    def update(self, other: Evaluation) -> None:
        self.results.update(other.results)
        self.predictions.update(other.predictions)
        self.calibration.update(other.calibration)


def evaluate_model(
    config: Config, data: PreparedData, loaded: LoadedModel, model_name: str, console: Console
) -> Evaluation:
    """`model_name` as `loaded.model` is now (its active adapter) under every prompt variant, calibrated too
    when eval.calibrate asks: label offsets fitted on validation, applied to the evaluated split."""
    evaluation = Evaluation()
    for variant, renderer in loaded.renderers.items():
        cell = model_name if variant == DEFAULT_PROMPT else f"{model_name} · {variant}"
        scored = _score(config, data.task, loaded, renderer, data.eval_records, console, cell, config.eval.split)
        evaluation.results[cell], evaluation.predictions[cell] = scored
        if config.eval.calibrate:
            _, on_val = _score(config, data.task, loaded, renderer, data.splits.val, console, cell, "val")
            metrics, calibrated, evaluation.calibration[cell] = calibrate_predictions(
                on_val, evaluation.predictions[cell], data.task.labels
            )
            evaluation.results[f"{cell} · calibrated"] = metrics
            evaluation.predictions[f"{cell} · calibrated"] = calibrated
            console.print(
                f"{escape(cell)} · calibrated: {data.task.primary_metric} = {metrics[data.task.primary_metric]:.4f} "
                f"(label offsets fitted on {len(on_val)} validation examples)"
            )
    return evaluation


def evaluate_base(
    config: Config,
    data: PreparedData,
    loaded: LoadedModel,
    run_dir: RunDir,
    console: Console,
    *,
    keep_for_resume: bool = False,
    reuse_kept: bool = False,
) -> Evaluation:
    """The prompted base model (adapters disabled). `keep_for_resume` (a training run) keeps the results in
    base_eval.json; `reuse_kept` (that run, resumed) takes them from there instead of scoring again."""
    if not config.eval.base:
        return Evaluation()
    cells = {"base" if v == DEFAULT_PROMPT else f"base · {v}" for v in loaded.renderers}
    stored = read_json(run_dir.path / BASE_EVAL) if reuse_kept else None
    if _is_stored_evaluation(stored, cells):
        console.print(f"base model: results of the interrupted run reused ({BASE_EVAL})")
        return Evaluation(stored["results"], stored["predictions"])
    with loaded.model.disable_adapter() if loaded.adapters else nullcontext():
        evaluation = evaluate_model(config, data, loaded, "base", console)
    if keep_for_resume:
        run_dir.write_json(BASE_EVAL, {"results": evaluation.results, "predictions": evaluation.predictions})
    return evaluation


def evaluate_adapters(config: Config, data: PreparedData, loaded: LoadedModel, console: Console) -> Evaluation:
    """Each adapter given to `tunewise eval`, in turn."""
    evaluation = Evaluation()
    for name in loaded.adapters:
        loaded.model.set_adapter(name)
        evaluation.update(evaluate_model(config, data, loaded, name, console))
    return evaluation


@dataclass
class Comparison:
    """Every scored cell against the prompted base model (or the first cell, without one)."""

    reference: str | None
    differences: dict[str, Difference] = field(default_factory=dict)  # fine-tuned vs base, every metric compared
    vs_reference: dict[str, Difference | None] = field(default_factory=dict)  # each other cell, primary metric


def write_results(
    config: Config,
    data: PreparedData,
    evaluation: Evaluation,
    train_summary: dict[str, Any] | None,
    adapters: dict[str, Path],
    run_dir: RunDir,
    console: Console,
) -> Comparison:
    """eval.json, predictions.jsonl and (with variants or calibrated rows) eval_matrix.json; the comparison
    printed and returned."""
    results, predictions, task = evaluation.results, evaluation.predictions, data.task
    if not results:
        return Comparison(None)
    comparison = Comparison("base" if "base" in results else next(iter(results)))
    if "base" in results and "fine-tuned" in results:
        comparison.differences = task.compare(predictions["base"], predictions["fine-tuned"], seed=config.train.seed)
        comparison.vs_reference["fine-tuned"] = comparison.differences.get(task.primary_metric)
    payload = _eval_payload(config, data, evaluation, comparison.differences, train_summary, adapters)
    run_dir.write_json("eval.json", payload)
    rows = [{"model": name, **p} for name, preds in predictions.items() for p in preds]
    if rows:
        run_dir.write_jsonl("predictions.jsonl", rows)
    headline = {k: results[k] for k in ("base", "fine-tuned") if k in results}
    print_comparison(console, headline, task.primary_metric, comparison.differences)
    if set(results) - {"base", "fine-tuned"}:  # variants, calibrated rows: every cell against the prompted base
        comparison.vs_reference = _against_reference(task, evaluation, comparison.reference, config.train.seed)
        matrix = _matrix_json(task.primary_metric, comparison, results)
        print_matrix(console, matrix, task.primary_metric)
        run_dir.write_json("eval_matrix.json", matrix)
    return comparison


def _against_reference(
    task: EvalTask, evaluation: Evaluation, reference: str | None, seed: int
) -> dict[str, Difference | None]:
    """Paired-bootstrap difference of every cell against the reference cell, on the primary metric."""
    predictions = evaluation.predictions
    return {
        cell: task.compare(predictions[reference], predictions[cell], seed=seed).get(task.primary_metric)
        for cell in evaluation.results
        if cell != reference
    }


def _matrix_json(metric: str, comparison: Comparison, results: dict[str, Any]) -> dict[str, Any]:
    """eval_matrix.json: every model x prompt cell, with its difference to the reference and the CI."""
    matrix: dict[str, Any] = {"metric": metric, "reference": comparison.reference, "cells": {}}
    for cell, metrics in results.items():
        entry: dict[str, Any] = {metric: metrics[metric]}
        if cell != comparison.reference:
            diff = comparison.vs_reference.get(cell)
            entry["vs_reference"] = diff.to_json() if diff else None
        matrix["cells"][cell] = entry
    return matrix


def _eval_payload(
    config: Config,
    data: PreparedData,
    evaluation: Evaluation,
    differences: dict[str, Difference],
    train_summary: dict[str, Any] | None,
    adapters: dict[str, Path],
) -> dict[str, Any]:
    task, results = data.task, evaluation.results
    payload: dict[str, Any] = {
        "task": task.name,
        "primary_metric": task.primary_metric,
        "split": config.eval.split,
        "n_examples": len(data.eval_records),
        "model": config.model.name,
        "models": results,
    }
    if "base" in results and "fine-tuned" in results:
        metric = task.primary_metric
        payload["delta"] = {metric: results["fine-tuned"][metric] - results["base"][metric]}
        payload["differences"] = {name: d.to_json() for name, d in differences.items()}
    if train_summary:
        payload["train"] = train_summary
    if adapters:
        payload["adapters"] = {name: str(path) for name, path in adapters.items()}
    if any("roc_auc" in metrics for metrics in results.values()):  # binary: which label the ranking figures rank
        labels = [str(r.fields["label"]) for r in data.eval_records]
        payload["ranking_positive"] = positive_label(labels, task.labels)
    extras = {"input_normalization": data.normalization, "calibration": evaluation.calibration or None}
    payload.update({key: value for key, value in extras.items() if value is not None})
    return payload


def _is_stored_evaluation(stored: Any, cells: set[str]) -> bool:
    return (
        isinstance(stored, dict)
        and isinstance(stored.get("results"), dict)
        and isinstance(stored.get("predictions"), dict)
        and set(stored["results"]) == cells
    )


def _score(
    config: Config,
    task: EvalTask,
    loaded: LoadedModel,
    renderer: PromptRenderer,
    records: list[Record],
    console: Console,
    label: str,
    split: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with progress_bar(console) as progress:
        output = task.evaluate(
            loaded.model,
            loaded.tokenizer,
            renderer,
            records,
            config.eval.batch_size,
            progress,
            f"evaluating {escape(label)}",
        )
    console.print(
        f"{escape(label)}: {task.primary_metric} = {output.metrics[task.primary_metric]:.4f} "
        f"on {len(records)} {split} examples"
    )
    return output.metrics, output.predictions
