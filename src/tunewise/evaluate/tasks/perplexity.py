"""Perplexity of the reference answers: a secondary figure for every task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunewise.data.encode import encode_records
from tunewise.evaluate.metrics import perplexity_metrics
from tunewise.evaluate.scoring import completion_nll
from tunewise.evaluate.stats import Difference
from tunewise.evaluate.tasks.base import EvalOutput


@dataclass
class PerplexityTask:
    """Perplexity of the reference answers: a fluency figure, never the only one a task should report."""

    max_length: int
    name: str = "perplexity"
    primary_metric: str = "perplexity"

    def evaluate(self, model, tokenizer, renderer, records, batch_size, progress=None, description=""):
        items, _ = encode_records(records, renderer, tokenizer, self.max_length)
        total, count = completion_nll(model, items, tokenizer.pad_token_id, batch_size)
        return EvalOutput(perplexity_metrics(total, count))

    def compare(self, a: list[dict[str, Any]], b: list[dict[str, Any]], seed: int = 0) -> dict[str, Difference]:
        return {}  # corpus perplexity has no per-example scores to resample here
