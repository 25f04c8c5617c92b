"""Evaluation: a task is data plus a scorer; metrics are small functions."""

from tunewise.evaluate.tasks import TASKS, EvalTask, task_for

__all__ = ["TASKS", "EvalTask", "task_for"]
