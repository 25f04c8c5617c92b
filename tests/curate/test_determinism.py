"""The same inputs and seed give byte-identical curated splits, rejects and report counts, whatever the
torch/BLAS thread settings and the hash seed of the process: curation runs embeddings on a fixed number
of torch threads and the classifier and similarities on one BLAS thread."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import yaml

from support.tiny import make_classification_rows, write_jsonl
from tunewise.curate.base import TORCH_THREADS, fixed_threads

STEPS = [
    {"step": "validate"},
    {"step": "exact_dedup"},
    {"step": "semantic_dedup", "threshold": 0.9},
    {"step": "label_errors", "folds": 3},
    {"step": "relevance", "description": "a happy or sad car trip", "top_k": 200},
    {"step": "split", "val": 0.1, "test": 0.2},
    {"step": "decontaminate", "ngram": 4},
]

# Sets torch's threads before curation starts, as a user's script or OMP_NUM_THREADS would.
SCRIPT = """
import sys, torch
torch.set_num_threads(int(sys.argv[2]))
from rich.console import Console
from tunewise.config import load_config
from tunewise.curate.stage import curate
curate(load_config(sys.argv[1]), Console(quiet=True))
"""


def _noisy_rows(n: int) -> list[dict]:
    rng = random.Random(7)
    rows = make_classification_rows(n, seed=3)
    for row in rng.sample(rows, n // 8):  # wrong labels for cleanlab to find
        row["label"] = rng.choice(["positive", "negative", "neutral"])
    return rows


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.jsonl"))}


def test_curation_is_byte_identical_across_thread_settings_and_hash_seeds(tmp_path: Path):
    train = write_jsonl(tmp_path / "train.jsonl", _noisy_rows(360))
    outputs = []
    for threads, hash_seed in ((1, "1"), (2, "2")):
        output = tmp_path / f"curated-{threads}"
        config = tmp_path / f"config-{threads}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "data": {"kind": "classification", "train": str(train)},
                    "curate": {"output": str(output), "seed": 5, "steps": STEPS},
                }
            )
        )
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(config), str(threads)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(output)
    first, second = (_digests(o) for o in outputs)
    assert set(first) == {"train.jsonl", "val.jsonl", "test.jsonl", "rejects.jsonl"}
    assert first == second
    rejects = (outputs[0] / "rejects.jsonl").read_text()
    assert "label:likely_error" in rejects  # the float-fed steps did decide something
    assert (outputs[0] / "test.jsonl").stat().st_size > 0


def test_fixed_threads_pins_torch_and_blas_and_restores_torch():
    import torch
    from threadpoolctl import threadpool_info

    torch.set_num_threads(1)
    with fixed_threads():
        assert torch.get_num_threads() == TORCH_THREADS
        assert all(pool["num_threads"] == 1 for pool in threadpool_info() if pool["user_api"] == "blas")
    assert torch.get_num_threads() == 1
