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


def test_a_checkpoint_of_another_number_of_processes_is_not_resumed(tmp_path: Path) -> None:
    import json

    from tunewise.errors import TunewiseError
    from tunewise.train.callbacks import MetricsLogger
    from tunewise.train.checkpoint import REQUIRED, STATE_FILE, commit, rng_files
    from tunewise.train.trainer import _resume_point

    staged = tmp_path / "checkpoints" / ".tmp-1" / "checkpoint-5"
    staged.mkdir(parents=True)
    for name in (*REQUIRED, *rng_files(2), "adapter_model.safetensors"):
        (staged / name).write_bytes(b"x")
    (staged / STATE_FILE).write_text(json.dumps({"step": 5, "metrics_bytes": 0, "world_size": 2}))
    commit(staged, tmp_path / "checkpoints" / "checkpoint-5", 5, world_size=2)
    logger = MetricsLogger(tmp_path / "metrics.jsonl")
    with pytest.raises(
        TunewiseError,
        match=r"checkpoint-5 was written by 2 training processes, this run has 1: .*resume it in 2 \(--nproc 2\)",
    ):
        _resume_point(tmp_path, logger, Console(file=io.StringIO()), world=1)
    assert (
        _resume_point(tmp_path, logger, Console(file=io.StringIO()), world=2)
        == tmp_path / "checkpoints" / "checkpoint-5"
    )


def test_optimizer_steps_count_the_batches_of_every_process(tmp_path: Path) -> None:
    from tunewise.train.estimate import planned_steps
    from tunewise.train.trainer import global_steps_config

    cfg = Config(data={"train": str(tmp_path / "unused.jsonl")}, train={"batch_size": 4, "grad_accum": 2, "epochs": 3})
    assert planned_steps(96, global_steps_config(cfg, 1)) == 36  # 4 x 2 per step
    assert planned_steps(96, global_steps_config(cfg, 2)) == 18  # 4 x 2 on each of 2 ranks
    assert global_steps_config(cfg, 2).train.grad_accum == 4 and cfg.train.grad_accum == 2


def test_a_sharded_run_saves_the_restored_checkpoints_adapter_which_the_trainer_gathered(tmp_path: Path) -> None:
    from tunewise.train.trainer import _save_adapter

    restored, staged = tmp_path / "checkpoint-6", tmp_path / "adapter"
    restored.mkdir()
    staged.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json", "optimizer.pt"):
        (restored / name).write_text(name)

    class Sharded:  # rank 0's PEFT model holds a shard only: saving it would write a fraction of the weights
        def save_pretrained(self, path: Path) -> None:
            raise AssertionError("saved rank 0's shard")

    cfg = Config(data={"train": str(tmp_path / "unused.jsonl")}, train={"fsdp": True})
    _save_adapter(Sharded(), cfg, 2, restored, staged)
    assert sorted(p.name for p in staged.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert (staged / "adapter_model.safetensors").read_text() == "adapter_model.safetensors"
