"""End to end on a tiny random Gemma 3 base model (no chat template, sliding-window layers): `tunewise.api.run`
with `prompt.chat_template: auto` renders the plain prompt, trains on the packed path with the sliding window
applied per example, and evaluates the base and the fine-tuned model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from support.tiny import build_tiny_gemma, make_classification_rows, write_jsonl
from tunewise import api
from tunewise.train import packing

WINDOW = 8
SYSTEM = "Label the sentiment."
LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gemma(tmp_path_factory.mktemp("tiny-gemma"), sliding_window=WINDOW)


def write_gemma_config(tmp_path: Path, gemma_dir: Path) -> Path:
    rows = make_classification_rows(72, seed=4)
    data = {
        name: str(write_jsonl(tmp_path / "data" / f"{name}.jsonl", part))
        for name, part in (("train", rows[:48]), ("val", rows[48:60]), ("test", rows[60:]))
    }
    config = {
        "model": {"name": str(gemma_dir)},
        "data": {"kind": "classification", **data},
        "prompt": {"chat_template": "auto", "system": SYSTEM},
        "train": {"lr": 2e-2, "batch_size": 8, "max_steps": 8, "eval_steps": 4, "logging_steps": 1, "patience": 0},
        "eval": {"batch_size": 8},
        "output": {"dir": str(tmp_path / "runs")},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@torch.no_grad()
def hand_made_scores(model_dir: Path, text: str) -> list[float]:
    """A base model's label log-likelihoods from a prompt built by hand: <bos>, the system text and a blank line,
    the default classification template, then ' label<eos>' as the answer."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt = f"{SYSTEM}\n\nClassify the text as one of: {', '.join(LABELS)}.\n\nText: {text}"
    prompt_ids = [tokenizer.bos_token_id, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    scores = []
    for label in LABELS:
        answer = tokenizer(f" {label}<eos>", add_special_tokens=False)["input_ids"]
        assert answer[-1] == tokenizer.eos_token_id
        logp = torch.log_softmax(model(input_ids=torch.tensor([prompt_ids + answer])).logits[0], dim=-1)
        scores.append(sum(float(logp[len(prompt_ids) - 1 + j, t]) for j, t in enumerate(answer)))
    return scores


def test_a_base_gemma_runs_end_to_end_on_the_plain_prompt(gemma_dir: Path, tmp_path: Path, monkeypatch) -> None:
    seen: list[tuple[int, Any]] = []
    original = packing._causal_sdpa

    def spy(query: torch.Tensor, *args: Any) -> torch.Tensor:
        seen.append((query.shape[2], args[2]))  # example length, sliding window (None on the full layer)
        return original(query, *args)

    monkeypatch.setattr(packing, "_causal_sdpa", spy)
    result = api.run(write_gemma_config(tmp_path, gemma_dir), console=Console(quiet=True))

    # trained on the packed path, the sliding window applied to examples longer than it
    assert any(window == WINDOW and length > WINDOW for length, window in seen)
    assert any(window is None for _, window in seen)
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert len(losses) == 8 and all(loss == loss for loss in losses) and losses[-1] < losses[0]

    # evaluated before and after, on the same 12 test records
    assert {s.model for s in result.scores} == {"base", "fine-tuned"} and result.train["steps"] == 8
    assert all(0.0 <= result.score(model) <= 1.0 for model in ("base", "fine-tuned"))
    report = json.loads((result.run_dir / "eval.json").read_text())
    assert report["models"]["base"]["n"] == report["models"]["fine-tuned"]["n"] == 12

    # the base model was scored on the plain prompt: system text first, <bos> added, the answer ending in <eos>
    predictions = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    first = next(p for p in predictions if p["model"] == "base" and p["source"].endswith("test.jsonl:1"))
    text = json.loads((tmp_path / "data" / "test.jsonl").read_text().splitlines()[0])["text"]
    expected = hand_made_scores(gemma_dir, text)
    assert [first["logprobs"][label] for label in LABELS] == pytest.approx(expected, abs=1e-3)
