"""Build and run the LoRA fine-tune: PEFT model, Trainer, callbacks; returns the best adapter."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from rich.console import Console
from rich.markup import escape
from transformers import EarlyStoppingCallback, TrainingArguments, set_seed

from tunewise.config import Config, TrainConfig, greater_is_better
from tunewise.data.encode import Encoded
from tunewise.errors import ConfigError, TunewiseError
from tunewise.models.device import resolve_device
from tunewise.train.callbacks import (
    DivergenceMonitor,
    MetricsLogger,
    RunSizing,
    TaskMetric,
    peak_memory_gib,
    reset_peak_memory,
)
from tunewise.train.checkpoint import (
    latest_valid_checkpoint,
    read_state,
    remove_stale_staging,
    save_dir_atomically,
    step_of,
)
from tunewise.train.collate import PaddingCollator
from tunewise.train.distributed import (
    check_parallel,
    is_main_process,
    lost_process,
    scored_on_rank_zero,
    share,
    world_size,
)
from tunewise.train.estimate import planned_steps
from tunewise.train.fused_lora import enable_fused_lora
from tunewise.train.loss import completion_only_loss
from tunewise.train.packing import PackingCollator, enable_varlen_attention
from tunewise.train.resumable import ResumableTrainer
from tunewise.train.sampling import batch_mix


@dataclass
class TrainSummary:
    """What a training run reports: eval.json's `train` section, field for field."""

    steps: int
    planned_steps: int
    best_step: int | None
    best_metric: float | None
    metric: str
    stopped_early: bool
    divergence_warnings_at: list[int]
    trainable_params: int
    total_params: int
    adapter: str
    resumed_from_step: int | None = None  # the checkpoint step this run continued from
    sizing: dict[str, float] | None = None  # seconds per step and peak memory, measured after the first steps
    train_seconds: float | None = None  # wall time of the training loop (of this process's part, when resumed)
    peak_memory_gib: float | None = None  # peak over the training loop: accelerator allocation, else resident memory


@dataclass
class TrainResult:
    model: Any  # the PEFT model with the best checkpoint's weights loaded
    adapter_dir: Path
    summary: TrainSummary


def add_lora(model: Any, cfg: Config) -> Any:
    if cfg.model.quantize != "none":
        # QLoRA's preparation: norms and other unquantized weights in float32, the quantized base frozen. Gradient
        # checkpointing stays train.gradient_checkpointing's choice, not PEFT's default of on.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    set_seed(cfg.train.seed)  # LoRA A matrices are random: the seed must reach PEFT's init
    return get_peft_model(model, lora)


def training_path(
    peft_model: Any, train_cfg: TrainConfig, pad_token_id: int
) -> tuple[Callable[[list[dict[str, Any]]], dict[str, Any]], Callable[..., torch.Tensor] | None]:
    """The collator and loss of tunewise's training path, each speed-up switchable in `train:` for comparison.

    `fused_lora`: the LoRA update added into the base output in place (`fused_lora.py`). `packing`: one packed row
    per micro-batch with per-example causal SDPA, LM head and loss at answer positions only (`packing.py`,
    `loss.py`); off, padded batches and the model's own loss over full logits. All exact (tests)."""
    if train_cfg.fused_lora:
        enable_fused_lora(peft_model)
    if not train_cfg.packing:
        return PaddingCollator(pad_token_id), None
    enable_varlen_attention(peft_model)  # per-example SDPA; plain sdpa for padded and generation calls
    return PackingCollator(), completion_only_loss


def precision_flags(precision: str, device: torch.device) -> dict[str, bool]:
    """`train.precision` as the Trainer's own switches. auto: bf16 on a CUDA device that has it, fp16 on an older
    one, fp32 on CPU and MPS."""
    if precision == "auto":
        if device.type != "cuda":
            return {"bf16": False, "fp16": False}
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("train.precision: fp16 mixed precision needs an accelerator; on CPU use bf16 or fp32")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def global_steps_config(cfg: Config, world: int) -> Config:
    """`cfg` with grad_accum standing for the whole global batch (per-device batch x accumulation x processes), for
    the arithmetic of optimizer steps per epoch."""
    if world == 1:
        return cfg
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"grad_accum": cfg.train.grad_accum * world})})


def training_arguments(cfg: Config, output_dir: Path, total_steps: int) -> TrainingArguments:
    t = cfg.train
    metric = t.metric
    greater = greater_is_better(metric, t.greater_is_better)
    eval_steps = min(t.eval_steps, total_steps)  # at least one evaluation, so a best checkpoint exists
    device = resolve_device(cfg.model.device)
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup,
        lr_scheduler_type=t.scheduler,
        max_grad_norm=t.max_grad_norm,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=2,
        restore_callback_states_from_checkpoint=True,  # early stopping's patience counter on resume
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=greater,
        optim="adamw_torch",
        activation_checkpointing=t.gradient_checkpointing,  # transformers 5 renamed gradient_checkpointing
        activation_checkpointing_kwargs={"use_reentrant": False},  # no input grads needed with frozen embeddings
        seed=t.seed,
        data_seed=t.seed,
        remove_unused_columns=False,
        report_to="none",
        use_cpu=device.type == "cpu",
        **precision_flags(t.precision, device),
        # Several processes: each rank's loss is divided by the tokens of the whole global batch, so packed
        # micro-batches of unequal token counts give the loss of one process (transformers #34242, #37474).
        average_tokens_across_devices=True,
        ddp_timeout=t.ddp_timeout,
        ddp_find_unused_parameters=False,  # every LoRA weight takes part in every step
        fsdp=t.fsdp,
        fsdp_config=t.fsdp_config or None,
        deepspeed=str(t.deepspeed) if t.deepspeed else None,
        dataloader_num_workers=0,
        disable_tqdm=False,  # progress bars stay on although we quiet transformers' logging
    )


def to_dataset(items: list[Encoded]) -> Dataset:
    return Dataset.from_dict(
        {
            "input_ids": [e.input_ids for e in items],
            "labels": [e.labels for e in items],
            "length": [len(e.input_ids) for e in items],
        }
    )


def train(
    model: Any,
    tokenizer: Any,
    cfg: Config,
    train_items: list[Encoded],
    val_items: list[Encoded],
    run_dir: Path,
    console: Console,
    collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]] | None = None,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    task_metric: Callable[[Any], dict[str, float]] | None = None,
    extra_callbacks: list[Any] | None = None,
    resume: bool = False,
) -> TrainResult:
    """Fine-tune `model` with LoRA. `collator` and `loss_fn` replace the padded defaults when given.

    `resume`: continue from the newest valid checkpoint in `run_dir/checkpoints` (from step 0 when there is none),
    with the same losses and adapter as an uninterrupted run.

    In a multi-process run (train/distributed.py) every rank calls this with the same items; each trains its shard of
    every global batch, and rank 0 alone writes metrics.jsonl, checkpoints' extras and the adapter, and scores the
    task metric (`task_metric` is None on the other ranks)."""
    if not val_items:
        raise ConfigError("no validation examples: early stopping needs data.val or data.val_fraction")
    world = world_size()
    check_parallel(cfg, world)
    if world > 1 and cfg.train.metric != "eval_loss":
        task_metric = scored_on_rank_zero(task_metric)
    peft_model = add_lora(model, cfg)
    if collator is None:
        collator, default_loss = training_path(peft_model, cfg.train, tokenizer.pad_token_id)
        loss_fn = loss_fn or default_loss
    trainable, total = peft_model.get_nb_trainable_parameters()
    console.print(f"LoRA r={cfg.lora.r}: trainable params {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)")

    total_steps = planned_steps(len(train_items), global_steps_config(cfg, world))
    logger = MetricsLogger(run_dir / "metrics.jsonl")
    divergence = DivergenceMonitor(cfg.train.divergence_evals, logger, console)
    sizing = RunSizing(console)
    callbacks: list[Any] = [logger, divergence, sizing]
    if task_metric is not None:
        callbacks.insert(0, TaskMetric(task_metric, logger))
    if cfg.train.patience > 0:
        callbacks.append(EarlyStoppingCallback(cfg.train.patience, cfg.train.min_delta))
    callbacks += extra_callbacks or []  # after TaskMetric, so they see task metrics in on_evaluate
    checkpoint = _resume_point(run_dir, logger, console, world) if resume and is_main_process() else None
    checkpoint = share(checkpoint)  # rank 0 chose it (and set invalid ones aside): every rank resumes from it
    resumed_from = read_state(checkpoint)["step"] if checkpoint else None  # rotation may delete it later
    trainer = ResumableTrainer(
        model=peft_model,
        args=training_arguments(cfg, run_dir / "checkpoints", total_steps),
        train_dataset=to_dataset(train_items),
        eval_dataset=to_dataset(val_items),
        data_collator=collator,
        processing_class=tokenizer,
        compute_loss_func=loss_fn,
        callbacks=callbacks,
        metrics_path=logger.path,
        console=console,
        sampler=cfg.train.sampler,
        sampler_labels=[item.label for item in train_items],
    )
    warn_one_label_batches(trainer, cfg.train.sampler, train_items, console)
    processes = f" in {world} processes (global batch {trainer.args.train_batch_size * world})" if world > 1 else ""
    console.print(
        f"training: {len(train_items)} examples, {total_steps} optimizer steps{processes}, "
        f"validation on {len(val_items)} every {trainer.args.eval_steps} steps"
    )
    reset_peak_memory()  # the peak of training alone, not of loading or the base model's evaluation before it
    started = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except Exception as exc:
        lost = lost_process(exc)  # another rank died: say so in one line, not with a collective's traceback
        if lost is None:
            raise
        raise lost from exc
    train_seconds = time.perf_counter() - started
    peak_gib = peak_memory_gib()

    state = trainer.state
    adapter_dir = run_dir / "adapter"
    # safetensors; the best checkpoint is already restored by the Trainer. Swapped in whole: a kill mid-save
    # leaves the previous adapter/ (or none), never a mix.
    best_step = None if trainer.best_load_problem else step_of(Path(state.best_model_checkpoint or ""))
    if is_main_process():
        restored = run_dir / "checkpoints" / f"checkpoint-{best_step or state.global_step}"
        save_dir_atomically(adapter_dir, lambda staged: _save_adapter(peft_model, cfg, world, restored, staged))
    stopped_early = state.global_step < state.max_steps
    logger.write(
        {
            "step": state.global_step,
            "event": "train_end",
            "best_step": best_step,
            "best_metric": state.best_metric,
            "stopped_early": stopped_early,
        }
    )
    summary = TrainSummary(
        steps=state.global_step,
        planned_steps=state.max_steps,
        best_step=best_step,
        best_metric=state.best_metric,
        metric=cfg.train.metric,
        stopped_early=stopped_early,
        divergence_warnings_at=divergence.warned_at,
        trainable_params=trainable,
        total_params=total,
        adapter=str(adapter_dir),
        resumed_from_step=resumed_from,
        sizing=sizing.figures or None,
        train_seconds=round(train_seconds, 3),
        peak_memory_gib=round(peak_gib, 3),
    )
    return TrainResult(peft_model, adapter_dir, summary)


def _save_adapter(peft_model: Any, cfg: Config, world: int, restored: Path, staged: Path) -> None:
    """The restored weights as adapter/. Sharded over several ranks (train.fsdp, train.deepspeed), rank 0 holds a
    shard only: the adapter is the restored checkpoint's, which the Trainer gathered from every rank to write."""
    if world == 1 or not (cfg.train.fsdp or cfg.train.deepspeed is not None):
        peft_model.save_pretrained(staged)
        return
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copy2(restored / name, staged / name)


def warn_one_label_batches(trainer: ResumableTrainer, sampler: str, items: list[Encoded], console: Console) -> None:
    """Warns, with figures, when the first epoch's batches would mix labels far less than random batches."""
    labels = [item.label for item in items]
    if len(set(labels)) < 2:  # not classification, or one class: nothing to mix
        return
    order = trainer.epoch_sampler(trainer.train_dataset).order(0)
    warning = batch_mix(order, labels, trainer.args.train_batch_size).warning(sampler)
    if warning:
        console.print(f"[yellow]warning: {escape(warning)}[/]")


def _resume_point(run_dir: Path, logger: MetricsLogger, console: Console, world: int = 1) -> Path | None:
    """The checkpoint to continue from; metrics.jsonl cut back to what was logged when it was written."""
    remove_stale_staging(run_dir)  # a half-written adapter/ of the killed run
    checkpoint = latest_valid_checkpoint(
        run_dir / "checkpoints", lambda message: console.print(f"[yellow]warning: {escape(message)}[/]")
    )
    state = read_state(checkpoint) if checkpoint else {"step": 0, "metrics_bytes": 0}
    written_by = int(state.get("world_size", 1))
    if written_by != world:  # the global batch, the data shards and each rank's RNG state belong to that count
        raise TunewiseError(
            f"{checkpoint} was written by {written_by} training process{'es' if written_by > 1 else ''}, this run has "
            f"{world}: an exact resume needs the same number; resume it in {written_by} (--nproc {written_by})"
        )
    if not logger.truncate(state["metrics_bytes"]):
        console.print(f"[yellow]warning: {escape(str(logger.path))} lost rows logged before step {state['step']}[/]")
    logger.write({"step": state["step"], "event": "resume", "checkpoint": checkpoint.name if checkpoint else None})
    if checkpoint is None:
        console.print("no complete checkpoint to resume from: training starts again at step 0")
    else:
        console.print(f"resuming training from {escape(str(checkpoint))} (step {state['step']})")
    return checkpoint
