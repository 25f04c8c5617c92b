"""Every evaluation task offers what the EvalTask protocol promises, with the same call signatures, so the
pipeline can drive any of them the same way."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from tunewise.evaluate.tasks.base import EvalOutput, EvalTask
from tunewise.evaluate.tasks.classification import ClassificationTask
from tunewise.evaluate.tasks.code import CodeTask
from tunewise.evaluate.tasks.generative import GenerativeTask
from tunewise.evaluate.tasks.perplexity import PerplexityTask

TASKS = [ClassificationTask, CodeTask, GenerativeTask, PerplexityTask]


def test_an_output_owns_its_predictions():
    first, second = EvalOutput({"n": 1}), EvalOutput({"n": 2})
    first.predictions.append({"source": "a:1"})
    assert second.predictions == [] and first.metrics == {"n": 1}


@pytest.mark.parametrize("task", TASKS, ids=lambda task: task.__name__)
def test_every_task_has_the_protocols_members(task: type):
    members = [*EvalTask.__annotations__, "evaluate", "compare"]
    fields = {field.name for field in dataclasses.fields(task)}  # a field without a default is no class attribute
    assert [member for member in members if not hasattr(task, member) and member not in fields] == []


@pytest.mark.parametrize("task", TASKS, ids=lambda task: task.__name__)
@pytest.mark.parametrize("method", ["evaluate", "compare"])
def test_every_task_takes_the_protocols_arguments(task: type, method: str):
    expected = inspect.signature(getattr(EvalTask, method)).parameters
    actual = inspect.signature(getattr(task, method)).parameters
    assert list(actual) == list(expected)
    assert [p.default for p in actual.values()] == [p.default for p in expected.values()]
