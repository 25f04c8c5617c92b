"""The curate section: a list of typed steps told apart by their `step` key, each with its own defaults and ranges,
each switchable."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from tunewise.config.curate import (
    AnyStep,
    BalanceStep,
    CurateConfig,
    DecontaminateStep,
    NearDedupStep,
    QualityStep,
    ValidateStep,
)

STEP = TypeAdapter(AnyStep)


def test_the_step_key_chooses_the_settings():
    near = STEP.validate_python({"step": "near_dedup", "threshold": 0.6})
    assert isinstance(near, NearDedupStep) and (near.threshold, near.num_perm, near.shingle) == (0.6, 128, "char")
    assert isinstance(STEP.validate_python({"step": "balance", "per_class": 10}), BalanceStep)


def test_every_step_is_on_unless_switched_off():
    assert ValidateStep(step="validate").enabled is True
    assert DecontaminateStep(step="decontaminate", enabled=False).enabled is False


def test_a_key_of_another_step_is_refused():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        STEP.validate_python({"step": "quality", "threshold": 0.5})  # threshold belongs to the dedup steps


@pytest.mark.parametrize(
    "step",
    [
        {"step": "near_dedup", "threshold": 0},
        {"step": "near_dedup", "num_perm": 8},
        {"step": "quality", "max_repetition": 1.5},
        {"step": "confidence", "min": -0.1},
        {"step": "label_errors", "folds": 1},
        {"step": "relevance", "min_score": 2},
        {"step": "decontaminate", "ngram": 2},
        {"step": "split", "val": 0},
    ],
)
def test_step_settings_stay_in_range(step: dict):
    with pytest.raises(ValidationError):
        STEP.validate_python(step)


def test_quality_defaults_keep_any_language():
    quality = QualityStep(step="quality")
    assert (quality.min_words, quality.max_words, quality.languages) == (3, None, None)


def test_curation_needs_its_steps_and_writes_to_curated_by_default():
    curate = CurateConfig(steps=[{"step": "exact_dedup"}, {"step": "split", "val": 20}])
    assert curate.output == Path("curated") and (curate.seed, curate.embed_dtype) == (13, "float32")
    assert [step.step for step in curate.steps] == ["exact_dedup", "split"] and curate.steps[1].val == 20
    with pytest.raises(ValidationError, match="steps"):
        CurateConfig()
    with pytest.raises(ValidationError, match="embed_dtype"):
        CurateConfig(steps=[], embed_dtype="float16")
