"""The prompts a run is evaluated with: the configured one and each `prompt.variants` entry, few-shot included."""

from __future__ import annotations

import random
from typing import Any

from tunewise.config import Config
from tunewise.data.prompt import PromptRenderer
from tunewise.data.records import Record
from tunewise.data.splits import DataSplits

DEFAULT_PROMPT = "default"


def prompt_variants(config: Config, tokenizer: Any, splits: DataSplits) -> dict[str, PromptRenderer]:
    """The configured prompt and each `prompt.variants` entry; few-shot examples come from train, seeded."""
    settings = {DEFAULT_PROMPT: config.prompt, **{n: config.prompt.variant(n) for n in config.prompt.variants}}
    renderers = {}
    for name, prompt in settings.items():
        shots = draw_shots(splits.train, prompt.few_shot, config.train.seed, splits.labels)
        changed = config.prompt.variants.get(name) or {}
        field = f"prompt.variants.{name}.template" if "template" in changed else "prompt.template"
        renderers[name] = PromptRenderer(prompt, config.data.kind, tokenizer, splits.labels, shots, field)
    return renderers


def draw_shots(train: list[Record], k: int, seed: int, labels: list[str]) -> list[Record]:
    """k solved examples from train, the same for every question (so their KV cache is shared).

    For classification they cycle through the labels, then are shuffled: random shots that happen to
    share a label teach the base model that label, not the task (Zhao et al., 2021).
    """
    rng = random.Random(seed)
    if not labels:
        return rng.sample(train, min(k, len(train)))
    labels = rng.sample(labels, len(labels))  # with k < labels, which labels are shown is seeded, not alphabetical
    pools = {label: [r for r in train if r.label == label] for label in labels}
    for pool in pools.values():
        rng.shuffle(pool)
    shots: list[Record] = []
    while len(shots) < min(k, len(train)):
        for label in labels:
            if pools[label] and len(shots) < k:
                shots.append(pools[label].pop())
    rng.shuffle(shots)
    return shots
