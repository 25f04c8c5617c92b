"""QLoRA through tunewise's own training stage: a bitsandbytes-quantized tiny base, evaluated first as a run does,
trains LoRA on the packed path (loss falls), the fused LoRA setting falls back to PEFT's forward on quantized layers
(same losses either way), and the classification task evaluates the quantized base with its adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

from support.tiny import build_tiny_model, make_classification_rows
from tunewise.config import Config, load_config
from tunewise.data.prompt import PromptRenderer
from tunewise.data.records import Record
from tunewise.data.splits import DataSplits
from tunewise.evaluate.tasks import task_for
from tunewise.models import load_model
from tunewise.pipeline.train_stage import encode_training_data, train_model
from tunewise.track import RunDir
from tunewise.train.fused_lora import FusedLoraLinear

bnb = pytest.importorskip("bitsandbytes")
pytestmark = pytest.mark.usefixtures("one_torch_thread")
STEPS = 20


@pytest.fixture(scope="module")
def tiny64_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-64"), hidden_size=64)


def splits() -> DataSplits:
    rows = make_classification_rows(64, seed=3)
    records = [
        Record("classification", {"text": r["text"], "label": r["label"]}, "mem.jsonl", i + 1)
        for i, r in enumerate(rows)
    ]
    labels = sorted({r["label"] for r in rows})
    return DataSplits(train=records[:40], val=records[40:52], test=records[52:], labels=labels, rejects=[])


def quantized_run(
    write_config: Any, model_dir: Path, run_dir: Path, quantize: str = "4bit", lora: dict | None = None, **train: Any
) -> dict:
    """A run's order on a quantized base: load, score the base (eval mode), train, score the fine-tune."""
    settings = {"max_steps": STEPS, "eval_steps": 10, "logging_steps": 1, "batch_size": 8, "lr": 2e-2, **train}
    model = {"name": str(model_dir), "quantize": quantize, "device": "cpu"}  # the CPU kernels of bitsandbytes
    config: Config = load_config(write_config(model=model, train=settings, lora=lora or {}))
    loaded = load_model(config.model)
    data_splits = splits()
    renderer = PromptRenderer(config.prompt, "classification", loaded.tokenizer, data_splits.labels)
    task = task_for("classification", data_splits.labels, config.eval, config.train.max_length)
    base = task.evaluate(loaded.model, loaded.tokenizer, renderer, data_splits.test, config.eval.batch_size)
    run = RunDir(run_dir)
    run.path.mkdir(parents=True)
    console = Console(quiet=True)
    data = encode_training_data(config, data_splits, renderer, loaded.tokenizer, run, console)
    result = train_model(config, loaded.model, loaded.tokenizer, data, run, console)
    tuned = task.evaluate(result.model, loaded.tokenizer, renderer, data_splits.test, config.eval.batch_size)
    rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    return {
        "losses": [row["loss"] for row in rows if "loss" in row],
        "model": result.model,
        "base": base,
        "tuned": tuned,
        "adapter": result.adapter_dir,
    }


@pytest.fixture(scope="module")
def fused_4bit_run(write_config_module: Any, tiny64_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return quantized_run(write_config_module, tiny64_dir, tmp_path_factory.mktemp("qlora") / "run")


@pytest.fixture(scope="module")
def write_config_module(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """write_config's tiny-model config (conftest), for module-scoped runs: data and output in a module folder."""
    import yaml

    root = tmp_path_factory.mktemp("qlora-config")

    def write(**sections: dict) -> Path:
        config = {
            "data": {"kind": "classification", "train": str(root / "unused.jsonl")},
            "train": {"max_length": 64, "patience": 0},
            "eval": {"batch_size": 8},
            "output": {"dir": str(root / "runs")},
        }
        for name, values in sections.items():
            config.setdefault(name, {}).update(values)
        path = root / f"config-{len(list(root.glob('config-*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    return write


def test_4bit_lora_trains_on_the_packed_path_and_evaluates(fused_4bit_run: dict) -> None:
    losses = fused_4bit_run["losses"]
    assert len(losses) == STEPS and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5  # the loss falls
    layers = [m for m in fused_4bit_run["model"].modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 14  # the base stayed quantized throughout: LoRA trained on NF4 weights
    for report in (fused_4bit_run["base"], fused_4bit_run["tuned"]):
        assert 0.0 <= report.metrics["macro_f1"] <= 1.0 and len(report.predictions) == 12
    assert fused_4bit_run["tuned"].metrics["accuracy"] >= fused_4bit_run["base"].metrics["accuracy"]
    assert (fused_4bit_run["adapter"] / "adapter_model.safetensors").is_file()


def test_fused_lora_leaves_quantized_layers_to_peft_with_the_same_losses(
    fused_4bit_run: dict, write_config_module: Any, tiny64_dir: Path, tmp_path: Path
) -> None:
    """train.fused_lora (on by default) changes no quantized layer: PEFT's bitsandbytes LoRA layers dequantize in
    their own forward, which the in-place update over a plain nn.Linear does not replace."""
    assert not any(isinstance(m, FusedLoraLinear) for m in fused_4bit_run["model"].modules())
    plain = quantized_run(write_config_module, tiny64_dir, tmp_path / "run", fused_lora=False)
    assert plain["losses"] == fused_4bit_run["losses"]


def test_packed_and_padded_4bit_training_agree(write_config_module: Any, tiny64_dir: Path, tmp_path: Path) -> None:
    """Packing (on by default) trains the quantized base with the padded path's steps. LoRA dropout off: its masks
    depend on the batch's shape, which packing changes."""
    runs = [
        quantized_run(write_config_module, tiny64_dir, tmp_path / name, lora={"dropout": 0.0}, max_steps=3, packing=on)
        for name, on in (("packed", True), ("padded", False))
    ]
    assert runs[0]["losses"] == pytest.approx(runs[1]["losses"], abs=1e-4)
    packed, padded = (dict(run["model"].named_parameters()) for run in runs)
    worst = max((packed[k] - padded[k]).abs().max().item() for k in packed if "lora_" in k)
    assert worst < 1e-4


@pytest.mark.parametrize(
    ("quantize", "train"), [("8bit", {}), ("4bit", {"gradient_checkpointing": True})], ids=["8bit", "4bit-checkpointed"]
)
def test_8bit_and_checkpointed_4bit_training_lower_the_loss(
    write_config_module: Any, tiny64_dir: Path, tmp_path: Path, quantize: str, train: dict
) -> None:
    losses = quantized_run(write_config_module, tiny64_dir, tmp_path / "run", quantize, max_steps=10, **train)["losses"]
    assert len(losses) == 10 and losses[-1] < 0.8 * losses[0]
