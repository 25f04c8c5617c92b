"""The one rule for `eval.task: auto` and for which way a metric points, and the metric names it knows."""

from __future__ import annotations

from typing import get_args

import pytest

from tunewise.config import EvalConfig, validate_config
from tunewise.config.inputs import RecordKind
from tunewise.config.tasks import (
    LOWER_IS_BETTER,
    TASK_METRICS,
    TRAINING_METRICS,
    greater_is_better,
    resolve_task,
)


@pytest.mark.parametrize(
    ("kind", "task"),
    [
        ("classification", "classification"),
        ("completion", "generation"),
        ("chat", "generation"),
        ("alpaca", "generation"),
    ],
)
def test_auto_is_label_scoring_for_classification_and_generation_otherwise(kind: str, task: str):
    assert resolve_task("auto", kind) == task


def test_a_named_task_is_kept_whatever_the_data():
    named = [t for t in get_args(EvalConfig.model_fields["task"].annotation) if t != "auto"]
    for kind in get_args(RecordKind):
        assert [resolve_task(task, kind) for task in named] == named


def test_the_config_reports_the_task_the_rule_chose():
    for kind in get_args(RecordKind):
        config = validate_config({"data": {"train": "t.jsonl", "kind": kind}})
        assert config.eval_task == resolve_task("auto", kind)
    assert validate_config({"data": {"train": "t.jsonl"}, "eval": {"task": "perplexity"}}).eval_task == "perplexity"


@pytest.mark.parametrize(
    ("metric", "greater"),
    [
        ("eval_loss", False),
        ("loss", False),
        ("eval_perplexity", False),
        ("reference_perplexity", False),
        ("word_error_rate", False),
        ("eval_macro_f1", True),
        ("eval_accuracy", True),
        ("eval_pass@1", True),
        ("eval_rougeL", True),
    ],
)
def test_loss_perplexity_and_error_are_better_smaller(metric: str, greater: bool):
    assert greater_is_better(metric) is greater


def test_the_configs_direction_wins_over_the_name():
    assert greater_is_better("eval_loss", True) is True
    assert greater_is_better("eval_macro_f1", False) is False
    assert greater_is_better("eval_macro_f1", None) is True


def test_every_named_task_has_its_metrics_and_each_is_a_training_metric():
    named = {t for t in get_args(EvalConfig.model_fields["task"].annotation) if t != "auto"}
    assert set(TASK_METRICS) == named
    expected = {f"eval_{m}" for metrics in TASK_METRICS.values() for m in metrics}
    assert TRAINING_METRICS[0] == "eval_loss" and set(TRAINING_METRICS[1:]) == expected
    assert len(TRAINING_METRICS) == len(set(TRAINING_METRICS))


def test_only_perplexity_among_task_metrics_is_lower_is_better():
    smaller = {m for metrics in TASK_METRICS.values() for m in metrics if not greater_is_better(m)}
    assert smaller == {"perplexity"} and "perplexity" in LOWER_IS_BETTER
