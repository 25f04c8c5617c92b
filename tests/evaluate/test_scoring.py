from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tunewise.data.encode import Encoded
from tunewise.evaluate.scoring import choice_logprobs, completion_nll, shared_prefix_length


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


def test_shared_prefix_runs_once_and_scores_stay_exact(model):
    """Few-shot prompts share system text and solved examples: its cache is reused, padding sits mid-row."""
    prefix = list(range(30, 42))
    tails = [[5, 6, 7, 8, 9], [12, 13], [14, 15, 16], [18], [19, 20, 21, 22]]
    prompts = [prefix + t for t in tails]
    choices = [[20], [21, 22, 23]]
    assert shared_prefix_length(prompts) == len(prefix)
    calls = []
    hook = model.register_forward_pre_hook(lambda _m, _a, kw: calls.append(kw["input_ids"].shape), with_kwargs=True)
    try:
        scores = choice_logprobs(model, prompts, choices, pad_id=0, batch_size=2)
    finally:
        hook.remove()
    assert calls[0] == (1, len(prefix))  # the prefix once, then only tails and choices
    assert all(shape[1] <= max(map(len, tails)) for shape in calls[1:])
    expected = torch.tensor([[_naive(model, p, c) for c in choices] for p in prompts])
    assert torch.allclose(scores, expected, atol=1e-4), (scores, expected)


def test_shared_prefix_leaves_every_prompt_a_token_and_ignores_short_overlaps():
    assert shared_prefix_length([list(range(10)), list(range(10))]) == 9
    assert shared_prefix_length([list(range(10)), list(range(5)) + [99] * 5]) == 0  # 5 < minimum worth sharing
    assert shared_prefix_length([list(range(20))]) == 0


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
