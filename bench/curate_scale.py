"""Benchmark: curation at scale, local engine vs Ray engine, on synthetic corpora of growing size.

Each (engine, size) runs in its own process on a corpus from bench/synthetic_corpus.py (planted exact, near
and semantic copies, conflicts and noise), with every step but semantic dedup and cleanlab. Reported:
records/s, and peak memory as the largest sum of the resident sets of the process and all its children
(Ray's raylet, GCS, workers and object store included), sampled every 0.2 s; for the local engine also the
kernel's peak RSS of the process. Goal: the local engine's peak memory on 10x the records under 3x.
Usage: python bench/curate_scale.py [--sizes 100000 1000000] [--engines local ray]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = [
    {"step": "validate"},
    {"step": "normalize"},
    {"step": "conflicts"},
    {"step": "exact_dedup"},
    {"step": "near_dedup", "threshold": 0.8},
    {"step": "quality", "min_words": 3},
    {"step": "confidence", "min": 0.7},
    {"step": "split", "val": 0.05, "test": 0.05},
    {"step": "decontaminate", "ngram": 10},
]


def corpus(folder: Path, n: int) -> Path:
    path = folder / f"corpus-{n}.jsonl"
    if not path.is_file():
        spec = importlib.util.spec_from_file_location("synthetic_corpus", ROOT / "bench" / "synthetic_corpus.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.write_corpus(path, n, seed=1)
    return path


def child(train: Path, engine: str, out: Path) -> None:
    """One curation in this process, printing its figures as JSON on the last line."""
    import psutil
    from rich.console import Console

    from tunewise import api

    me, peak = psutil.Process(), [0]

    def sample() -> None:
        while True:
            total = 0
            for process in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a process that ended meanwhile
                    total += process.memory_info().rss
            peak[0] = max(peak[0], total)
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    config = {"data": {"kind": "classification", "train": str(train)}, "curate": {"output": str(out), "steps": STEPS}}
    started = time.perf_counter()
    result = api.curate(config, console=Console(quiet=True), engine=engine)
    seconds = time.perf_counter() - started
    figures = {
        "engine": engine,
        "records": result.n_input,
        "kept": result.n_kept,
        "seconds": round(seconds, 1),
        "records_per_s": round(result.n_input / seconds),
        "peak_tree_mib": round(peak[0] / 2**20),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "curate_scale")
    parser.add_argument("--child", nargs=3, metavar=("TRAIN", "ENGINE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1], Path(args.child[2]))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for engine in args.engines:
        for n in sorted(args.sizes):
            train = corpus(args.out, n)
            command = [sys.executable, __file__, "--child", str(train), engine, str(args.out / f"{engine}-{n}")]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{engine} on {n} records failed")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    (args.out / "curate_scale.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print("| engine | records | kept | seconds | records/s | peak memory (MiB) | vs smallest |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        smallest = next(r for r in rows if r["engine"] == row["engine"])
        growth = row["peak_tree_mib"] / smallest["peak_tree_mib"]
        print(
            f"| {row['engine']} | {row['records']:,} | {row['kept']:,} | {row['seconds']} | {row['records_per_s']:,} "
            f"| {row['peak_tree_mib']:,} | {growth:.2f}x |"
        )


if __name__ == "__main__":
    main()
