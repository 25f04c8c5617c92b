"""A run directory's life: opened (new or resumed) with its environment and trackers, then finished as
completed, failed or interrupted, with the report, the trackers and the index updated best-effort."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from tunewise.config import Config
from tunewise.curate.stage import curate
from tunewise.data.splits import check_data_paths
from tunewise.errors import TunewiseError
from tunewise.pipeline.eval_stages import BASE_EVAL
from tunewise.track import RunDir, create_run_dir
from tunewise.track.env import environment
from tunewise.track.integrations import Trackers, check_installed, eval_metrics
from tunewise.track.resume_target import ResumeRequest, select_run_dir
from tunewise.track.store import RunInfo, best_of, flatten, index_run, read_info, read_metrics, write_info


@dataclass
class OpenRun:
    """A run directory being written: what it continues, where trackers log, the callbacks training adds."""

    run_dir: RunDir
    info: RunInfo
    curated: dict[str, Path] | None  # the curated split files, when the config curates
    resuming: bool
    trackers: Trackers
    callbacks: list[Any] = field(default_factory=list)
    started: float = field(default_factory=time.time)


def open_run(
    config: Config,
    config_path: Path,
    console: Console,
    *,
    training: bool,
    resume: ResumeRequest | None = None,
    callbacks: list[Any] | None = None,
) -> OpenRun:
    """Check, curate (if configured), then create the run directory, or reopen an unfinished one of the same config
    and data when `resume` allows (training only). Writes run.json, env.json, and starts the trackers."""
    started = time.time()
    check_installed(config)
    check_data_paths(config.data)  # a bad data path fails here, before a run directory exists
    # The run keeps the config as the user wrote it (raw files, curate: section): it can be run again from
    # the same files, and `runs compare` shows curation differences. What curation wrote is recorded beside it.
    curated = curate(config, console, for_run=True).splits if config.curate is not None else None
    existing = select_run_dir(config, config_path, resume, console) if resume and training else None
    run_dir = RunDir(existing) if existing else create_run_dir(config, config_path)
    console.print(f"run directory: {escape(str(run_dir.path))}")
    info = RunInfo(run_dir.path.name, task=config.eval_task, model=config.model.name)
    previous = read_info(run_dir.path) if existing else None
    if previous is not None:  # the same run, continued: keep its start, count the resumes
        info.started, info.resumes = previous.started, previous.resumes + 1
    info.validation_metric = config.train.metric if training else None
    try:
        write_info(run_dir.path, info)
    except TunewiseError:
        if not existing:
            shutil.rmtree(run_dir.path, ignore_errors=True)  # nothing ran yet: leave no half-made run behind
        raise
    run = OpenRun(run_dir, info, curated, bool(existing), Trackers(None, run_dir.path), started=started)
    with recording_failure(config, run, console):
        if not existing or not (run_dir.path / "env.json").is_file():  # a resume keeps the data hashes it checked
            run_dir.write_json("env.json", environment(config, curated))
        run.trackers = Trackers(config, run_dir.path)
        run.trackers.log_params(flatten(config.model_dump(mode="json")))
        run.callbacks = [*(callbacks or []), run.trackers.callback()]
    return run


@contextmanager
def recording_failure(config: Config, run: OpenRun, console: Console) -> Iterator[None]:
    """An exception inside marks the run failed (or interrupted, for Ctrl-C) with its message, then propagates."""
    try:
        yield
    except BaseException as exc:
        run.info.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        run.info.error = f"{type(exc).__name__}: {exc}"[:2000]
        try:
            _finish(config, run, {}, console)
        except Exception as secondary:  # e.g. the disk is full: the original error is the one to show
            console.print(f"[yellow]warning: recording the failure failed: {escape(str(secondary))}[/]")
        raise


def complete_run(
    config: Config,
    run: OpenRun,
    results: dict[str, dict[str, Any]],
    primary_metric: str,
    best_validation: float | None,
    console: Console,
) -> None:
    """Mark the run completed with its headline figures, then render the report and notify trackers and index."""
    run.info.status = "completed"
    run.info.primary_metric = primary_metric
    run.info.best_metric = best_of([m[primary_metric] for m in results.values() if primary_metric in m], primary_metric)
    run.info.best_validation = best_validation
    (run.run_dir.path / BASE_EVAL).unlink(missing_ok=True)  # in eval.json and predictions.jsonl now
    _finish(config, run, eval_metrics(results, config.eval.split), console)
    console.print(f"done in {time.time() - run.started:.0f} s; outputs in {escape(str(run.run_dir.path))}")


def _finish(config: Config, run: OpenRun, final: dict[str, float], console: Console) -> None:
    """Record how the run ended, then the extras; an extra that fails is reported, never hides the result."""
    run_dir, info = run.run_dir, run.info
    info.finished = time.time()
    write_info(run_dir.path, info)
    steps = [m.get("step") for m in read_metrics(run_dir.path / "metrics.jsonl")]
    last_step = max((int(s) for s in steps if isinstance(s, int | float)), default=0)
    if info.status == "completed":
        from tunewise.track.run_report import render_report

        _best_effort("rendering report.html", console, lambda: render_report([run_dir.path]))
    _best_effort("sending to trackers", console, lambda: run.trackers.finish(info.status, final, last_step))
    _best_effort("indexing the run", console, lambda: index_run(config.output.dir, run_dir.path))


def _best_effort(what: str, console: Console, action: Callable[[], object]) -> None:
    try:
        action()
    except Exception as exc:  # the run's own results are on disk already; say what failed and go on
        console.print(f"[yellow]warning: {what} failed: {escape(f'{type(exc).__name__}: {exc}')}[/]")
