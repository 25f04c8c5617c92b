"""task_for: the task `eval.task` names, with `auto` decided by the same rule the config reports (resolve_task),
and the settings each task takes from the eval section."""

from __future__ import annotations

from typing import get_args

import pytest

from tunewise.config import EvalConfig, resolve_task, validate_config
from tunewise.config.inputs import RecordKind
from tunewise.errors import ConfigError
from tunewise.evaluate.tasks import ClassificationTask, PerplexityTask, task_for
from tunewise.evaluate.tasks.generative import GenerativeTask

LABELS = ["negative", "positive"]


@pytest.mark.parametrize("kind", get_args(RecordKind))
def test_auto_builds_the_task_the_config_reports(kind: str):
    config = validate_config({"data": {"train": "t.jsonl", "kind": kind}})
    task = task_for(kind, LABELS, config.eval, config.train.max_length)
    assert task.name == config.eval_task == resolve_task("auto", kind)


def test_classification_takes_the_labels_and_label_mode():
    task = task_for("classification", LABELS, EvalConfig(label_mode="generate", max_new_tokens=7), 64)
    assert isinstance(task, ClassificationTask)
    assert (task.labels, task.mode, task.max_new_tokens) == (LABELS, "generate", 7)


def test_classification_needs_classification_data():
    with pytest.raises(ConfigError, match=r"eval.task: classification needs data.kind: classification \(got chat\)"):
        task_for("chat", [], EvalConfig(task="classification"), 64)


def test_generative_tasks_take_their_generation_settings():
    cfg = EvalConfig(task="qa", max_new_tokens=12, stop=["\n"], perplexity=False)
    task = task_for("completion", [], cfg, 96)
    assert isinstance(task, GenerativeTask)
    assert (task.name, task.max_new_tokens, task.stop, task.max_length, task.with_perplexity) == (
        "qa",
        12,
        ["\n"],
        96,
        False,
    )
    task.stop.append("###")
    assert cfg.stop == ["\n"]  # the task holds its own copy


def test_perplexity_uses_the_training_length():
    task = task_for("classification", LABELS, EvalConfig(task="perplexity"), 80)
    assert isinstance(task, PerplexityTask) and task.max_length == 80


def test_code_needs_enough_samples_for_pass_at_k():
    with pytest.raises(ConfigError, match=r"eval.k: pass@5 needs eval.samples >= 5"):
        task_for("completion", [], EvalConfig(task="code", k=[1, 5], samples=2), 64)


def test_code_needs_the_command_line_permission():
    with pytest.raises(ConfigError, match="pass --allow-code-execution"):
        task_for("completion", [], EvalConfig(task="code"), 64)
