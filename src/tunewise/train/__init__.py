"""Training: LoRA on a transformers Trainer with completion-only loss and early stopping.

`train`, `TrainResult` and `TrainSummary` load on first use: sizing a run (`train.estimate`, `train.probe`'s
parent side) does not import the Trainer stack."""

from __future__ import annotations

from typing import Any

__all__ = ["TrainResult", "TrainSummary", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tunewise.train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'tunewise.train' has no attribute {name!r}")
