"""Evaluation: a task is data plus a scorer; metrics are small functions.

`EvalTask` and `task_for` load on first use: a command that needs only `evaluate.stats` (sizing a run, listing
runs) does not pay for the tasks' imports (torch, scikit-learn)."""

from __future__ import annotations

from typing import Any

__all__ = ["EvalTask", "task_for"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tunewise.evaluate import tasks

        return getattr(tasks, name)
    raise AttributeError(f"module 'tunewise.evaluate' has no attribute {name!r}")
