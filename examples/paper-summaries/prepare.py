"""Convert the ACLSum data shipped in the `aclsum` package into prompt/completion JSONL splits.

ACLSum pairs ACL papers with expert one-sentence summaries of three aspects: the challenge, the
approach and the outcome. Each (paper, aspect) becomes one example: the abstract and the aspect
in, the reference summary out. The package's own train/val/test split is kept.
Usage: python examples/paper-summaries/prepare.py [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

ASPECTS = ("challenge", "approach", "outcome")


def dataset_dir() -> Path:
    spec = importlib.util.find_spec("aclsum")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("error: the 'aclsum' package is missing: pip install --no-deps aclsum==0.1.2")
    return Path(next(iter(spec.submodule_search_locations))) / "dataset"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in ("train", "val", "test"):
        lines = (dataset_dir() / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        with (args.out / f"{split}.jsonl").open("w", encoding="utf-8") as out:
            for line in lines:
                paper = json.loads(line)
                abstract = " ".join(paper["sentences"]["abstract"])
                for aspect in ASPECTS:
                    row = {
                        "id": paper["id"],
                        "aspect": aspect,
                        "title": paper["title"],
                        "abstract": abstract,
                        "summary": paper["summary"][aspect],
                    }
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
        counts[split] = len(lines) * len(ASPECTS)
    print(f"prepare: {counts} (paper, aspect) examples in {args.out}")


if __name__ == "__main__":
    main()
