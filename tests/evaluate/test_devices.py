"""Every evaluation path runs on the model's device: the tiny model on torch's lazy device (a second device on a
CPU-only machine) completes, with no torch call mixing its tensors with CPU ones, and scores what it scores on the
CPU. Covers label scoring (with and without the shared prefix cache), completion NLL, batched generation, the
classification (both modes), generative, perplexity and code tasks, and `tunewise predict`."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from support.devices import on_lazy, strict_device
from support.tiny import WORDS, sentence, write_jsonl
from tunewise.config import PromptConfig, load_config
from tunewise.data.encode import Encoded, encode_prompts
from tunewise.data.prompt import PromptRenderer
from tunewise.data.records import Record
from tunewise.evaluate.code_permission import CodeGrant
from tunewise.evaluate.generate import generate
from tunewise.evaluate.predict import predict
from tunewise.evaluate.sandbox import ExecResult
from tunewise.evaluate.scoring import choice_logprobs, completion_nll, shared_prefix_length
from tunewise.evaluate.tasks import ClassificationTask, EvalOutput, PerplexityTask
from tunewise.evaluate.tasks.code import CodeTask
from tunewise.evaluate.tasks.generative import GenerativeTask

LABELS = sorted(WORDS)
TOLERANCE = 1e-4  # lazy (TorchScript) and eager CPU kernels differ in float rounding only


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def cpu_model(tiny_model_dir: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def lazy_model(tiny_model_dir: Path) -> Any:
    return on_lazy(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval())


def _classification(n: int) -> list[Record]:
    rng = random.Random(0)
    return [
        Record("classification", {"text": sentence(LABELS[i % 3], rng), "label": LABELS[i % 3]}, "t.jsonl", i + 1)
        for i in range(n)
    ]


def _completions(n: int) -> list[Record]:
    rng = random.Random(1)
    fields = lambda: {"prompt": sentence(rng.choice(LABELS), rng), "completion": sentence(rng.choice(LABELS), rng)}  # noqa: E731
    return [Record("completion", fields(), "c.jsonl", i + 1) for i in range(n)]


def _on_both(cpu_model: Any, lazy_model: Any, run: Any) -> tuple[Any, Any]:
    """`run(model)` on the CPU model, then on the lazy one with device mixing refused."""
    expected = run(cpu_model)
    with strict_device():
        return expected, run(lazy_model)


def _assert_close(expected: Any, got: Any, where: str = "") -> None:
    """Equal, floats within TOLERANCE, through nested dicts and lists."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), where
        for key, value in expected.items():
            _assert_close(value, got[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(expected, got, strict=True)):
            _assert_close(a, b, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, abs=TOLERANCE), where
    else:
        assert got == expected, where


def _same_output(expected: EvalOutput, got: EvalOutput) -> None:
    _assert_close(expected.metrics, got.metrics, "metrics")
    _assert_close(expected.predictions, got.predictions, "predictions")


@pytest.mark.parametrize("shared", [False, True], ids=["no-shared-prefix", "shared-prefix-cache"])
def test_choice_logprobs_on_the_model_device(cpu_model: Any, lazy_model: Any, shared: bool):
    prefix = list(range(30, 42)) if shared else []
    prompts = [prefix + tail for tail in ([5, 6, 7, 8, 9], [12, 13], [14, 15, 16], [18])]
    choices = [[20], [21, 22, 23], [24, 25]]  # several tokens: the continuation pass and its cache run too
    assert (shared_prefix_length(prompts) > 0) == shared
    expected, got = _on_both(cpu_model, lazy_model, lambda m: choice_logprobs(m, prompts, choices, 0, batch_size=3))
    assert got.device.type == "cpu"  # the scores come back to the host, as before
    assert torch.allclose(got, expected, atol=TOLERANCE), (got, expected)


def test_completion_nll_on_the_model_device(cpu_model: Any, lazy_model: Any):
    items = [
        Encoded([5, 6, 7, 8, 9], [-100, -100, 7, 8, 9], False),
        Encoded([10, 11, 12], [-100, 11, 12], False),
        Encoded([13, 14], [-100, -100], False),  # nothing to score in this one
    ]
    (want, want_count), (got, count) = _on_both(cpu_model, lazy_model, lambda m: completion_nll(m, items, 0, 2))
    assert count == want_count == 5
    assert got == pytest.approx(want, abs=TOLERANCE)


def test_batched_generation_on_the_model_device(cpu_model: Any, lazy_model: Any, tokenizer: Any):
    prompts = [[5, 6, 7, 8, 9], [12, 13], [14, 15, 16]]  # different lengths: left padding in one batch

    def run(model: Any) -> list[str]:
        return generate(model, tokenizer, prompts, max_new_tokens=4, batch_size=2, stop=["zz"])

    expected, got = _on_both(cpu_model, lazy_model, run)
    assert got == expected


@pytest.mark.parametrize("mode", ["likelihood", "generate"])
def test_classification_task_on_the_model_device(cpu_model: Any, lazy_model: Any, tokenizer: Any, mode: str):
    """`task.evaluate` is also the validation scorer of training: this covers the metric computed there."""
    records = _classification(4)
    renderer = PromptRenderer(PromptConfig(), "classification", tokenizer, LABELS)
    if mode == "likelihood":  # the task's prompts share the instruction: the prefix cache is in play
        assert shared_prefix_length(encode_prompts(tokenizer, renderer, records)) > 0
    task = ClassificationTask(LABELS, mode, max_new_tokens=3)
    expected, got = _on_both(cpu_model, lazy_model, lambda m: task.evaluate(m, tokenizer, renderer, records, 3))
    _same_output(expected, got)


def test_generative_task_with_reference_perplexity_on_the_model_device(cpu_model: Any, lazy_model: Any, tokenizer: Any):
    """Summarization, QA and generation share this path (generation, then the references' NLL); only the text
    metric differs."""
    records = _completions(3)
    renderer = PromptRenderer(PromptConfig(chat_template=False), "completion", tokenizer)
    task = GenerativeTask("summarization", 3, [], 64)
    expected, got = _on_both(cpu_model, lazy_model, lambda m: task.evaluate(m, tokenizer, renderer, records, 2))
    assert "reference_perplexity" in got.metrics
    _same_output(expected, got)


def test_perplexity_task_on_the_model_device(cpu_model: Any, lazy_model: Any, tokenizer: Any):
    records = _completions(3)
    renderer = PromptRenderer(PromptConfig(chat_template=False), "completion", tokenizer)
    task = PerplexityTask(64)
    expected, got = _on_both(cpu_model, lazy_model, lambda m: task.evaluate(m, tokenizer, renderer, records, 2))
    _same_output(expected, got)


def test_code_task_generates_on_the_model_device(
    cpu_model: Any, lazy_model: Any, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
):
    """Generation only: the programs are not run (what runs them has its own tests)."""
    monkeypatch.setattr(
        "tunewise.evaluate.tasks.code.run_program",
        lambda program, timeout, allow_unconfined: ExecResult("passed" if len(program) % 2 else "failed", 0.0),
    )
    rng = random.Random(2)
    records = [
        Record(
            "completion",
            {"prompt": f"def f{i}():\n    # {sentence('neutral', rng)}\n", "completion": "    return 1\n"},
            "code.jsonl",
            i + 1,
            extra={"test": "def check(f):\n    assert f() == 1\n", "entry_point": f"f{i}"},
        )
        for i in range(2)
    ]
    renderer = PromptRenderer(PromptConfig(chat_template=False), "completion", tokenizer)
    task = CodeTask(3, [], CodeGrant(unconfined=True), samples=2, k=[1, 2])  # samples=2: the sampled path
    expected, got = _on_both(cpu_model, lazy_model, lambda m: task.evaluate(m, tokenizer, renderer, records, 2))
    _same_output(expected, got)


@pytest.mark.parametrize("kind", ["classification", "completion"])
def test_predict_on_the_model_device(
    tmp_path: Path, write_config: Any, lazy_model: Any, cpu_model: Any, monkeypatch: pytest.MonkeyPatch, kind: str
):
    """`tunewise predict` scores or generates with the model wherever the loader put it."""
    import tunewise.models

    rows = [{"text": "the ride was great"}, {"text": "awful trip today"}, {"text": "plain car"}]
    if kind == "completion":
        rows = [{"prompt": row["text"]} for row in rows]
    inputs = write_jsonl(tmp_path / "new.jsonl", rows)
    if kind == "classification":
        config = load_config(write_config(data={"labels": LABELS}))
    else:
        data = {"kind": "completion", "train": str(inputs), "val": None, "test": None}
        config = load_config(write_config(data=data, eval={"max_new_tokens": 3, "batch_size": 2}))
    load = tunewise.models.load_model
    outputs = {}
    for name, model in (("cpu", cpu_model), ("lazy", lazy_model)):

        def loaded_on(cfg: Any, model: Any = model) -> Any:
            loaded = load(cfg)
            loaded.model = model  # the same weights, on the device under test
            return loaded

        monkeypatch.setattr(tunewise.models, "load_model", loaded_on)
        with strict_device() if name == "lazy" else torch.no_grad():
            path = predict(config, inputs, tmp_path / f"{name}.jsonl", None, Console(quiet=True))
        outputs[name] = path.read_text().splitlines()
    if kind == "completion":
        assert outputs["lazy"] == outputs["cpu"]
    else:
        import json

        cpu_rows = [json.loads(line) for line in outputs["cpu"]]
        lazy_rows = [json.loads(line) for line in outputs["lazy"]]
        assert [r["pred"] for r in lazy_rows] == [r["pred"] for r in cpu_rows]
        for a, b in zip(cpu_rows, lazy_rows, strict=True):
            assert b["logprobs"] == pytest.approx(a["logprobs"], abs=2e-4)  # rounded to 4 places
