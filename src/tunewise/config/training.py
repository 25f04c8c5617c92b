"""The sections of fine-tuning: the LoRA adapter (`lora`) and the optimizer, schedule, validation and early
stopping (`train`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from tunewise.config.section import Section


class LoraSettings(Section):
    """The LoRA adapter that is trained; the base model's weights stay frozen."""

    r: int = Field(16, gt=0, description="rank of the LoRA update matrices")
    alpha: int = Field(32, gt=0, description="scaling: the LoRA update is multiplied by alpha / r")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the LoRA input during training")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="names of the modules to adapt, or all-linear: every linear layer but the output"
    )


class TrainConfig(Section):
    """Fine-tuning: AdamW, learning-rate schedule, validation, early stopping and the best checkpoint."""

    lr: float = Field(2e-4, gt=0, description="peak learning rate")
    epochs: float = Field(1.0, gt=0, description="passes over the training set (fractions allowed)")
    max_steps: int = Field(-1, description="optimizer steps to train; overrides epochs when > 0")
    batch_size: int = Field(8, gt=0, description="examples per micro-batch, in training and validation")
    grad_accum: int = Field(1, gt=0, description="micro-batches per optimizer step")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    warmup: float = Field(0.05, ge=0, description="ratio of total steps if < 1, else steps")
    scheduler: Literal["cosine", "linear", "constant_with_warmup"] = Field(
        "cosine", description="learning-rate schedule after warmup"
    )
    max_grad_norm: float = Field(1.0, description="gradients are clipped to this total norm; 0 = no clipping")
    max_length: int = Field(
        512,
        gt=8,
        description="tokens per example, prompt and answer; longer ones are truncated, and one whose answer "
        "would be cut entirely is rejected",
    )
    eval_steps: int = Field(50, gt=0, description="validate and save a checkpoint every this many steps")
    logging_steps: int = Field(5, gt=0, description="log the training loss every this many steps")
    metric: str = Field(
        "eval_loss", description="validation metric for early stopping and best checkpoint: loss or a task metric"
    )
    metric_examples: int = Field(64, gt=0, description="validation examples scored for a task metric per evaluation")
    greater_is_better: bool | None = Field(None, description="inferred from the metric name when unset")
    patience: int = Field(3, ge=0, description="evaluations without improvement before stopping; 0 = off")
    min_delta: float = Field(0.0, ge=0, description="smallest change of the metric that counts as an improvement")
    divergence_evals: int = Field(
        3, gt=0, description="warn when validation loss rises while training loss falls this many evaluations in a row"
    )
    seed: int = Field(42, description="seed of the data splits, example order, LoRA initialisation and sampling")
    packing: bool = Field(
        True, description="padding-free packed batches + LM head on answer tokens only (same loss, less work)"
    )
    fused_lora: bool = Field(
        True, description="add the LoRA update into the base output in place (same math, less memory and time)"
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute each layer's activations in backward: less memory, one more forward per step"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="mixed precision of training (the Trainer's bf16/fp16 autocast); auto: bf16 on an accelerator "
        "that supports it, fp32 on CPU",
    )
    ddp_timeout: int = Field(
        7200,
        gt=0,
        description="seconds a multi-process run's ranks wait for each other (for rank 0's curation and base "
        "evaluation before training) before failing",
    )
    fsdp: bool = Field(
        False,
        description="multi-process runs: shard parameters, gradients and optimizer state over the ranks with FSDP "
        "(the Trainer's; version 2 unless fsdp_config says otherwise), for a model that does not fit one device; "
        "false = plain data parallel (DDP)",
    )
    fsdp_config: dict[str, Any] = Field(
        default_factory=dict,
        description="the Trainer's fsdp_config, passed through with train.fsdp: true, e.g. {version: 2, "
        "auto_wrap_policy: TRANSFORMER_BASED_WRAP, cpu_offload: false}",
    )
    deepspeed: Path | None = Field(
        None, description="multi-process runs: a DeepSpeed JSON config (ZeRO stage 2/3), passed to the Trainer"
    )
    sampler: Literal["random", "stratified", "length_grouped"] = Field(
        "random",
        description="order of training examples in an epoch. random: shuffled, each epoch in its own seeded order; "
        "stratified (classification): every batch holds the labels in about their training-set proportions; "
        "length_grouped: batches of similar length (less padding when train.packing is off; when length goes "
        "with the label, batches can hold one label only, and tunewise warns)",
    )
