"""`tunewise.evaluate` loads its exports on first use: importing the package alone does not import
tunewise.evaluate.tasks."""

from __future__ import annotations

from support.lazy import assert_lazy_exports


def test_the_exports_load_on_first_use():
    assert_lazy_exports("tunewise.evaluate", "tunewise.evaluate.tasks", ("EvalTask", "task_for"))
