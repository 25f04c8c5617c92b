"""Where the model runs (`model.device`) and how tensors follow it.

Every tensor tunewise builds for a forward pass goes to `input_device(model)`: the device of the input embeddings,
which is the model's device, or the first shard's when a loader spreads layers over several devices. Tensors derived
from outputs follow the outputs (`logits.device`), never an assumed device."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from tunewise.errors import ModelLoadError


def accelerator() -> str | None:
    """The accelerator this process can use: cuda, then mps; None on a CPU-only machine."""
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return None


def resolve_device(setting: str) -> torch.device:
    """`model.device` as a torch device; an accelerator that is asked for and absent is one clear error."""
    if setting == "auto":
        return torch.device(accelerator() or "cpu")
    if setting == "cpu":
        return torch.device("cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            "model.device: cuda, but this torch sees no CUDA device (torch.cuda.is_available() is False); "
            "install a CUDA build of torch or set model.device: cpu"
        )
    if setting == "mps" and accelerator() != "mps":
        raise ModelLoadError("model.device: mps, but MPS is not available on this machine; set model.device: cpu")
    return torch.device(setting)


def input_device(model: Any) -> torch.device:
    """Where a forward pass's inputs must live: the input embeddings' device."""
    embeddings = getattr(model, "get_input_embeddings", lambda: None)()
    weight = getattr(embeddings, "weight", None)
    if isinstance(weight, torch.Tensor):
        return weight.device
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else torch.device("cpu")


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """`batch` with every tensor moved to `device` (other values as they are)."""
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
