"""Shared by test_resume.py and test_checkpoint.py: tiny training runs through the CLI, stopped and resumed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from transformers import TrainerCallback
from typer.testing import CliRunner

from support.tiny import make_classification_rows, write_jsonl
from tunewise.cli import app
from tunewise.train.callbacks import MetricsLogger

runner = CliRunner()

# 3 epochs of 12 optimizer steps (batch 4 x accumulation 2 over 96 examples), a checkpoint every 5 steps, the loss
# logged every 3 (so checkpoints fall between logging steps), LoRA dropout 0.1 (so the dropout RNG matters).
TRAIN = {
    "lr": 2e-2,
    "batch_size": 4,
    "grad_accum": 2,
    "epochs": 3,
    "eval_steps": 5,
    "logging_steps": 3,
    "max_length": 64,
    "patience": 0,
}


def write_data(directory: Path) -> dict[str, Path]:
    rows = make_classification_rows(150, seed=1)
    return {
        "train": write_jsonl(directory / "train.jsonl", rows[:96]),
        "val": write_jsonl(directory / "val.jsonl", rows[96:120]),
        "test": write_jsonl(directory / "test.jsonl", rows[120:]),
    }


def write_train_config(directory: Path, model: Path, data: dict[str, Path], **train: Any) -> Path:
    sections = train.pop("sections", {})
    config = {
        "model": {"name": str(model)},
        "data": {"kind": "classification", **{k: str(v) for k, v in data.items()}},
        "train": {**TRAIN, **train},
        "lora": {"dropout": 0.1},
        "eval": {"batch_size": 8},
        "output": {"dir": str(directory / "runs"), "name": "resume"},
        **sections,
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def invoke(*args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def stop_at(monkeypatch: pytest.MonkeyPatch, step: int, event: str = "on_step_end") -> None:
    """Ctrl-C inside the Trainer at `step`: with "on_step_end" after the step's update and before its logging,
    evaluation and checkpoint; with "on_save" right after checkpoint `step` is written."""

    def interrupt(self: Any, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(MetricsLogger, event, interrupt, raising=False)


def no_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    for event in ("on_step_end", "on_save"):
        monkeypatch.setattr(MetricsLogger, event, getattr(TrainerCallback, event))


def runs_in(directory: Path) -> list[Path]:
    runs = directory / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


def the_run(directory: Path) -> Path:
    (run,) = runs_in(directory)
    return run


def metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def comparable(run: Path) -> list[dict[str, Any]]:
    """Every logged row without wall-clock figures and resume markers: what must be bit-identical."""
    return [
        {k: v for k, v in row.items() if k not in ("time", "train_loss") and not k.endswith(("runtime", "_second"))}
        for row in metrics(run)
        if row.get("event") != "resume"
    ]


def adapter_sha(run: Path) -> str:
    return hashlib.sha256((run / "adapter" / "adapter_model.safetensors").read_bytes()).hexdigest()
