"""The root config model: its sections and defaults, and the checks that span sections (sweep keys, the
training metric of the task, calibration, stratified batches)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tunewise.config.error_messages import CODE_FLAG_ONLY
from tunewise.config.evaluation import EvalConfig
from tunewise.config.schema import Config
from tunewise.config.training import TrainConfig


def _config(**sections: dict) -> Config:
    return Config.model_validate({"data": {"train": "t.jsonl"}, **sections})


def test_only_data_is_required_and_the_other_sections_take_their_defaults():
    config = _config()
    assert config.train == TrainConfig() and config.eval == EvalConfig()
    assert (config.curate, config.sweep, config.ablate) == (None, None, None)
    with pytest.raises(ValidationError, match="data"):
        Config.model_validate({})


def test_the_training_metric_gets_its_prefix_and_must_belong_to_the_task():
    assert _config(train={"metric": "perplexity"}, eval={"task": "perplexity"}).train.metric == "eval_perplexity"
    with pytest.raises(ValidationError, match="train.metric 'perplexity' is not a metric of the classification task"):
        _config(train={"metric": "perplexity"})
    with pytest.raises(ValidationError, match="train.metric 'eval_bleurt' is not computed during training"):
        _config(train={"metric": "bleurt"})


def test_sweep_keys_are_config_keys():
    config = _config(sweep={"params": {"train.lr": {"low": 1e-5, "high": 1e-3}, "lora.r": {"choices": [4, 8]}}})
    assert set(config.sweep.params) == {"train.lr", "lora.r"}
    with pytest.raises(ValidationError, match=r"sweep.params: 'train.learning_rate' is not a config key"):
        _config(sweep={"params": {"train.learning_rate": {"low": 1e-5, "high": 1e-3}}})
    with pytest.raises(ValidationError, match=r"'lora.r.value' is not a config key"):  # a value has no keys
        _config(sweep={"params": {"lora.r.value": {"choices": [1]}}})


def test_a_swept_prompt_variant_must_be_defined():
    variants = {"variants": {"few": {"few_shot": 2}}}
    config = _config(prompt=variants, sweep={"params": {"prompt.variant": {"choices": ["default", "few"]}}})
    assert config.sweep.params["prompt.variant"].choices == ["default", "few"]
    with pytest.raises(ValidationError, match=r"sweep.params.prompt.variant: \['many'\] not in prompt.variants"):
        _config(prompt=variants, sweep={"params": {"prompt.variant": {"choices": ["few", "many"]}}})


def test_code_execution_cannot_be_swept():
    with pytest.raises(ValidationError) as caught:
        _config(sweep={"params": {"eval.allow_code_execution": {"choices": [True]}}})
    assert CODE_FLAG_ONLY in str(caught.value)


def test_calibration_and_stratified_batches_need_classification():
    completion = {"train": "t.jsonl", "kind": "completion"}
    with pytest.raises(ValidationError, match="eval.calibrate: true is for classification"):
        Config.model_validate({"data": completion, "eval": {"calibrate": True}})
    with pytest.raises(ValidationError, match="train.sampler: stratified batches need class labels"):
        Config.model_validate({"data": completion, "train": {"sampler": "stratified"}})
    assert _config(eval={"calibrate": True}, train={"sampler": "stratified"}).eval.calibrate is True


def test_the_evaluation_task_follows_the_data_kind_under_auto():
    assert _config().eval_task == "classification"
    assert Config.model_validate({"data": {"train": "t.jsonl", "kind": "chat"}}).eval_task == "generation"
    assert _config(eval={"task": "qa"}).eval_task == "qa"
