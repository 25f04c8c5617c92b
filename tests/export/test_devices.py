"""The export's measurements run on the model's device: logits, greedy answers and the task re-scored with the tiny
model on torch's lazy device (a second device on a CPU-only machine) equal the CPU's, with no torch call mixing
lazy and CPU tensors; a merged directory read back is measured on the device its reference ran on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from support.devices import lazy_device, on_lazy, strict_device
from tunewise.config import PromptSettings
from tunewise.data.encode import encode_prompts
from tunewise.data.prompt import PromptRenderer
from tunewise.data.records import Record
from tunewise.evaluate.tasks import ClassificationTask
from tunewise.export import verify
from tunewise.export.checks import hf_greedy, hf_logits, probe_sequences, score_hf
from tunewise.export.run_source import EvaluatedData
from tunewise.export.verify import Measuring, ReferenceRun, check_merged
from tunewise.models.device import input_device

LABELS = ["negative", "neutral", "positive"]
RECORDS = [
    Record("classification", {"text": text, "label": label}, "test.jsonl", i + 1)
    for i, (text, label) in enumerate([("the ride was great", "positive"), ("awful trip", "negative")])
]
TOLERANCE = 1e-4  # lazy (TorchScript) and eager CPU kernels differ in float rounding only


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def renderer(tokenizer: Any) -> PromptRenderer:
    return PromptRenderer(PromptSettings(), "classification", tokenizer, LABELS)


@pytest.fixture(scope="module")
def cpu_model(tiny_model_dir: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def lazy_model(tiny_model_dir: Path) -> Any:
    return on_lazy(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval())


def test_logits_and_greedy_answers_on_the_model_device(
    cpu_model: Any, lazy_model: Any, tokenizer: Any, renderer: PromptRenderer
):
    sequences = probe_sequences(tokenizer, renderer, RECORDS, 2)
    prompts = encode_prompts(tokenizer, renderer, RECORDS)
    stops = [tokenizer.eos_token_id]
    expected_logits = list(hf_logits(cpu_model, sequences))
    expected_greedy = hf_greedy(cpu_model, tokenizer, prompts, 4, stops)
    with strict_device():
        logits = list(hf_logits(lazy_model, sequences))
        greedy = hf_greedy(lazy_model, tokenizer, prompts, 4, stops)
    for want, got in zip(expected_logits, logits, strict=True):
        assert isinstance(got, np.ndarray) and got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=TOLERANCE)
    assert greedy == expected_greedy


def test_the_task_rescored_on_the_model_device(cpu_model: Any, lazy_model: Any, tokenizer: Any, renderer: Any):
    task, console = ClassificationTask(LABELS), Console(quiet=True)
    expected = score_hf(task, cpu_model, tokenizer, renderer, RECORDS, 2, console, "cpu")
    with strict_device():
        got = score_hf(task, lazy_model, tokenizer, renderer, RECORDS, 2, console, "lazy")
    assert [p["pred"] for p in got.predictions] == [p["pred"] for p in expected.predictions]
    for a, b in zip(expected.predictions, got.predictions, strict=True):
        assert b["logprobs"] == pytest.approx(a["logprobs"], abs=TOLERANCE)


def test_a_merged_directory_is_measured_where_its_reference_ran(
    tiny_model_dir: Path, cpu_model: Any, tokenizer: Any, renderer: PromptRenderer, monkeypatch: pytest.MonkeyPatch
):
    """The tiny model's own directory stands in for a merged one: it must reproduce its reference exactly."""
    console, task = Console(quiet=True), ClassificationTask(LABELS)
    monkeypatch.setattr(verify, "GREEDY_TOKENS", 4)  # each new length is a new lazy graph: keep it short
    sequences = probe_sequences(tokenizer, renderer, RECORDS, 2)
    prompts = encode_prompts(tokenizer, renderer, RECORDS)
    stops = [tokenizer.eos_token_id]
    reference = ReferenceRun(
        sequences,
        prompts,
        list(hf_logits(cpu_model, sequences)),
        hf_greedy(cpu_model, tokenizer, prompts, verify.GREEDY_TOKENS, stops),
        score_hf(task, cpu_model, tokenizer, renderer, RECORDS, 2, console, "reference"),
        recorded=False,
        seed=0,
        stops=stops,
        device=lazy_device(),
    )
    data = EvaluatedData(splits=None, records=RECORDS, task=task, files={})  # type: ignore[arg-type]
    measured_on: list[torch.device] = []
    logits = verify.hf_logits

    def recording_logits(model: Any, sequences: list[list[int]]) -> Any:
        measured_on.append(input_device(model))
        return logits(model, sequences)

    monkeypatch.setattr(verify, "hf_logits", recording_logits)
    with strict_device():
        check, merged_logits = check_merged(tiny_model_dir, "float32", Measuring(reference, data, renderer, 2, console))
    assert [device.type for device in measured_on] == ["lazy"]
    assert check.logits is not None and check.logits.max_abs_diff < TOLERANCE
    assert check.greedy_agreement == 1.0 and check.prediction_agreement == 1.0
    assert len(merged_logits) == len(sequences)
