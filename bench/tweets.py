"""Prompts for the benchmarks: real tweets from the example's data when prepared, else a fixed stand-in."""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "examples" / "tweet-sentiment" / "data"


def tweets(n: int) -> list[str]:
    for name in ("curated/test.jsonl", "raw.jsonl", "test.jsonl"):
        path = DATA / name
        if path.is_file():
            return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()[:n]]
    return [f"Self-driving car number {i} took me home today and it was fine" for i in range(n)]
