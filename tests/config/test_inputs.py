"""The model, data and prompt sections: their defaults, the ranges they accept, and prompt variants."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from tunewise.config.inputs import DataConfig, ModelConfig, PromptConfig, PromptSettings, RecordKind


def test_the_model_defaults_to_the_shipped_alias_in_float32_without_remote_code():
    model = ModelConfig()
    assert (model.name, model.dtype, model.trust_remote_code, model.revision) == (
        "smollm2-135m-instruct",
        "float32",
        False,
        None,
    )
    with pytest.raises(ValidationError, match="dtype"):
        ModelConfig(dtype="int8")


def test_data_needs_only_a_training_file_and_reads_every_record_kind():
    data = DataConfig(train=Path("t.jsonl"))
    assert (data.kind, data.format, data.encoding, data.on_error) == ("classification", "auto", "utf-8", "raise")
    assert (data.val, data.test, data.labels, data.fields) == (None, None, None, {})
    assert set(get_args(DataConfig.model_fields["kind"].annotation)) == set(get_args(RecordKind))
    with pytest.raises(ValidationError, match="train"):
        DataConfig()


@pytest.mark.parametrize(
    "values",
    [{"val_fraction": 0}, {"val_fraction": 1}, {"test_fraction": 1.5}, {"max_train_examples": 0}, {"format": "xlsx"}],
)
def test_data_fractions_and_sample_sizes_stay_in_range(values: dict):
    with pytest.raises(ValidationError, match=next(iter(values))):
        DataConfig(train=Path("t.jsonl"), **values)


@pytest.mark.parametrize(
    ("encoding", "message"), [("hex", "is a codec, not a text encoding"), ("utf-99", "unknown text encoding")]
)
def test_data_encoding_is_a_text_encoding(encoding: str, message: str):
    assert DataConfig(train=Path("t.jsonl"), encoding="latin-1").encoding == "latin-1"
    with pytest.raises(ValidationError, match=message):
        DataConfig(train=Path("t.jsonl"), encoding=encoding)


def test_a_variant_changes_only_its_keys():
    prompt = PromptConfig(system="Be brief.", few_shot=1, variants={"many": {"few_shot": 4}, "same": {}})
    many = prompt.variant("many")
    assert isinstance(many, PromptSettings) and not hasattr(many, "variants")
    assert (many.few_shot, many.system, many.chat_template) == (4, "Be brief.", True)
    assert prompt.variant("same") == PromptSettings(system="Be brief.", few_shot=1)  # an empty variant: the prompt


def test_a_bad_variant_is_refused_with_its_name():
    with pytest.raises(ValidationError, match=r"prompt.variants.shots: few_shot: Input should be greater"):
        PromptConfig(variants={"shots": {"few_shot": -1}})
    with pytest.raises(ValidationError, match=r"prompt.variants.nested: variants: Extra inputs are not permitted"):
        PromptConfig(variants={"nested": {"variants": {}}})  # a variant is one prompt, not a family


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), ("auto", "auto"), ("false", False)])
def test_chat_template_is_true_false_or_auto(value: object, expected: object):
    assert PromptSettings().chat_template is True  # the default wraps the prompt in the model's chat template
    assert PromptSettings(chat_template=value).chat_template == expected


@pytest.mark.parametrize("value", ["maybe", "Auto", 2, None])
def test_any_other_chat_template_value_is_one_error_naming_the_choices(value: object):
    with pytest.raises(ValidationError) as error:
        PromptSettings(chat_template=value)
    assert error.value.error_count() == 1 and "use true, false or auto" in str(error.value)
