"""`tunewise run`: data -> base evaluation -> LoRA training -> fine-tuned evaluation -> run directory."""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tunewise.config import Config
from tunewise.curate.stage import curate
from tunewise.data.encode import encode_records
from tunewise.data.normalize import inference_normalization
from tunewise.data.prompt import PromptRenderer
from tunewise.data.splits import DataSplits, check_data_paths, load_splits
from tunewise.data.variants import DEFAULT_PROMPT, prompt_variants
from tunewise.errors import DataError, TunewiseError
from tunewise.evaluate.calibration import calibrate_predictions
from tunewise.evaluate.metrics import positive_label
from tunewise.evaluate.stats import Difference
from tunewise.evaluate.tasks import EvalTask, task_for
from tunewise.models import load_model
from tunewise.models.adapters import attach_adapter
from tunewise.pipeline.summary import print_comparison, print_data_summary, print_matrix
from tunewise.track import RunDir, create_run_dir
from tunewise.track.env import environment
from tunewise.track.integrations import Trackers, check_installed, eval_metrics
from tunewise.track.resume_target import ResumeRequest, select_run_dir
from tunewise.track.store import RunInfo, best_of, flatten, index_run, read_info, read_json, read_metrics, write_info

BASE_EVAL = "base_eval.json"  # the base model's results, kept until the run completes so a resume skips them


def run(
    config: Config,
    config_path: Path,
    console: Console,
    do_train: bool = True,
    do_eval: bool = True,
    adapters: list[Path] | None = None,
    callbacks: list[Any] | None = None,
    resume: ResumeRequest | None = None,
) -> RunDir:
    """`callbacks` are extra transformers TrainerCallbacks (e.g. a sweep's pruning hook). `resume` (training
    only) continues an unfinished run of the same config in its directory instead of starting a new one."""
    started = time.time()
    check_installed(config)
    check_data_paths(config.data)  # a bad data path fails here, before a run directory exists
    # The run keeps the config as the user wrote it (raw files, curate: section): it can be run again from
    # the same files, and `runs compare` shows curation differences. What curation wrote is recorded beside it.
    curated = curate(config, console, for_run=True).splits if config.curate is not None else None
    existing = select_run_dir(config, config_path, resume, console) if resume and do_train else None
    run_dir = RunDir(existing) if existing else create_run_dir(config, config_path)
    console.print(f"run directory: {escape(str(run_dir.path))}")
    info = RunInfo(run_dir.path.name, task=config.eval_task, model=config.model.name)
    previous = read_info(run_dir.path) if existing else None
    if previous is not None:  # the same run, continued: keep its start, count the resumes
        info.started, info.resumes = previous.started, previous.resumes + 1
    info.validation_metric = config.train.metric if do_train else None
    try:
        write_info(run_dir.path, info)
    except TunewiseError:
        if not existing:
            shutil.rmtree(run_dir.path, ignore_errors=True)  # nothing ran yet: leave no half-made run behind
        raise
    trackers = Trackers(None, run_dir.path)
    try:
        if not existing or not (run_dir.path / "env.json").is_file():  # a resume keeps the data hashes it checked
            run_dir.write_json("env.json", environment(config, curated))
        trackers = Trackers(config, run_dir.path)
        trackers.log_params(flatten(config.model_dump(mode="json")))
        extra_callbacks = [*(callbacks or []), trackers.callback()]
        outcome = _experiment(
            config, curated, run_dir, console, do_train, do_eval, adapters or [], extra_callbacks, bool(existing)
        )
    except BaseException as exc:
        info.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        info.error = f"{type(exc).__name__}: {exc}"[:2000]
        try:
            _finish(config, run_dir, info, trackers, {}, console)
        except Exception as secondary:  # e.g. the disk is full: the original error is the one to show
            console.print(f"[yellow]warning: recording the failure failed: {escape(str(secondary))}[/]")
        raise
    info.status = "completed"
    info.primary_metric = outcome.primary_metric
    scores = [m[outcome.primary_metric] for m in outcome.results.values() if outcome.primary_metric in m]
    info.best_metric = best_of(scores, outcome.primary_metric)
    if outcome.train_summary:
        info.best_validation = outcome.train_summary["best_metric"]
    (run_dir.path / BASE_EVAL).unlink(missing_ok=True)  # in eval.json and predictions.jsonl now
    _finish(config, run_dir, info, trackers, eval_metrics(outcome.results, config.eval.split), console)
    console.print(f"done in {time.time() - started:.0f} s; outputs in {escape(str(run_dir.path))}")
    return run_dir


@dataclass
class Outcome:
    results: dict[str, dict[str, Any]]
    train_summary: dict[str, Any] | None
    primary_metric: str


def _finish(
    config: Config, run_dir: RunDir, info: RunInfo, trackers: Trackers, final: dict[str, float], console: Console
) -> None:
    """Record how the run ended, then the extras; an extra that fails is reported, never hides the result."""
    info.finished = time.time()
    write_info(run_dir.path, info)
    steps = [m.get("step") for m in read_metrics(run_dir.path / "metrics.jsonl")]
    last_step = max((int(s) for s in steps if isinstance(s, int | float)), default=0)
    if info.status == "completed":
        from tunewise.track.run_report import render_report

        _best_effort("rendering report.html", console, lambda: render_report([run_dir.path]))
    _best_effort("sending to trackers", console, lambda: trackers.finish(info.status, final, last_step))
    _best_effort("indexing the run", console, lambda: index_run(config.output.dir, run_dir.path))


def _best_effort(what: str, console: Console, action: Callable[[], object]) -> None:
    try:
        action()
    except Exception as exc:  # the run's own results are on disk already; say what failed and go on
        console.print(f"[yellow]warning: {what} failed: {escape(f'{type(exc).__name__}: {exc}')}[/]")


def _experiment(
    config: Config,
    curated: dict[str, Path] | None,
    run_dir: RunDir,
    console: Console,
    do_train: bool,
    do_eval: bool,
    adapters: list[Path],
    callbacks: list[Any],
    resuming: bool = False,
) -> Outcome:
    """Data -> base evaluation -> training -> fine-tuned evaluation, written into the run directory."""
    if resuming:
        (run_dir.path / "rejects.jsonl").unlink(missing_ok=True)  # written again below, not appended twice
    # Before the model: bad data fails in a second. If no usable records are left, the rejects are
    # written to the run directory first, and the error says where.
    splits = load_splits(config.data, config.train.seed, save_rejects=run_dir.write_rejects, curated=curated)
    rejects_path = run_dir.write_rejects(splits.rejects)
    print_data_summary(console, splits, rejects_path, config.data)
    normalization = normalize_eval_inputs(config, splits, console)
    task = task_for(config.data.kind, splits.labels, config.eval, config.train.max_length)

    with console.status(f"loading model {escape(str(config.model.name))} (the first GGUF load converts it, ~25 s)"):
        loaded = load_model(config.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    adapter_cells = adapter_names(adapters)
    for name, path in adapter_cells.items():
        model = attach_adapter(model, path, name)
    renderers = prompt_variants(config, tokenizer, splits)
    renderer = renderers[DEFAULT_PROMPT]  # the prompt training uses
    eval_records = splits.test if config.eval.split == "test" else splits.val
    results: dict[str, dict[str, Any]] = {}
    predictions: dict[str, list[dict[str, Any]]] = {}
    calibration: dict[str, dict[str, Any]] = {}

    def evaluate_all(model_name: str) -> None:
        for variant, variant_renderer in renderers.items():
            cell = _cell(model_name, variant)
            results[cell], predictions[cell] = _evaluate(
                task, model, tokenizer, variant_renderer, eval_records, config, console, cell
            )
            if config.eval.calibrate:  # fitted on validation, applied to the evaluated split: rows of their own
                _, on_val = _evaluate(
                    task, model, tokenizer, variant_renderer, splits.val, config, console, cell, split="val"
                )
                metrics, calibrated, calibration[cell] = calibrate_predictions(on_val, predictions[cell], task.labels)
                results[f"{cell} · calibrated"], predictions[f"{cell} · calibrated"] = metrics, calibrated
                console.print(
                    f"{escape(cell)} · calibrated: {task.primary_metric} = {metrics[task.primary_metric]:.4f} "
                    f"(label offsets fitted on {len(on_val)} validation examples)"
                )

    if do_eval and config.eval.base:
        stored = read_json(run_dir.path / BASE_EVAL) if resuming else None
        cells = {_cell("base", v) for v in renderers}
        if (
            isinstance(stored, dict)
            and isinstance(stored.get("results"), dict)
            and isinstance(stored.get("predictions"), dict)
            and set(stored["results"]) == cells
        ):
            results.update(stored["results"])
            predictions.update(stored["predictions"])
            console.print(f"base model: results of the interrupted run reused ({BASE_EVAL})")
        else:
            with model.disable_adapter() if adapter_cells else nullcontext():
                evaluate_all("base")
            if do_train:
                run_dir.write_json(BASE_EVAL, {"results": results, "predictions": predictions})
    train_summary: dict[str, Any] | None = None
    if do_train:
        model, train_summary = _train(
            model, tokenizer, config, splits, renderer, run_dir, console, callbacks, resume=resuming
        )
    if do_eval and do_train:
        evaluate_all("fine-tuned")
    for name in adapter_cells if do_eval else ():
        model.set_adapter(name)
        evaluate_all(name)

    if results:
        differences = {}
        if "base" in results and "fine-tuned" in results:
            differences = task.compare(predictions["base"], predictions["fine-tuned"], seed=config.train.seed)
        extras = {"input_normalization": normalization, "calibration": calibration or None}
        _write_eval(
            run_dir, task, config, eval_records, results, predictions, differences, train_summary, adapter_cells, extras
        )
        print_comparison(
            console, {k: results[k] for k in ("base", "fine-tuned") if k in results}, task.primary_metric, differences
        )
        if set(results) - {"base", "fine-tuned"}:  # variants, calibrated rows: every cell against the prompted base
            matrix = _matrix(task, results, predictions, config.train.seed)
            print_matrix(console, matrix, task.primary_metric)
            run_dir.write_json("eval_matrix.json", matrix)
    return Outcome(results, train_summary, task.primary_metric)


def normalize_eval_inputs(config: Config, splits: DataSplits, console: Console) -> dict[str, Any] | None:
    """The text normalization curation applied to the training text, applied to val and test too (the curated
    records are unchanged by it: it is idempotent), so the model is scored on the text distribution it was
    trained on. Returns what was applied and how many records it changed, for eval.json."""
    normalization = inference_normalization(config.curate.steps if config.curate else None)
    if normalization is None:
        return None
    changed = {}
    for split in ("val", "test"):
        records = getattr(splits, split)
        normalized = [normalization.apply(record) for record in records]
        changed[split] = sum(new is not old for new, old in zip(normalized, records, strict=True))
        setattr(splits, split, normalized)
    console.print(
        "evaluation inputs normalized as curation normalized the training text: "
        + ", ".join(f"{n} of {len(getattr(splits, split))} {split} records changed" for split, n in changed.items())
    )
    return {**normalization.to_json(), "changed": changed}


def _cell(model_name: str, variant: str) -> str:
    return model_name if variant == DEFAULT_PROMPT else f"{model_name} · {variant}"


def _matrix(task: EvalTask, results: dict[str, Any], predictions: dict[str, Any], seed: int) -> dict[str, Any]:
    """Every model x prompt cell against the prompted base model, with paired-bootstrap CIs."""
    metric = task.primary_metric
    reference = "base" if "base" in results else next(iter(results))
    matrix: dict[str, Any] = {"metric": metric, "reference": reference, "cells": {}}
    for cell, metrics in results.items():
        entry: dict[str, Any] = {metric: metrics[metric]}
        if cell != reference:
            diff = task.compare(predictions[reference], predictions[cell], seed=seed).get(metric)
            entry["vs_reference"] = diff.to_json() if diff else None
        matrix["cells"][cell] = entry
    return matrix


def with_curated_data(config: Config, splits: dict[str, Path]) -> Config:
    """The same config, reading the curated splits (canonical field names) instead of the raw files."""
    data = config.data.model_copy(
        update={
            "train": splits["train"],
            "val": splits.get("val"),
            "test": splits.get("test"),
            "fields": {},
            "format": "jsonl",
            "encoding": "utf-8",
        }
    )
    return config.model_copy(update={"data": data, "curate": None})


def _train(
    model: Any,
    tokenizer: Any,
    config: Config,
    splits: DataSplits,
    renderer: PromptRenderer,
    run_dir: RunDir,
    console: Console,
    callbacks: list[Any] | None = None,
    resume: bool = False,
) -> tuple[Any, dict[str, Any]]:
    from tunewise.train import train  # imports the Trainer stack only when training

    max_length = config.train.max_length
    train_items, bad_train = encode_records(splits.train, renderer, tokenizer, max_length)
    val_items, bad_val = encode_records(splits.val, renderer, tokenizer, max_length)
    bad = bad_train + bad_val
    if bad and config.data.on_error == "raise":
        first = bad[0]
        raise DataError(first.source, first.line, first.field, first.reason)
    if bad:
        run_dir.write_rejects(bad)
        console.print(
            f"[yellow]{len(bad)} examples rejected before training (max_length); "
            f"see {escape(str(run_dir.path / 'rejects.jsonl'))}[/]"
        )
    if not train_items or not val_items:
        split = "training" if not train_items else "validation"
        raise DataError(
            str(config.data.train),
            0,
            None,
            f"no {split} examples left after the max_length check",
            f"raise train.max_length (now {max_length}) or shorten the prompt",
        )
    truncated = sum(e.truncated for e in train_items)
    if truncated:
        console.print(f"[yellow]{truncated} training examples truncated to {max_length} tokens[/]")
    result = train(
        model,
        tokenizer,
        config,
        train_items,
        val_items,
        run_dir.path,
        console,
        task_metric=_task_metric(config, tokenizer, splits, renderer),
        extra_callbacks=callbacks,
        resume=resume,
    )
    summary = {
        "steps": result.steps,
        "planned_steps": result.planned_steps,
        "best_step": result.best_step,
        "best_metric": result.best_metric,
        "metric": config.train.metric,
        "stopped_early": result.stopped_early,
        "divergence_warnings_at": result.divergence_steps,
        "trainable_params": result.trainable_params,
        "total_params": result.total_params,
        "adapter": str(result.adapter_dir),
        "resumed_from_step": result.resumed_from,
        "sizing": result.sizing,
    }
    if result.stopped_early:
        console.print(f"early stopping at step {result.steps} of {result.planned_steps}")
    console.print(
        f"best checkpoint: step {result.best_step} ({config.train.metric} = {result.best_metric or float('nan'):.4f}), "
        f"restored and saved to {escape(str(result.adapter_dir))}"
    )
    return result.model, summary


def _task_metric(config: Config, tokenizer: Any, splits: DataSplits, renderer: PromptRenderer):
    """When train.metric is a task metric: score it on a fixed, seeded subsample of validation."""
    if config.train.metric == "eval_loss":
        return None
    task = task_for(
        config.data.kind, splits.labels, config.eval.model_copy(update={"perplexity": False}), config.train.max_length
    )
    budget = config.train.metric_examples
    sample = random.Random(config.train.seed).sample(splits.val, min(budget, len(splits.val)))

    def score(model: Any) -> dict[str, float]:
        output = task.evaluate(model, tokenizer, renderer, sample, config.eval.batch_size)
        return {k: float(v) for k, v in output.metrics.items() if isinstance(v, float)}

    return score


def _evaluate(
    task: EvalTask,
    model: Any,
    tokenizer: Any,
    renderer: PromptRenderer,
    records: list,
    config: Config,
    console: Console,
    label: str,
    split: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        output = task.evaluate(
            model, tokenizer, renderer, records, config.eval.batch_size, progress, f"evaluating {escape(label)}"
        )
    console.print(
        f"{escape(label)}: {task.primary_metric} = {output.metrics[task.primary_metric]:.4f} "
        f"on {len(records)} {split or config.eval.split} examples"
    )
    return output.metrics, output.predictions


def adapter_names(adapters: list[Path]) -> dict[str, Path]:
    """Matrix cell names: one adapter is "fine-tuned"; several are named by their run directory."""
    if len(adapters) == 1:
        return {"fine-tuned": adapters[0]}
    names: dict[str, Path] = {}
    for path in adapters:
        stem = path.resolve().parent.name if path.name == "adapter" else path.name
        name, n = stem, 2
        while name in names:
            name, n = f"{stem}-{n}", n + 1
        names[name] = path
    return names


def _write_eval(
    run_dir: RunDir,
    task: EvalTask,
    config: Config,
    records: list,
    results: dict[str, Any],
    predictions: dict[str, list[dict[str, Any]]],
    differences: dict[str, Difference],
    train_summary: dict[str, Any] | None,
    adapters: dict[str, Path],
    extras: dict[str, Any],
) -> None:
    payload: dict[str, Any] = {
        "task": task.name,
        "primary_metric": task.primary_metric,
        "split": config.eval.split,
        "n_examples": len(records),
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
        payload["ranking_positive"] = positive_label([str(r.fields["label"]) for r in records], task.labels)
    payload.update({key: value for key, value in extras.items() if value is not None})
    run_dir.write_json("eval.json", payload)
    rows = []
    for name, preds in predictions.items():
        rows += [{"model": name, **p} for p in preds]
    if rows:
        run_dir.write_jsonl("predictions.jsonl", rows)
