"""Config problems in the user's terms: locations as written, the key probably meant, the override to blame, and
the walk through sections that the reference and sweep checks share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import Field

from tunewise.config import Config, apply_override
from tunewise.config.curate import AnyStep, NearDedupStep
from tunewise.config.error_messages import (
    CODE_FLAG_ONLY,
    STEP_MODELS,
    check,
    is_config_key,
    is_section,
    location,
    members_of,
    model_at,
    origins,
)
from tunewise.config.inputs import PromptSettings
from tunewise.config.studies import SweepParam
from tunewise.config.training import TrainConfig

MINIMAL = {"data": {"train": "t.jsonl"}}


def test_a_valid_config_has_no_problems():
    config, problems = check(Config, {**MINIMAL, "lora": {"r": 4}})
    assert problems == {} and config is not None and config.lora.r == 4


def test_each_problem_is_one_line_in_the_users_terms():
    raw = {**MINIMAL, "train": {"lrr": 1, "batch_size": "lots"}, "modle": {}}
    config, problems = check(Config, raw)
    assert config is None
    assert sorted(problems.values()) == [
        "'train.batch_size': Input should be a valid integer, unable to parse string as an integer (got 'lots')",
        "unknown key 'modle' (did you mean 'model'?)",
        "unknown key 'train.lrr' (did you mean 'train.lr'?)",
    ]


def test_an_unknown_key_far_from_any_lists_the_known_ones():
    problems = check(Config, {**MINIMAL, "output": {"zzzz": 1}})[1]
    assert list(problems.values()) == ["unknown key 'output.zzzz' (known: dir, name)"]


def test_a_missing_section_is_named():
    assert list(check(Config, {})[1].values()) == ["missing required key 'data'"]


def test_the_code_permission_is_never_a_setting_whatever_its_value():
    for value in (True, False, None):
        assert check(Config, {**MINIMAL, "eval": {"allow_code_execution": value}}) == (
            None,
            {"allow_code_execution": CODE_FLAG_ONLY},
        )


def test_locations_count_items_from_one_and_name_curation_steps():
    raw = {"curate": {"steps": [{"step": "validate"}, {"step": "near_dedup"}]}, "data": {"labels": ["a", 1]}}
    assert location(("curate", "steps", 1, "near_dedup", "threshold"), raw) == "curate.steps[2] (near_dedup).threshold"
    assert location(("data", "labels", 1), raw) == "data.labels[2]"
    assert location(("curate", "steps", 7), raw) == "curate.steps[8]"  # past the end: the position still reads


def test_the_override_that_brought_a_problem_is_blamed():
    overrides = ["lora.r=4", "train.epochs=abc", "lora.alpha=0"]
    layered = {**MINIMAL, "train": {"lr": "fast"}}
    merged = {**layered, "train": dict(layered["train"])}
    for override in overrides:
        apply_override(merged, override)
    problems = check(Config, merged)[1]
    blamed = origins(Config, layered, overrides, problems, apply_override)
    by_text = {problems[key].split(":")[0]: who for key, who in blamed.items()}
    assert by_text == {"'train.epochs'": "override 'train.epochs=abc'", "'lora.alpha'": "override 'lora.alpha=0'"}
    assert len(problems) == 3  # train.lr came from the file: no override is blamed for it
    assert layered == {**MINIMAL, "train": {"lr": "fast"}}  # origins works on a copy


def test_model_at_walks_sections_maps_lists_and_steps():
    assert model_at(Config, ("train",)) is TrainConfig
    assert model_at(Config, ("sweep", "params", "train.lr")) is SweepParam
    assert model_at(Config, ("curate", "steps", 0, "near_dedup")) is NearDedupStep
    assert model_at(Config, ("curate", "steps", 0)) is None  # which step: not known without its name
    assert model_at(Config, ("train", "lr")) is None


def test_config_keys_are_dotted_paths_through_sections():
    assert is_config_key(Config, "train.lr") and is_config_key(Config, "prompt.few_shot")
    assert is_config_key(Config, "sweep.n_trials")  # through an optional section
    assert not is_config_key(Config, "train.rate") and not is_config_key(Config, "train.lr.low")


def test_members_and_sections_of_an_annotation():
    assert members_of(int | None) == [int, type(None)]
    assert members_of(Annotated[int | str, Field(description="x")]) == [int, str]
    assert is_section(PromptSettings) and not is_section(list[str]) and not is_section(Path)
    assert members_of(Literal["a"]) == [Literal["a"]]


def test_every_curation_step_is_known_by_its_name():
    assert set(STEP_MODELS) == {model.model_fields["step"].annotation.__args__[0] for model in members_of(AnyStep)}
    assert STEP_MODELS["near_dedup"] is NearDedupStep and len(STEP_MODELS) == 13


@pytest.mark.parametrize(
    ("step", "text"),
    [
        ({"step": "near_dupe"}, "unknown step 'near_dupe' (did you mean 'near_dedup'?)"),
        ({"threshold": 0.5}, "no 'step' key saying which step this is"),
        ("validate", "a step is a mapping like {step: near_dedup}, not 'validate'"),
    ],
)
def test_a_step_that_is_no_step_lists_the_steps(step: object, text: str):
    problems = check(Config, {**MINIMAL, "curate": {"steps": [step]}})[1]
    assert list(problems.values()) == [f"'curate.steps[1]': {text}; steps: {', '.join(STEP_MODELS)}"]
