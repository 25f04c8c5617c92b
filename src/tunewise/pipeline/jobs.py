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
from tunewise.pipeline.handoff import Handoff, Training, leading, receive, training_processes
from tunewise.pipeline.lifecycle import OpenRun, complete_run, open_run, recording_failure
from tunewise.pipeline.prepare import LoadedModel, PreparedData, load_model_for_run, prepare_data
from tunewise.pipeline.train_stage import TrainingData, encode_training_data, train_model, validation_scorer
from tunewise.track import RunDir
from tunewise.track.resume_target import ResumeRequest
from tunewise.train.distributed import Ranks

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
    leader: bool = True  # False on ranks > 0 of a multi-process run: they train, rank 0 evaluates and records


def run_job(
    config: Config,
    config_path: Path,
    console: Console,
    *,
    resume: ResumeRequest | None = None,
    callbacks: list[Any] | None = None,
) -> RunOutcome:
    """Prepare data → evaluate the base model → train → evaluate the fine-tune → write results.

    In a launch of several processes, rank 0 runs this and the other ranks join at the training stage."""
    with training_processes(config) as ranks:
        if ranks is not None and not ranks.leader:
            return _follow(config)
        with leading(config, ranks) as handoff:
            run = open_run(config, config_path, console, training=True, resume=resume, callbacks=callbacks)
            with recording_failure(config, run, console):
                data = prepare_data(config, run.run_dir, console, run.curated, resuming=run.resuming)
                loaded = load_model_for_run(config, data.splits, console)
                evaluation = evaluate_base(
                    config, data, loaded, run.run_dir, console, keep_for_resume=True, reuse_kept=run.resuming
                )
                trained = _fine_tune(config, run, data, loaded, console, handoff)
                evaluation.update(_evaluate_fine_tuned(config, data, loaded, trained, ranks, console))
                summary = asdict(trained.summary)
                comparison = write_results(config, data, evaluation, summary, {}, run.run_dir, console)
            best = trained.summary.best_metric
            complete_run(config, run, evaluation.results, data.task.primary_metric, best, console)
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
    with training_processes(config) as ranks:
        if ranks is not None and not ranks.leader:
            return _follow(config)
        with leading(config, ranks) as handoff:
            run = open_run(config, config_path, console, training=True, resume=resume, callbacks=callbacks)
            with recording_failure(config, run, console):
                data = prepare_data(config, run.run_dir, console, run.curated, resuming=run.resuming)
                loaded = load_model_for_run(config, data.splits, console)
                trained = _fine_tune(config, run, data, loaded, console, handoff)
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


def _fine_tune(
    config: Config, run: OpenRun, data: PreparedData, loaded: LoadedModel, console: Console, handoff: Handoff
) -> TrainResult:
    """Encode the splits with the training prompt, then the training stage (resumed when the run is), joined by the
    other ranks of a multi-process run."""
    encoded = encode_training_data(config, data.splits, loaded.renderer, loaded.tokenizer, run.run_dir, console)
    task = data.task
    handoff.send(Training(run.run_dir.path, encoded.train, encoded.val, run.resuming, task.name, task.primary_metric))
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


def _evaluate_fine_tuned(
    config: Config,
    data: PreparedData,
    loaded: LoadedModel,
    trained: TrainResult,
    ranks: Ranks | None,
    console: Console,
) -> Evaluation:
    """The fine-tuned model under every prompt variant. Trained sharded over several ranks (train.fsdp,
    train.deepspeed), rank 0 holds a shard of the weights only, and the other ranks are gone: the base model is
    loaded again with the saved adapter."""
    if ranks is None or not (config.train.fsdp or config.train.deepspeed is not None):
        loaded.model = trained.model
        return evaluate_model(config, data, loaded, "fine-tuned", console)
    return evaluate_adapters(
        config, data, load_model_for_run(config, data.splits, console, [trained.adapter_dir]), console
    )


def _follow(config: Config) -> RunOutcome:
    """A rank > 0: wait for rank 0's training stage, then train beside it. It prints nothing and writes nothing:
    rank 0 reports, evaluates and records the run."""
    from tunewise.models import load_model

    message = receive(config)
    quiet = Console(quiet=True)
    loaded = load_model(config.model)
    data = TrainingData(message.train, message.val)
    trained = train_model(
        config, loaded.model, loaded.tokenizer, data, RunDir(message.run_dir), quiet, resume=message.resume
    )
    summary = asdict(trained.summary)
    evaluation, comparison = Evaluation(), Comparison(None)
    return RunOutcome(message.run_dir, message.task, message.primary_metric, evaluation, comparison, summary, False)
