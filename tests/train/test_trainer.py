"""train.trainer: gradient checkpointing really recomputes each layer in backward."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from support.features import make_features
from tunewise.config import Config
from tunewise.data.encode import Encoded
from tunewise.train.trainer import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradient_checkpointing_recomputes_each_layer(
    tiny_model_dir: Path, tmp_path: Path, checkpointing: bool
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    mlp_runs_with_grad: list[bool] = []
    model.model.layers[0].mlp.register_forward_pre_hook(lambda *_: mlp_runs_with_grad.append(torch.is_grad_enabled()))
    items = [Encoded(f["input_ids"], f["labels"], False) for f in make_features(12, tokenizer.vocab_size, seed=2)]
    cfg = Config(
        data={"train": str(tmp_path / "unused.jsonl")},
        train={
            "max_steps": 2,
            "batch_size": 4,
            "eval_steps": 2,
            "patience": 0,
            "gradient_checkpointing": checkpointing,
        },
    )
    summary = train(model, tokenizer, cfg, items[:8], items[8:], tmp_path, Console(file=io.StringIO())).summary
    # 2 training forwards; checkpointing replays each layer once more in backward
    assert sum(mlp_runs_with_grad) == (4 if checkpointing else 2)
    # what the training loop took, for comparison with `tunewise estimate`
    assert summary.train_seconds > 0 and summary.peak_memory_gib > 0.1
