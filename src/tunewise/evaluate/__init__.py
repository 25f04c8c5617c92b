"""Evaluation: a task is data plus a scorer; metrics are small functions."""

from tunewise.evaluate.tasks import EvalTask, task_for

__all__ = ["EvalTask", "task_for"]
