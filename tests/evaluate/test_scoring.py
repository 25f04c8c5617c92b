"""tunewise.evaluate.scoring: label log-likelihoods and completion NLL equal plain forwards, with the shared-prefix
cache, padding, Gemma 3's sliding-window cache and the answer-only, size-bounded vocabulary projection."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from tunewise.data.encode import IGNORE_INDEX, Encoded
from tunewise.evaluate import scoring
from tunewise.evaluate.scoring import choice_logprobs, completion_nll, shared_prefix_length


@contextmanager
def input_shapes(model: Any) -> Iterator[list[tuple[int, ...]]]:
    """The `input_ids` shape of every forward call of `model` inside the block."""
    calls: list[tuple[int, ...]] = []
    hook = model.register_forward_pre_hook(lambda _m, _a, kw: calls.append(kw["input_ids"].shape), with_kwargs=True)
    try:
        yield calls
    finally:
        hook.remove()


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
    with input_shapes(model) as calls:
        scores = choice_logprobs(model, prompts, choices, pad_id=0, batch_size=2)
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


@torch.no_grad()
def _reference_nll(model, items: list[Encoded]) -> float:
    """One full-logit forward per item: the sum completion_nll must give however it batches and slices."""
    total = 0.0
    for item in items:
        logp = torch.log_softmax(model(input_ids=torch.tensor([item.input_ids])).logits[0].float(), dim=-1)
        total -= sum(float(logp[i - 1, t]) for i, t in enumerate(item.labels) if i > 0 and t != IGNORE_INDEX)
    return total


def test_completion_nll_projects_only_answer_positions_and_splits_big_batches(model, monkeypatch):
    vocab = model.config.vocab_size
    items = [
        Encoded([5, 6, 7, 8, 9, 10], [-100, -100, 7, 8, 9, 10], False),
        Encoded([9, 10, 11], [-100, 10, 11], False),
        Encoded([12, 13, 14, 15], [-100, -100, -100, 15], False),
        Encoded([16, 17], [-100, -100], False),  # nothing to score
    ]
    monkeypatch.setattr(scoring, "LOGIT_ELEMENTS", vocab * 4)  # at most 4 answer logits per forward
    shapes = []
    hook = model.register_forward_hook(lambda _m, _a, out: shapes.append(tuple(out.logits.shape)))
    try:
        total, count = completion_nll(model, items, pad_id=0, batch_size=4)
    finally:
        hook.remove()
    assert count == 7
    assert total == pytest.approx(_reference_nll(model, items), rel=1e-5)
    assert all(len(shape) == 2 and shape[0] <= 4 and shape[1] == vocab for shape in shapes)  # [N, V], never [B, T, V]
    assert sum(shape[0] for shape in shapes) == 7 and len(shapes) == 2  # 4 + 1 + 2 answer tokens: split once


def test_an_example_with_more_answer_tokens_than_the_budget_is_scored_whole_in_chunks(model, monkeypatch):
    item = Encoded([5, 6, 7, 8, 9, 10, 11], [-100, 6, 7, 8, 9, 10, 11], False)  # 6 answer tokens
    monkeypatch.setattr(scoring, "LOGIT_ELEMENTS", model.config.vocab_size * 4)  # a budget of 4 rows
    total, count = completion_nll(model, [item], pad_id=0, batch_size=4)
    assert count == 6 and total == pytest.approx(_reference_nll(model, [item]), rel=1e-5)


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from support.tiny import build_tiny_gemma

    return build_tiny_gemma(tmp_path_factory.mktemp("gemma"), sliding_window=8)


@pytest.mark.parametrize(("window", "shared"), [(8, False), (32, True)])
def test_gemma_scores_around_its_sliding_window_stay_exact(gemma_dir: Path, window: int, shared: bool):
    """A sliding window counts row positions, padding included: the shared-prefix cache (which pads between prefix
    and tail) is used only while prompt and choice fit in the window, and the scores equal plain forwards either way
    (sharing it past the window gave the padded rows wrong scores)."""
    gemma = AutoModelForCausalLM.from_pretrained(gemma_dir, sliding_window=window).eval()
    prefix = list(range(30, 40))
    tails = [[5, 6, 7, 8, 9, 10, 11, 12, 13], [12, 13], [14, 15, 16], [18]]
    prompts = [prefix + t for t in tails]
    choices = [[20], [21, 22, 23], [24, 25]]
    assert shared_prefix_length(prompts) == len(prefix) and len(prefix) + 9 + 3 <= 32
    with input_shapes(gemma) as calls:
        scores = choice_logprobs(gemma, prompts, choices, pad_id=0, batch_size=3)
    assert (calls[0] == (1, len(prefix))) is shared
    expected = torch.tensor([[_naive(gemma, p, c) for c in choices] for p in prompts])
    assert torch.allclose(scores, expected, atol=1e-4), (scores - expected).abs().max()
    items = [Encoded(p + c, [-100] * len(p) + c, False) for p in prompts for c in choices]
    total, count = completion_nll(gemma, items, pad_id=0, batch_size=4)
    assert count == 6 * 4 and total == pytest.approx(_reference_nll(gemma, items), rel=1e-5)
    assert scoring.sliding_window(gemma) == window


def test_single_token_choices_need_no_second_forward(model):
    prompts, choices = [[5, 6, 7], [8, 9]], [[20], [21]]
    with input_shapes(model) as calls:
        scores = choice_logprobs(model, prompts, choices, pad_id=0, batch_size=2)
    assert len(calls) == 1  # the prompts only: the first token's distribution scores a one-token choice
    expected = torch.tensor([[_naive(model, p, c) for c in choices] for p in prompts])
    assert torch.allclose(scores, expected, atol=1e-4)
