"""Section: every config section refuses a key it does not define, instead of silently ignoring it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tunewise.config import Config, DataConfig, EvalConfig, LoraSettings, Section, SweepParam, TrainConfig
from tunewise.config.section import Section as SectionInModule


class Example(Section):
    size: int = 1


def test_a_section_accepts_its_keys_and_refuses_others():
    assert Example(size=3).size == 3
    with pytest.raises(ValidationError) as caught:
        Example.model_validate({"size": 3, "sise": 4})
    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [(("sise",), "extra_forbidden")]


@pytest.mark.parametrize("model", [Config, DataConfig, EvalConfig, LoraSettings, SweepParam, TrainConfig])
def test_every_config_section_is_a_section(model: type[Section]):
    assert issubclass(model, SectionInModule) and model.model_config.get("extra") == "forbid"
