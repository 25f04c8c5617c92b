"""The eval, output and track sections: their defaults and the values they accept."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from tunewise.config.evaluation import TRACKERS, EvalConfig, OutputConfig, TrackConfig


def test_evaluation_defaults_to_auto_on_the_test_split_with_the_base_model():
    evaluation = EvalConfig()
    assert (evaluation.task, evaluation.split, evaluation.base, evaluation.label_mode) == (
        "auto",
        "test",
        True,
        "likelihood",
    )
    assert (evaluation.calibrate, evaluation.k, evaluation.stop) == (False, [1], [])


def test_list_defaults_are_not_shared_between_configs():
    first, second = EvalConfig(), EvalConfig()
    first.k.append(5)
    first.stop.append("\n")
    assert (second.k, second.stop) == ([1], [])


@pytest.mark.parametrize(
    "values", [{"task": "translation"}, {"split": "train"}, {"batch_size": 0}, {"samples": 0}, {"timeout": 0}]
)
def test_evaluation_settings_stay_in_range(values: dict):
    with pytest.raises(ValidationError, match=next(iter(values))):
        EvalConfig(**values)


def test_runs_go_to_runs_under_the_current_folder_by_default():
    output = OutputConfig()
    assert output.dir == Path("runs") and output.name is None


def test_the_tracker_list_is_what_report_to_accepts():
    accepted = {
        value for kind in get_args(TrackConfig.model_fields["report_to"].annotation) for value in get_args(kind)
    }
    assert accepted == set(TRACKERS)
    assert TrackConfig(report_to=["mlflow", "tensorboard"]).report_to == ["mlflow", "tensorboard"]
    with pytest.raises(ValidationError, match="report_to"):
        TrackConfig(report_to=["comet"])
