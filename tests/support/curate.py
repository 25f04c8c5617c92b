"""Builders for curation step tests: records, a deterministic stand-in embedder, a step context, verdicts."""

from __future__ import annotations

import hashlib

import numpy as np

from tunewise.curate.base import Context
from tunewise.data.records import Record


def rec(text: str, label: str = "a", line: int = 1, split: str | None = None, **extra) -> Record:
    return Record("classification", {"text": text, "label": label}, "in.jsonl", line, extra, split)


def bag_of_words(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in for sentence embeddings: hashed word counts, unit norm."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().split():
            out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def ctx(**kw) -> Context:
    return Context(seed=0, embedder=bag_of_words, **kw)


def verdicts(step, records, context=None):
    context = context or ctx()
    return [(v.record, v.category) for v in step(records, context)]


def dropped(step, records, context=None) -> dict[int, str]:
    return {r.line: c for r, c in verdicts(step, records, context) if c}
