"""A finished tiny-model run to export: trained once per test session, copied per test that changes it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from support.cli import invoke, only_run
from support.tiny import make_classification_rows, write_jsonl


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """`tunewise run` on the tiny model: a run directory with adapter/, eval.json, env.json and predictions."""
    root = tmp_path_factory.mktemp("export-run")
    rows = make_classification_rows(120, seed=3)
    data = {
        "train": write_jsonl(root / "data" / "train.jsonl", rows[:72]),
        "val": write_jsonl(root / "data" / "val.jsonl", rows[72:96]),
        "test": write_jsonl(root / "data" / "test.jsonl", rows[96:]),
    }
    config = {
        "model": {"name": str(tiny_model_dir)},
        "data": {"kind": "classification", **{k: str(v) for k, v in data.items()}},
        "train": {"lr": 2e-2, "batch_size": 8, "epochs": 1, "eval_steps": 4, "max_length": 64, "patience": 0},
        "eval": {"batch_size": 8},
        "output": {"dir": str(root / "runs")},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = invoke("run", path)
    assert result.exit_code == 0, result.output
    return only_run(root / "runs")


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    """A private copy of the finished run (same data files), for tests that damage or export into it."""
    target = tmp_path / finished_run.name
    shutil.copytree(finished_run, target, ignore=shutil.ignore_patterns("export", "checkpoints"))
    return target
