"""Evaluation: a task is data plus a scorer; metrics are small functions."""

from tunewise.evaluate.tasks import TASK_NAMES, EvalTask, task_for

__all__ = ["TASK_NAMES", "EvalTask", "task_for"]
