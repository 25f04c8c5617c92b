"""`tunewise run`, `train` and `eval`, each composed of the stages it needs, top to bottom."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from tunewise.config import Config
from tunewise.pipeline.eval_stages import (
    Comparison,
    Evaluation,
    evaluate_adapters,
    evaluate_base,
    evaluate_model,
    write_results,
)
from tunewise.pipeline.lifecycle import OpenRun, complete_run, open_run, recording_failure
from tunewise.pipeline.prepare import LoadedModel, PreparedData, load_model_for_run, prepare_data
from tunewise.pipeline.train_stage import encode_training_data, train_model, validation_scorer
from tunewise.track.resume_target import ResumeRequest

if TYPE_CHECKING:
    from tunewise.train import TrainResult


@dataclass
class RunOutcome:
    """What a job leaves: its directory, every scored cell and its comparison to the base, the training summary."""

    run_dir: Path
    task: str
    primary_metric: str
    evaluation: Evaluation
    comparison: Comparison
    train: dict[str, Any] | None


def run_job(
    config: Config,
    config_path: Path,
    console: Console,
    *,
    resume: ResumeRequest | None = None,
    callbacks: list[Any] | None = None,
) -> RunOutcome:
    """Prepare data → evaluate the base model → train → evaluate the fine-tune → write results."""
    run = open_run(config, config_path, console, training=True, resume=resume, callbacks=callbacks)
    with recording_failure(config, run, console):
        data = prepare_data(config, run.run_dir, console, run.curated, resuming=run.resuming)
        loaded = load_model_for_run(config, data.splits, console)
        evaluation = evaluate_base(
            config, data, loaded, run.run_dir, console, keep_for_resume=True, reuse_kept=run.resuming
        )
        trained = _fine_tune(config, run, data, loaded, console)
        loaded.model = trained.model
        evaluation.update(evaluate_model(config, data, loaded, "fine-tuned", console))
        summary = asdict(trained.summary)
        comparison = write_results(config, data, evaluation, summary, {}, run.run_dir, console)
    complete_run(config, run, evaluation.results, data.task.primary_metric, trained.summary.best_metric, console)
    return RunOutcome(run.run_dir.path, data.task.name, data.task.primary_metric, evaluation, comparison, summary)


def train_job(
    config: Config,
    config_path: Path,
    console: Console,
    *,
    resume: ResumeRequest | None = None,
    callbacks: list[Any] | None = None,
) -> RunOutcome:
    """Prepare data → train: the run directory with the best adapter and metrics.jsonl, no test evaluation."""
    run = open_run(config, config_path, console, training=True, resume=resume, callbacks=callbacks)
    with recording_failure(config, run, console):
        data = prepare_data(config, run.run_dir, console, run.curated, resuming=run.resuming)
        loaded = load_model_for_run(config, data.splits, console)
        trained = _fine_tune(config, run, data, loaded, console)
    complete_run(config, run, {}, data.task.primary_metric, trained.summary.best_metric, console)
    summary = asdict(trained.summary)
    return RunOutcome(
        run.run_dir.path, data.task.name, data.task.primary_metric, Evaluation(), Comparison(None), summary
    )


def eval_job(config: Config, config_path: Path, console: Console, *, adapters: list[Path] | None = None) -> RunOutcome:
    """Prepare data → evaluate the base model → evaluate each adapter → write results."""
    run = open_run(config, config_path, console, training=False)
    with recording_failure(config, run, console):
        data = prepare_data(config, run.run_dir, console, run.curated)
        loaded = load_model_for_run(config, data.splits, console, adapters)
        evaluation = evaluate_base(config, data, loaded, run.run_dir, console)
        evaluation.update(evaluate_adapters(config, data, loaded, console))
        comparison = write_results(config, data, evaluation, None, loaded.adapters, run.run_dir, console)
    complete_run(config, run, evaluation.results, data.task.primary_metric, None, console)
    return RunOutcome(run.run_dir.path, data.task.name, data.task.primary_metric, evaluation, comparison, None)


def _fine_tune(config: Config, run: OpenRun, data: PreparedData, loaded: LoadedModel, console: Console) -> TrainResult:
    """Encode the splits with the training prompt, then the training stage (resumed when the run is)."""
    encoded = encode_training_data(config, data.splits, loaded.renderer, loaded.tokenizer, run.run_dir, console)
    return train_model(
        config,
        loaded.model,
        loaded.tokenizer,
        encoded,
        run.run_dir,
        console,
        task_metric=validation_scorer(config, loaded.tokenizer, data.splits, loaded.renderer),
        callbacks=run.callbacks,
        resume=run.resuming,
    )
