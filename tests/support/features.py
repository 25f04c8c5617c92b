"""Random training features (prompt tokens masked) for packing and collation tests."""

from __future__ import annotations

import random
from typing import Any

from tunewise.data.encode import IGNORE_INDEX


def make_features(n: int, vocab: int, seed: int = 0) -> list[dict[str, Any]]:
    """Random prompts (label -100) followed by trained completions, of varied lengths."""
    rng = random.Random(seed)
    features = []
    for _ in range(n):
        prompt, completion = rng.choice([0, *range(2, 15)]), rng.randint(1, 6)  # 0: every token trained
        ids = [rng.randrange(3, vocab) for _ in range(prompt + completion)]
        features.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return features
