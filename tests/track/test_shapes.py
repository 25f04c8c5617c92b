"""Run-file shapes (track/shapes.py): what has the wrong type is dropped, what is sound is kept as it is."""

from __future__ import annotations

import math

import pytest

from tunewise.track import shapes

HUGE = int("1" + "0" * 400)


def test_finite_number_takes_ints_and_floats_a_float_can_hold():
    assert all(shapes.finite_number(v) for v in (0, -3, 2.5, 10**300))
    assert not any(shapes.finite_number(v) for v in (True, math.nan, math.inf, HUGE, "1", None, [1]))


def test_the_train_summary_drops_each_field_of_the_wrong_type_and_keeps_the_rest():
    raw = {
        "steps": 12,
        "planned_steps": "20",  # a string: dropped
        "best_step": HUGE,  # no float holds it: dropped
        "trainable_params": 1000,
        "total_params": None,  # None is kept: "not known"
        "best_metric": math.nan,  # a diverged run really ends with NaN
        "metric": 5,  # not text: dropped
        "stopped_early": 1,  # not a bool: dropped
        "divergence_warnings_at": [4, 8],
        "extra": {"kept": True},
    }
    summary = shapes.train_summary(raw)
    assert set(summary) == {
        "steps",
        "trainable_params",
        "total_params",
        "best_metric",
        "divergence_warnings_at",
        "extra",
    }
    assert summary["total_params"] is None and math.isnan(summary["best_metric"])
    assert "divergence_warnings_at" not in shapes.train_summary({"divergence_warnings_at": [4, "8"]})
    assert shapes.train_summary([1, 2]) == {}


@pytest.mark.parametrize(
    "matrix",
    [
        {"labels": ["a", "b"], "rows_gold_cols_pred": [[1, 2, 3], [1]]},  # ragged
        {"labels": ["a", "b"], "rows_gold_cols_pred": "xx"},
        {"labels": 7, "rows_gold_cols_pred": [[1]]},
        {"labels": [], "rows_gold_cols_pred": []},
        {"labels": ["a"], "rows_gold_cols_pred": [[math.inf]]},
        {"labels": [["a"]], "rows_gold_cols_pred": [[1]]},
        {"labels": ["a", "b"], "rows_gold_cols_pred": [[1, 2]]},  # fewer rows than labels
    ],
)
def test_a_confusion_matrix_of_another_shape_is_none(matrix: dict):
    assert shapes.confusion_matrix(matrix) is None


def test_a_sound_confusion_matrix_keeps_its_counts_and_labels_become_text():
    matrix = shapes.confusion_matrix({"labels": [0, "b"], "rows_gold_cols_pred": [[3, 1], [0, 4]], "note": "x"})
    assert matrix == {"labels": ["0", "b"], "rows_gold_cols_pred": [[3, 1], [0, 4]], "note": "x"}


def test_eval_summary_drops_damaged_sections_and_keeps_sound_cells():
    raw = {
        "primary_metric": ["macro_f1"],  # not a string: dropped
        "models": {"base": {"acc": 0.5, "confusion_matrix": {"labels": 3}}, "broken": [1], 7: {"acc": 1.0}},
        "differences": {"acc": {"delta": 0.1}, "f1": "x"},
        "adapters": "x",
        "train": {"steps": "x", "best_step": 3},
    }
    summary = shapes.eval_summary(raw)
    assert "primary_metric" not in summary
    assert summary["models"] == {"base": {"acc": 0.5}, "7": {"acc": 1.0}}  # the bad matrix is dropped, the cell kept
    assert summary["differences"] == {"acc": {"delta": 0.1}} and summary["adapters"] == {}
    assert summary["train"] == {"best_step": 3}
    assert shapes.eval_summary(None) == {} and shapes.eval_summary("text") == {}


def test_eval_matrix_and_config_sections_keep_only_objects():
    assert shapes.eval_matrix({"reference": 3, "cells": {"a": {"x": 1}, "b": 2}}) == {"cells": {"a": {"x": 1}}}
    config = shapes.config_sections({"data": [1], "train": {"lr": 0.1}, "custom": [1], 5: "x"})
    assert config == {"data": {}, "train": {"lr": 0.1}, "custom": [1], "5": "x"}


def test_curation_summary_keeps_numeric_drop_counts_of_step_objects():
    raw = {
        "totals": [1],
        "split_sizes": "x",
        "steps": [{"name": "dedup", "dropped": {"dedup:exact": 3, "bad": "x", "inf": math.inf}}, "junk"],
    }
    summary = shapes.curation_summary(raw)
    assert summary["totals"] == {} and summary["split_sizes"] == {}
    assert summary["steps"] == [{"name": "dedup", "dropped": {"dedup:exact": 3}}]
    assert shapes.curation_summary([1]) is None
    assert shapes.curation_summary({"steps": "x"})["steps"] == [] and "split_sizes" not in shapes.curation_summary({})


def test_metric_series_keeps_the_last_finite_value_per_step_in_step_order():
    rows = [
        {"step": 4, "loss": 1.0},
        {"step": 2, "loss": 2.0},
        {"step": 4, "loss": 0.9},  # logged again at the same step (a resumed run): the last one counts
        {"step": 6, "loss": math.nan},
        {"step": HUGE, "loss": 1.0},
        {"step": 8, "loss": "x"},
        {"step": None, "loss": 0.1},
        {"step": 10, "eval_loss": 0.5},
    ]
    assert shapes.metric_series(rows, "loss") == [(2, 2.0), (4, 0.9)]
    assert shapes.metric_series(rows, "eval_loss") == [(10, 0.5)] and shapes.metric_series([], "loss") == []


def test_task_metric_keys_are_the_logged_eval_numbers_except_loss_and_timings():
    rows = [
        {"step": 4, "eval_loss": 1.0, "eval_runtime": 3.2, "eval_samples_per_second": 9.0},
        {"step": 4, "eval_macro_f1": 0.5, "eval_note": "text", "loss": 1.0},
        {"step": 8, "eval_accuracy": 0.7, "eval_macro_f1": 0.6, "eval_flag": True},
    ]
    assert shapes.task_metric_keys(rows) == ["eval_macro_f1", "eval_accuracy"]
