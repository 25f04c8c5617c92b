"""The sweep, ablate and bakeoff sections: a parameter is a range or a list of choices; fractions are shares of the
data; bake-off subsets are strictly smaller than the training set."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tunewise.config.studies import AblateConfig, BakeoffConfig, SweepConfig, SweepParam


def test_a_parameter_is_a_range_or_choices():
    ranged = SweepParam(low=1e-5, high=1e-3, log=True)
    assert (ranged.low, ranged.high, ranged.log, ranged.choices) == (1e-5, 1e-3, True, None)
    assert SweepParam(choices=[4, 8]).choices == [4, 8]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "give either low and high, or choices"),
        ({"low": 1}, "give either low and high, or choices"),
        ({"low": 1, "high": 2, "choices": [1]}, "give either low and high, or choices"),
        ({"low": 2, "high": 2}, r"low \(2\) must be below high \(2\)"),
        ({"choices": []}, "choices is empty"),
    ],
)
def test_a_parameter_that_is_neither_or_empty_is_refused(values: dict, message: str):
    with pytest.raises(ValidationError, match=message):
        SweepParam(**values)


def test_a_sweep_needs_its_parameters_and_at_least_one_trial():
    sweep = SweepConfig(params={"train.lr": {"low": 1e-5, "high": 1e-3}})
    assert isinstance(sweep.params["train.lr"], SweepParam)
    assert (sweep.n_trials, sweep.prune, sweep.warmup_evals, sweep.timeout_minutes) == (10, True, 1, None)
    with pytest.raises(ValidationError, match="params"):
        SweepConfig()
    with pytest.raises(ValidationError, match="n_trials"):
        SweepConfig(params={"lora.r": {"choices": [4]}}, n_trials=0)


def test_ablation_fractions_are_shares_of_the_training_set():
    ablate = AblateConfig()
    assert ablate.fractions == [0.1, 0.25, 0.5, 1.0] and ablate.curated_vs_raw and ablate.raw is None
    assert AblateConfig(fractions=[0.5, 1], raw=Path("raw.jsonl")).fractions == [0.5, 1.0]
    for fractions in ([0, 0.5], [0.5, 1.5], [-0.1]):
        with pytest.raises(ValidationError, match=r"fractions must be in \(0, 1\]"):
            AblateConfig(fractions=fractions)


def test_bakeoff_defaults_are_three_nested_shares_and_a_few_shot_base():
    settings = BakeoffConfig()
    assert settings.fractions == [0.0625, 0.125, 0.25] and settings.few_shot == 3 and settings.verify_top == 0
    assert BakeoffConfig(models=["a", "b"]).models == ["a", "b"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"fractions": []}, "fractions is empty"),
        ({"fractions": [0.5, 1.0]}, r"fractions must be in \(0, 1\)"),
        ({"fractions": [0]}, r"fractions must be in \(0, 1\)"),
        ({"models": ["a", "a"]}, "models lists a candidate twice"),
        ({"resamples": 10}, "greater than or equal to 100"),
        ({"few_shot": -1}, "greater than or equal to 0"),
    ],
)
def test_bakeoff_settings_that_cannot_work_are_refused(values: dict, message: str):
    with pytest.raises(ValidationError, match=message):
        BakeoffConfig(**values)
