"""Perplexity of the reference answers: exp of the mean negative log-likelihood of the answer tokens only."""

from __future__ import annotations

import math

import torch

from tunewise.config import PromptConfig
from tunewise.data.encode import encode_records
from tunewise.data.prompt import PromptRenderer
from tunewise.evaluate.tasks.perplexity import PerplexityTask


@torch.no_grad()
def _answer_nll(model, input_ids: list[int], labels: list[int]) -> tuple[float, int]:
    logp = torch.log_softmax(model(input_ids=torch.tensor([input_ids])).logits[0].float(), dim=-1)
    scored = [(i, token) for i, token in enumerate(labels) if token != -100]
    return -sum(float(logp[i - 1, token]) for i, token in scored), len(scored)


def test_perplexity_is_over_the_answer_tokens_of_every_record(tiny_lm, completion_records):
    model, tokenizer = tiny_lm
    records = completion_records(5)
    renderer = PromptRenderer(PromptConfig(chat_template=False), "completion", tokenizer)
    output = PerplexityTask(max_length=64).evaluate(model, tokenizer, renderer, records, batch_size=2)

    items, rejects = encode_records(records, renderer, tokenizer, 64)
    assert not rejects
    totals = [_answer_nll(model, item.input_ids, item.labels) for item in items]
    nll, tokens = sum(t for t, _ in totals), sum(n for _, n in totals)
    answer_tokens = sum(len(tokenizer(renderer.answer(renderer.target(r)))["input_ids"]) for r in records)
    assert output.metrics["n_tokens"] == tokens == answer_tokens  # the prompt is context, never scored
    assert math.isclose(output.metrics["perplexity"], math.exp(nll / tokens), rel_tol=1e-4)
    assert output.predictions == []


def test_perplexity_has_no_paired_comparison():
    task = PerplexityTask(max_length=32)
    assert (task.name, task.primary_metric) == ("perplexity", "perplexity")
    assert task.compare([{"source": "a"}], [{"source": "a"}]) == {}
