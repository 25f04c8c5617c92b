"""Trainer callbacks: append-only metrics log, the overfitting (train/val divergence) warning, run sizing."""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from transformers import TrainerCallback

from tunewise.core.format import duration
from tunewise.core.safeio import append_text
from tunewise.train.distributed import is_main_process

# A training run stopped by a full disk is continued from its newest checkpoint by the same command.
RESUME_HINT = "free some space and run the same command again: it continues from the newest checkpoint"


class MetricsLogger(TrainerCallback):
    """Appends every logged dict to metrics.jsonl, flushed per line so a crash loses at most one line. In a
    multi-process run rank 0 alone writes: every rank sees the same logged values (the Trainer gathers them)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        """One line; a full disk stops the run with a one-line error (and no half line left in the file)."""
        if not is_main_process():
            return
        append_text(self.path, json.dumps({"time": round(time.time(), 3), **record}) + "\n", hint=RESUME_HINT)

    def truncate(self, size: int) -> bool:
        """Drop what was logged after a checkpoint (its recorded size), so a resumed run logs no step twice.
        False when the file is already shorter: rows were lost (e.g. not yet on disk at a power cut)."""
        current = self.path.stat().st_size if self.path.is_file() else 0
        if current > size:
            os.truncate(self.path, size)
        return current >= size

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if logs:
            self.write({"step": state.global_step, "epoch": state.epoch, **logs})


class TaskMetric(TrainerCallback):
    """Adds task metrics (e.g. macro-F1) to each evaluation, so early stopping and the best checkpoint
    can follow what the task needs rather than the loss. Must come before EarlyStoppingCallback."""

    def __init__(self, score: Callable[[Any], dict[str, float]], logger: MetricsLogger) -> None:
        self.score, self.logger = score, logger

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None, **kw: Any):
        if metrics is None or kw.get("model") is None:
            return
        added = {f"eval_{name}": value for name, value in self.score(kw["model"]).items()}
        metrics.update(added)  # the Trainer reads this same dict to pick the best checkpoint
        self.logger.write({"step": state.global_step, **added})


class DivergenceMonitor(TrainerCallback):
    """Warns when validation loss rises while training loss falls for `window` evaluations in a row."""

    def __init__(self, window: int, logger: MetricsLogger, console: Console) -> None:
        self.window, self.logger, self.console = window, logger, console
        self.recent_train: list[float] = []
        self.history: list[tuple[int, float, float]] = []  # (step, mean train loss since last eval, val loss)
        self.warned_at: list[int] = []

    def export_state(self) -> dict[str, Any]:
        """Saved in each checkpoint: a resumed run warns exactly when the uninterrupted one would have."""
        return {"recent_train": self.recent_train, "history": self.history, "warned_at": self.warned_at}

    def load_state(self, state: dict[str, Any]) -> None:
        self.recent_train = [float(x) for x in state["recent_train"]]
        self.history = [(int(s), float(t), float(v)) for s, t, v in state["history"]]
        self.warned_at = [int(s) for s in state["warned_at"]]

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if logs and "loss" in logs:
            self.recent_train.append(float(logs["loss"]))

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None, **kw: Any):
        if not metrics or "eval_loss" not in metrics or not self.recent_train:
            return
        train_loss = sum(self.recent_train) / len(self.recent_train)
        self.recent_train = []
        self.history.append((state.global_step, train_loss, float(metrics["eval_loss"])))
        # Warn once per stretch: when divergence starts, not again at every later evaluation of it.
        if diverging(self.history, self.window) and not diverging(self.history[:-1], self.window):
            step = state.global_step
            start = self.history[-self.window - 1][0]
            self.warned_at.append(step)
            self.console.print(
                f"[yellow]warning: overfitting: validation loss rose for {self.window} evaluations "
                f"(steps {start}-{step}) while training loss fell; the best checkpoint is kept[/]"
            )
            self.logger.write({"step": step, "event": "divergence", "from_step": start})


def diverging(history: list[tuple[int, float, float]], window: int) -> bool:
    if len(history) <= window:
        return False
    tail = history[-window - 1 :]
    return all(b[1] < a[1] and b[2] > a[2] for a, b in itertools.pairwise(tail))


class RunSizing(TrainerCallback):
    """After the first few optimizer steps, prints the time per step, the time the planned steps will take and
    the peak memory so far, so a user knows early whether the run fits their budget. The first step is left
    out of the timing: it pays one-off costs (allocations, kernel selection)."""

    MEASURED_STEPS = 4

    def __init__(self, console: Console) -> None:
        self.console = console
        self.started_at: tuple[int, float] | None = None  # (step, time) at the end of the first step seen
        self.figures: dict[str, float] = {}

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        now = time.perf_counter()
        if self.started_at is None:
            self.started_at = (state.global_step, now)
            return
        first_step, first_time = self.started_at
        done = state.global_step - first_step
        if self.figures or done < self.MEASURED_STEPS:
            return
        per_step = (now - first_time) / done
        remaining = max(state.max_steps - state.global_step, 0)
        self.figures = {"seconds_per_step": round(per_step, 3), "peak_memory_gib": round(peak_memory_gib(), 2)}
        evaluations = remaining // args.eval_steps + 1 if args.eval_steps else 0
        self.console.print(
            f"sizing: {per_step:.2f} s per optimizer step (steps {first_step + 1}-{state.global_step}); "
            f"the {remaining} steps left take about {duration(per_step * remaining)} of training, plus "
            f"{evaluations} validation pass{'es' if evaluations != 1 else ''}; "
            f"peak memory so far {self.figures['peak_memory_gib']:.2f} GiB"
        )


def peak_memory_gib() -> float:
    """The accelerator's peak allocation when training on one, else this process's peak resident memory, both since
    the last `reset_peak_memory()` (the process's whole life when it was never reset, or could not be)."""
    return peak_memory_bytes() / 2**30


def peak_memory_bytes() -> int:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated())
    status = _proc_status_kib("VmHWM")
    if status is not None:
        return status * 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def reset_peak_memory() -> bool:
    """Start a new peak: the accelerator's counter, or on Linux (4.0 and later) the process's resident high-water
    mark, which writing 5 to /proc/self/clear_refs sets back to what is resident now. False when it cannot be reset
    (the peak then covers the whole process)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="ascii")
    except OSError:
        return False
    return _proc_status_kib("VmHWM") is not None


def resident_bytes() -> int | None:
    """Memory this process holds now (VmRSS), where Linux says."""
    kib = _proc_status_kib("VmRSS")
    return None if kib is None else kib * 1024


def _proc_status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None
