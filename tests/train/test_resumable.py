"""train.resumable: what `ResumableTrainer` adds to transformers' Trainer. Checkpoints are staged and committed
(verified, with the state a resume needs), a mid-epoch resume continues bit-exactly (data order and the logged loss
included), callbacks get their state back, a best checkpoint that fails verification is not loaded, and a failed
checkpoint write says where training can continue from."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

import tunewise.train.resumable as resumable
from support.features import make_features
from tunewise.config import Config
from tunewise.data.encode import Encoded
from tunewise.errors import TunewiseError
from tunewise.train.checkpoint import read_state, verify_checkpoint
from tunewise.train.collate import PaddingCollator
from tunewise.train.resumable import ResumableTrainer
from tunewise.train.sampling import EpochSeededSampler
from tunewise.train.trainer import to_dataset, training_arguments

pytestmark = pytest.mark.usefixtures("one_torch_thread")
STEPS = 4  # 12 examples in batches of 4: 3 steps an epoch, so a checkpoint at step 2 is mid-epoch


class StepCounter(TrainerCallback):
    """A callback with state of its own, which the checkpoint keeps (`export_state`) and a resume restores."""

    def __init__(self) -> None:
        self.steps, self.loaded = 0, None

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.steps += 1

    def export_state(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state(self, state: dict[str, Any]) -> None:
        self.loaded, self.steps = state, state["steps"]


def make_trainer(model_dir: Path, out: Path, callbacks: list[Any] | None = None) -> ResumableTrainer:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), lora)
    features = make_features(16, tokenizer.vocab_size, seed=7)
    items = [Encoded(f["input_ids"], f["labels"], False) for f in features]
    train = {"max_steps": STEPS, "batch_size": 4, "eval_steps": 2, "logging_steps": 3, "patience": 0, "lr": 2e-2}
    cfg = Config(data={"train": str(out / "unused.jsonl")}, train=train)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").write_text('{"step": 0}\n')
    return ResumableTrainer(
        model=model,
        args=training_arguments(cfg, out / "checkpoints", STEPS),
        train_dataset=to_dataset(items[:12]),
        eval_dataset=to_dataset(items[12:]),
        data_collator=PaddingCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=callbacks or [],
        metrics_path=out / "metrics.jsonl",
        console=Console(file=io.StringIO(), width=200),
    )


def lora_weights(trainer: ResumableTrainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_" in k}


def logged_losses(trainer: ResumableTrainer) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in trainer.state.log_history if "loss" in row}


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ResumableTrainer, Path]:
    out = tmp_path_factory.mktemp("reference")
    trainer = make_trainer(tiny_model_dir, out, [StepCounter()])
    trainer.train()
    return trainer, out


def test_checkpoints_are_committed_complete_with_the_state_a_resume_needs(reference: tuple) -> None:
    trainer, out = reference
    checkpoints = out / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2", "checkpoint-4"]  # no staging left
    for step in (2, 4):
        assert verify_checkpoint(checkpoints / f"checkpoint-{step}") is None
        state = read_state(checkpoints / f"checkpoint-{step}")
        assert state["step"] == step and state["should_training_stop"] is (step == STEPS)  # max_steps ends it
        # the loss is logged at the first step and every third: at steps 2 and 4 the last log was one step before
        assert isinstance(state["tr_loss"], float) and state["globalstep_last_logged"] == step - 1
        assert state["tr_loss_by_rank"] == [state["tr_loss"]] and state["world_size"] == 1  # one process
        assert state["metrics_bytes"] == len('{"step": 0}\n')  # metrics.jsonl as it was made durable then
        assert state["callbacks"] == {"StepCounter": {"steps": step}}
    best = Path(trainer.state.best_model_checkpoint)
    assert best.parent == checkpoints  # the real directory, not the staging one transformers wrote into


def test_transformers_writes_into_a_staging_directory_then_it_is_committed(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits: list[tuple[Path, Path, bool]] = []
    original = resumable.commit

    def commit(staged: Path, final: Path, step: int, world_size: int) -> None:
        commits.append((staged, final, final.exists()))
        original(staged, final, step, world_size)

    monkeypatch.setattr(resumable, "commit", commit)
    make_trainer(tiny_model_dir, tmp_path).train()
    root = tmp_path / "checkpoints"
    assert [final for _, final, _ in commits] == [root / "checkpoint-2", root / "checkpoint-4"]
    for staged, final, existed in commits:
        assert staged == root / f".tmp-{os.getpid()}" / final.name and not existed  # never written in place


def test_a_mid_epoch_resume_continues_bit_exactly(reference: tuple, tiny_model_dir: Path, tmp_path: Path) -> None:
    trainer, out = reference
    counter = StepCounter()
    resumed = make_trainer(tiny_model_dir, tmp_path, [counter])
    resumed.train(resume_from_checkpoint=str(out / "checkpoints" / "checkpoint-2"))
    assert counter.loaded == {"steps": 2} and counter.steps == STEPS
    # step 3's logged loss averages steps 2-3 although step 2 ran in the interrupted process
    assert logged_losses(resumed)[3] == logged_losses(trainer)[3]
    expected, got = lora_weights(trainer), lora_weights(resumed)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)


def test_a_best_checkpoint_that_fails_verification_is_not_loaded(tiny_model_dir: Path, tmp_path: Path) -> None:
    class CorruptBestAtTheEnd(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == STEPS:
                weights = Path(state.best_model_checkpoint) / "adapter_model.safetensors"
                data = bytearray(weights.read_bytes())
                data[-1] ^= 0xFF
                weights.write_bytes(data)

    trainer = make_trainer(tiny_model_dir, tmp_path, [CorruptBestAtTheEnd()])
    trainer.train()
    last = lora_weights(trainer)
    assert trainer.best_load_problem is not None
    assert "adapter_model.safetensors does not match its SHA-256" in trainer.best_load_problem
    output = trainer.console.file.getvalue()
    assert "is not loaded" in output and "the adapter is the last step's" in output
    assert all(torch.equal(last[k], v) for k, v in lora_weights(trainer).items())


def test_a_failed_first_checkpoint_says_training_restarts_and_leaves_no_staging(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def commit(staged: Path, final: Path, step: int, world_size: int) -> None:
        (staged / "manifest.json").write_text("{")  # a partial write, then the disk was full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(resumable, "commit", commit)
    trainer = make_trainer(tiny_model_dir, tmp_path)
    with pytest.raises(TunewiseError) as caught:
        trainer.train()
    root = tmp_path / "checkpoints"
    message = str(caught.value)
    assert message.startswith(f"checkpoint write failed at step 2: {root / 'checkpoint-2'}: no space left on device")
    assert message.endswith("There is no earlier checkpoint; --resume starts the training again from step 0")
    assert list(root.iterdir()) == []


def test_the_data_order_is_a_function_of_seed_and_epoch(tiny_model_dir: Path, tmp_path: Path) -> None:
    one, two = make_trainer(tiny_model_dir, tmp_path / "one"), make_trainer(tiny_model_dir, tmp_path / "two")
    sampler = one._get_train_sampler()
    assert isinstance(sampler, EpochSeededSampler)
    assert sampler.order(0) == two.epoch_sampler(two.train_dataset).order(0)  # another process: the same order
    assert sorted(sampler.order(0)) == list(range(12)) and sampler.order(0) != sampler.order(1)


def test_every_epoch_sets_the_order_also_where_accelerate_does_not_reach_the_sampler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The resumed epoch of a multi-process run: the batch sampler is under accelerate's shard wrapper and its skip
    wrapper, and `DataLoaderShard.set_epoch` stops one level short of the sampler."""
    from accelerate.data_loader import BatchSamplerShard, DataLoaderShard, SkipBatchSampler
    from torch.utils.data import BatchSampler
    from transformers import Trainer

    sampler = EpochSeededSampler("random", 4, [3] * 16, [None] * 16, seed=0)
    wrapped = SkipBatchSampler(BatchSamplerShard(BatchSampler(sampler, 4, False), 2, 1), skip_batches=1)
    DataLoaderShard(list(range(16)), batch_sampler=wrapped).set_epoch(2)
    assert sampler.epoch == 0  # never reached: the resumed epoch would replay epoch 0's order
    monkeypatch.setattr(Trainer, "_run_epoch", lambda self, *args, **kwargs: None)
    trainer = ResumableTrainer.__new__(ResumableTrainer)  # the epoch hook alone, no model
    trainer._train_sampler, trainer._resume_state = sampler, None
    trainer._run_epoch(model=None, epoch=2, train_dataloader=None)
    assert sampler.epoch == 2


def test_length_groups_span_the_global_batch_of_every_process() -> None:
    """One process accumulating 2 micro-batches of 4 and 2 ranks of 1 micro-batch of 4 group lengths by the same 8."""
    from types import SimpleNamespace

    trainer = ResumableTrainer.__new__(ResumableTrainer)
    trainer.sampler_kind, trainer.sampler_labels = "length_grouped", None
    dataset = {"length": list(range(1, 33))}
    groups = []
    for accumulation, world in ((2, 1), (1, 2)):
        trainer.args = SimpleNamespace(
            data_seed=1, seed=1, train_batch_size=4, gradient_accumulation_steps=accumulation, world_size=world
        )
        groups.append(trainer.epoch_sampler(dataset))
    assert groups[0].batch_size == groups[1].batch_size == 8 and groups[0].order(0) == groups[1].order(0)
