"""A run in several training processes: rank 0 runs the stages, the other ranks wait for its training stage.

Rank 0 curates, scores the base model and writes the run directory, the run store and the trackers, exactly as a
run in one process does. At the training stage it hands the other ranks what training needs (the run directory, the
encoded splits, whether the run resumes); each loads the model and trains its shard of every global batch beside rank
0 (train/distributed.py), then exits, while rank 0 scores the fine-tune and completes the run. If rank 0 fails
before training, it tells the others to stop, so none waits out the timeout.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch.distributed as dist

from tunewise.config import Config
from tunewise.data.encode import Encoded
from tunewise.errors import TunewiseError
from tunewise.models.device import resolve_device
from tunewise.train.distributed import Ranks, check_parallel, launched_ranks, share, start, stop


@dataclass(frozen=True)
class Training:
    """Rank 0's hand-off at its training stage: everything another rank needs to train its shard."""

    run_dir: Path
    train: list[Encoded]
    val: list[Encoded]
    resume: bool
    task: str
    primary_metric: str


@dataclass(frozen=True)
class Stop:
    """Rank 0 ended before training: the other ranks have nothing to do."""

    reason: str


class LeaderStopped(TunewiseError):
    """Rank 0 stopped before training. It reports why itself, so the other ranks exit without a word."""

    quiet = True


class Handoff:
    """Rank 0's one message to the other ranks (nothing happens in a run of one process)."""

    def __init__(self, ranks: Ranks | None) -> None:
        self.ranks = ranks
        self.sent = False

    def send(self, message: Training | Stop) -> None:
        if self.ranks is None or self.sent:
            return
        self.sent = True
        share(message)


@contextmanager
def training_processes(config: Config) -> Iterator[Ranks | None]:
    """Inside a launch of several processes: the process group, started with train.ddp_timeout (None in one
    process). Rank 0 turns the launcher's SIGTERM (sent when another rank dies) into an interruption, so the run is
    recorded as interrupted rather than left running."""
    if launched_ranks() is None:
        yield None
        return
    ranks = start(config.train.ddp_timeout, resolve_device(config.model.device))
    assert ranks is not None
    restore = _interrupt_on_sigterm() if ranks.leader else None
    try:
        yield ranks
    finally:
        if restore is not None:
            restore()
    stop()  # only after a normal end: a failed rank's peers may be gone, and the launcher ends the others


@contextmanager
def leading(config: Config, ranks: Ranks | None) -> Iterator[Handoff]:
    """Rank 0's run: the config checked for several processes first; if anything fails before the hand-off, the
    other ranks are told to stop."""
    handoff = Handoff(ranks)
    try:
        if ranks is not None:
            check_parallel(config, ranks.world)
        yield handoff
    except BaseException as exc:
        if not handoff.sent:
            with suppress(Exception):  # the others may be gone already (that may be why this failed)
                handoff.send(Stop(f"{type(exc).__name__}: {exc}"))
        raise
    handoff.send(Stop("rank 0 ended without training"))  # a no-op once the training stage sent its hand-off


def receive(config: Config) -> Training:
    """What ranks > 0 wait for: rank 0's hand-off at its training stage."""
    try:
        message = share(None)
    except (RuntimeError, dist.DistError) as exc:  # the wait's timeout, or rank 0 is gone
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise TunewiseError(
            f"waiting for rank 0 to reach training failed ({detail}): rank 0 stopped, or its curation and base "
            f"evaluation took longer than train.ddp_timeout ({config.train.ddp_timeout} s); raise train.ddp_timeout "
            "for a long curation"
        ) from exc
    if isinstance(message, Stop):
        raise LeaderStopped(f"rank 0 stopped before training: {message.reason}")
    return message


def _interrupt_on_sigterm() -> Any:
    """SIGTERM raises KeyboardInterrupt in the main thread; returns the function that restores the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt("stopped by the launcher (SIGTERM): another training process ended")

    signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)
