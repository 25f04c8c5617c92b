"""checks.py: the probe sequences, a Hugging Face model's logits and greedy answers, what a runtime is asked for to
score the run's task and the task scored from its answers, and the comparison with the adapter's predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunewise.config import PromptSettings
from tunewise.data.encode import encode_prompts
from tunewise.data.prompt import PromptRenderer
from tunewise.data.records import Record
from tunewise.evaluate.tasks import ClassificationTask, EvalOutput, PerplexityTask
from tunewise.evaluate.tasks.generative import GenerativeTask
from tunewise.export.checks import (
    ArtifactCheck,
    against_adapter,
    hf_greedy,
    hf_logits,
    probe_sequences,
    share_equal,
    task_inputs,
    task_output,
)

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def renderer(tokenizer: Any) -> PromptRenderer:
    return PromptRenderer(PromptSettings(), "classification", tokenizer, LABELS)


def _records(*pairs: tuple[str, str]) -> list[Record]:
    return [
        Record("classification", {"text": text, "label": label}, "test.jsonl", i + 1)
        for i, (text, label) in enumerate(pairs)
    ]


RECORDS = _records(("the ride was great", "positive"), ("awful trip", "negative"), ("plain car", "neutral"))


def test_probe_sequences_are_the_prompt_then_the_reference_answer(tokenizer: Any, renderer: PromptRenderer):
    sequences = probe_sequences(tokenizer, renderer, RECORDS, 2)
    assert len(sequences) == 2
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for ids, record in zip(sequences, RECORDS, strict=False):
        text = tokenizer.decode(ids, skip_special_tokens=False)
        assert text == renderer.prompt(record) + record.fields["label"] + "<|im_end|>"
        assert ids[-1] == im_end  # the model is also compared where it learned to stop
    assert probe_sequences(tokenizer, renderer, RECORDS, 10) == probe_sequences(tokenizer, renderer, RECORDS, 3)


def test_share_equal():
    assert share_equal([[1, 2], [3]], [[1, 2], [3]]) == 1.0
    assert share_equal([[1, 2], [3], [4], [5]], [[1, 2], [3, 9], [4], [5]]) == 0.75
    assert share_equal([[1, 2]], [[1]]) == 0.0  # a prefix is not the same answer
    assert share_equal([], []) == 1.0
    with pytest.raises(ValueError):
        share_equal([[1]], [[1], [2]])


def _classified(gold: list[str], pred: list[str]) -> EvalOutput:
    return EvalOutput(
        {}, [{"source": f"t:{i}", "gold": g, "pred": p} for i, (g, p) in enumerate(zip(gold, pred, strict=True))]
    )


def test_against_adapter_with_identical_predictions():
    task = ClassificationTask(["negative", "positive"])
    gold = ["negative", "negative", "positive", "positive"]
    predicted = ["negative", "positive", "positive", "positive"]  # one error: the comparison is not of perfect runs
    difference, agreement = against_adapter(task, _classified(gold, predicted), _classified(gold, predicted), seed=0)
    assert agreement == 1.0
    assert difference is not None and difference.delta == 0.0 and difference.low == 0.0 == difference.high


def test_against_adapter_with_one_changed_prediction():
    task = ClassificationTask(["negative", "positive"])
    gold = ["negative", "negative", "positive", "positive"]
    reference = _classified(gold, gold)  # macro-F1 1
    candidate = _classified(gold, ["negative", "positive", "positive", "positive"])
    difference, agreement = against_adapter(task, reference, candidate, seed=0)
    assert agreement == 0.75
    # candidate: F1(negative) = 2·1/(2·1 + 0 + 1) = 2/3, F1(positive) = 2·2/(2·2 + 1 + 0) = 4/5
    assert difference is not None
    assert difference.delta == pytest.approx((2 / 3 + 4 / 5) / 2 - 1.0)
    assert difference.low <= difference.delta <= difference.high and difference.n == 4


def test_likelihood_classification_asks_a_runtime_for_label_scores(tokenizer: Any, renderer: PromptRenderer):
    task = ClassificationTask(LABELS)
    inputs = task_inputs(task, tokenizer, renderer, RECORDS)
    assert inputs.prompts == encode_prompts(tokenizer, renderer, RECORDS)
    assert inputs.choices is not None and inputs.max_new_tokens == 0
    assert [tokenizer.decode(c) for c in inputs.choices] == [f"{label}<|im_end|>" for label in LABELS]
    scores = np.array([[-3.0, -2.0, -0.5], [-0.1, -4.0, -5.0], [-2.0, -2.5, -1.0]])  # as llama.cpp returns them
    output = task_output(task, tokenizer, renderer, RECORDS, scores=scores)
    assert output is not None
    assert [p["pred"] for p in output.predictions] == ["positive", "negative", "positive"]
    assert [p["source"] for p in output.predictions] == ["test.jsonl:1", "test.jsonl:2", "test.jsonl:3"]
    assert output.metrics["accuracy"] == pytest.approx(2 / 3)


def test_generate_mode_classification_asks_a_runtime_for_greedy_answers(tokenizer: Any, renderer: PromptRenderer):
    task = ClassificationTask(LABELS, mode="generate", max_new_tokens=7)
    inputs = task_inputs(task, tokenizer, renderer, RECORDS)
    assert inputs.choices is None and inputs.max_new_tokens == 7 and len(inputs.prompts) == 3
    said = ["positive<|im_end|>", "I think neutral", "no idea"]
    generations = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in said]
    output = task_output(task, tokenizer, renderer, RECORDS, generations=generations)
    assert output is not None
    assert [p["pred"] for p in output.predictions] == ["positive", "neutral", "(unparsed)"]
    assert output.predictions[0]["output"] == "positive"  # special tokens dropped, as tunewise decodes
    assert output.metrics["unparsed"] == 1


def test_a_generated_answer_is_cut_at_the_tasks_stop_string(tokenizer: Any):
    renderer = PromptRenderer(PromptSettings(), "completion", tokenizer)
    records = [Record("completion", {"prompt": "the car", "completion": "was great"}, "qa.jsonl", 1)]
    task = GenerativeTask("qa", max_new_tokens=8, stop=["\n"], max_length=64, with_perplexity=False)
    assert task_inputs(task, tokenizer, renderer, records).max_new_tokens == 8
    generations = [tokenizer("was great\nthe end", add_special_tokens=False)["input_ids"]]
    output = task_output(task, tokenizer, renderer, records, generations=generations)
    assert output is not None
    assert output.predictions[0]["pred"] == "was great" and output.metrics["f1"] == pytest.approx(1.0)


def test_perplexity_is_not_rescored_through_a_runtime(tokenizer: Any, renderer: PromptRenderer):
    inputs = task_inputs(PerplexityTask(64), tokenizer, renderer, RECORDS)
    assert inputs.prompts == [] and inputs.choices is None and inputs.max_new_tokens == 0
    assert task_output(PerplexityTask(64), tokenizer, renderer, RECORDS, generations=[[1], [2], [3]]) is None
    # a classification the runtime computed nothing for has no output either
    assert task_output(ClassificationTask(LABELS), tokenizer, renderer, RECORDS) is None


def test_hf_logits_one_unpadded_sequence_at_a_time(model: Any):
    ids = [5, 17, 42, 3, 99, 7]
    logits = hf_logits(model, [ids, ids[:3]])
    assert not isinstance(logits, list)  # lazy: one sequence's logits held at a time
    full, prefix = list(logits)
    assert full.shape == (6, model.config.vocab_size) and full.dtype == np.float32
    # Causal and unpadded: a prefix's logits are the first rows of the whole sequence's.
    np.testing.assert_allclose(prefix, full[:3], atol=1e-5)


def test_hf_greedy_stops_before_the_stop_token(model: Any, tokenizer: Any):
    prompt = tokenizer("the car ride was great", add_special_tokens=False)["input_ids"]
    (free,) = hf_greedy(model, tokenizer, [prompt], 10, [tokenizer.pad_token_id])
    assert 1 <= len(free) <= 10
    # The first generated token that did not occur before it: stopping there leaves exactly what came before.
    cut = next(i for i in range(1, len(free)) if free[i] not in free[:i])
    (stopped,) = hf_greedy(model, tokenizer, [prompt], 10, [free[cut]])
    assert stopped == free[:cut]
    (short,) = hf_greedy(model, tokenizer, [prompt], 2, [tokenizer.pad_token_id])
    assert short == free[:2]


def test_an_artifact_check_as_json():
    check = ArtifactCheck("adapter", "files", "the run's adapter", seconds=1.23456, notes=["copied"])
    data = check.to_json()
    assert data["logits"] is None and data["logit_verdict"] is None and data["difference_to_adapter"] is None
    assert data["logits_against"] == "the run's adapter" and data["seconds"] == 1.23 and data["notes"] == ["copied"]
