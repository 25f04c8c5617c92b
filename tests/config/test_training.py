"""The lora and train sections: their defaults and the ranges they accept."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tunewise.config.training import LoraSettings, TrainConfig


def test_lora_adapts_every_linear_layer_by_default_or_the_named_modules():
    assert LoraSettings().target_modules == "all-linear"
    assert LoraSettings(target_modules=["q_proj", "v_proj"]).target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ValidationError, match="target_modules"):
        LoraSettings(target_modules="all")


@pytest.mark.parametrize("values", [{"r": 0}, {"alpha": 0}, {"dropout": 1.0}, {"dropout": -0.1}])
def test_lora_sizes_and_dropout_stay_in_range(values: dict):
    with pytest.raises(ValidationError, match=next(iter(values))):
        LoraSettings(**values)


def test_training_defaults_leave_the_metric_direction_to_the_metric_name():
    train = TrainConfig()
    assert (train.metric, train.greater_is_better, train.max_steps, train.sampler) == ("eval_loss", None, -1, "random")
    assert TrainConfig(greater_is_better=True).greater_is_better is True


@pytest.mark.parametrize(
    "values",
    [
        {"lr": 0},
        {"epochs": 0},
        {"batch_size": 0},
        {"grad_accum": 0},
        {"max_length": 8},
        {"patience": -1},
        {"scheduler": "step"},
        {"sampler": "shuffled"},
    ],
)
def test_training_settings_stay_in_range(values: dict):
    with pytest.raises(ValidationError, match=next(iter(values))):
        TrainConfig(**values)
