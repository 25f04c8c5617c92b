"""The reference peer of the training benchmarks: TRL's SFTTrainer + PEFT on pre-tokenized examples.

Shared by bench/train_throughput.py (random token ids, fp32 on CPU) and bench/gpu_check.py (the curated tweets,
bf16 on a GPU), so both measure the same peer: completion-only loss, no truncation (`max_length=None`), TRL's
defaults otherwise (padded batches, gradient checkpointing on), or its own fast settings with `tuned`.
"""

from __future__ import annotations

from typing import Any


def sft_trainer(
    model: Any,
    tokenizer: Any,
    input_ids: list[list[int]],
    completion_mask: list[list[int]],
    lora: Any,
    trainer_args: dict[str, Any],
    *,
    bf16: bool,
    tuned: bool = False,
) -> Any:
    """An SFTTrainer over `input_ids` whose loss counts the tokens `completion_mask` marks; `trainer_args` are the
    TrainingArguments both sides of a comparison share (steps, batch size, optimizer, seed, ...). `tuned`: TRL's
    padding-free batches with gradient checkpointing off, for reference."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_dict({"input_ids": input_ids, "completion_mask": completion_mask})
    extra: dict[str, Any] = {"bf16": bf16, "max_length": None, "completion_only_loss": True}
    if tuned:
        extra |= {"padding_free": True, "gradient_checkpointing": False}
    config = SFTConfig(**extra, **trainer_args)
    return SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer, peft_config=lora)
