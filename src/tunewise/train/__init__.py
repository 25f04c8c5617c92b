"""Training: LoRA on a transformers Trainer with completion-only loss and early stopping."""

from tunewise.train.trainer import TrainResult, TrainSummary, train

__all__ = ["TrainResult", "TrainSummary", "train"]
