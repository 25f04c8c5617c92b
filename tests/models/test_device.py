"""models.device: `model.device` resolution, and where a forward pass's inputs must go."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tunewise.config import ModelConfig
from tunewise.errors import ModelLoadError
from tunewise.models import device as devices
from tunewise.models.device import input_device, resolve_device, to_device
from tunewise.models.loader import load_model


def test_auto_is_the_cpu_without_an_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "accelerator", lambda: None)
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_takes_the_accelerator_when_there_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "accelerator", lambda: "cuda")
    assert resolve_device("auto") == torch.device("cuda")


def test_an_absent_accelerator_asked_for_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "accelerator", lambda: None)
    with pytest.raises(ModelLoadError, match="model.device: cuda.*set model.device: cpu"):
        resolve_device("cuda")
    with pytest.raises(ModelLoadError, match="model.device: mps"):
        resolve_device("mps")


def test_inputs_go_where_the_input_embeddings_live(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert input_device(model) == torch.device("cpu")
    model.to("meta")  # a device other than the CPU, without data
    assert input_device(model) == torch.device("meta")
    moved = to_device({"input_ids": torch.ones(1, 2, dtype=torch.long), "note": "kept"}, input_device(model))
    assert moved["input_ids"].device == torch.device("meta") and moved["note"] == "kept"


def test_the_loader_places_the_model_on_the_configured_device(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tunewise.models.loader as loader

    monkeypatch.setattr(loader, "resolve_device", lambda setting: torch.device("meta"))
    loaded = load_model(ModelConfig(name=str(tiny_model_dir), device="cpu"))
    assert {p.device.type for p in loaded.model.parameters()} == {"meta"}
