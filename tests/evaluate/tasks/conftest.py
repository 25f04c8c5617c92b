"""The tiny model and small record sets the evaluation task tests share."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from support.tiny import WORDS, sentence
from tunewise.data.records import Record

LABELS = sorted(WORDS)


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir: Path) -> tuple[Any, Any]:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def _classification_records(n: int, seed: int = 0) -> list[Record]:
    rng = random.Random(seed)
    gold = [LABELS[i % len(LABELS)] for i in range(n)]
    return [
        Record("classification", {"text": sentence(g, rng), "label": g}, "t.jsonl", i + 1) for i, g in enumerate(gold)
    ]


def _completion_records(n: int, seed: int = 0) -> list[Record]:
    rng = random.Random(seed)
    return [
        Record(
            "completion",
            {"prompt": sentence(rng.choice(LABELS), rng), "completion": sentence(rng.choice(LABELS), rng)},
            "c.jsonl",
            i + 1,
        )
        for i in range(n)
    ]


@pytest.fixture
def classification_records() -> Callable[..., list[Record]]:
    """`n` classification records (text, label), the labels in turn, sentences seeded by `seed`."""
    return _classification_records


@pytest.fixture
def completion_records() -> Callable[..., list[Record]]:
    """`n` completion records (prompt, completion) of seeded sentences."""
    return _completion_records
