from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tunewise.data.encode import Encoded
from tunewise.evaluate.scoring import choice_logprobs, completion_nll


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@torch.no_grad()
def _naive(model, prompt: list[int], choice: list[int]) -> float:
    ids = torch.tensor([prompt + choice])
    logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    return sum(float(logp[len(prompt) - 1 + j, tok]) for j, tok in enumerate(choice))


def test_cached_batched_choice_scores_equal_one_forward_per_choice(model):
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17], [18]]
    choices = [[20], [21, 22, 23], [24, 25]]  # different lengths exercise the padding
    scores = choice_logprobs(model, prompts, choices, pad_id=0, batch_size=3)
    expected = torch.tensor([[_naive(model, p, c) for c in choices] for p in prompts])
    assert torch.allclose(scores, expected, atol=1e-4), (scores, expected)


@torch.no_grad()
def test_completion_nll_counts_only_answer_tokens(model):
    items = [Encoded([5, 6, 7, 8], [-100, -100, 7, 8], False), Encoded([9, 10, 11], [-100, 10, 11], False)]
    total, count = completion_nll(model, items, pad_id=0, batch_size=2)
    assert count == 4
    expected = 0.0
    for item in items:
        logp = torch.log_softmax(model(input_ids=torch.tensor([item.input_ids])).logits[0], dim=-1)
        expected -= sum(float(logp[i - 1, t]) for i, t in enumerate(item.labels) if t != -100)
    assert total == pytest.approx(expected, abs=1e-3)
