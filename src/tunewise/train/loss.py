"""Completion-only LM head: vocabulary logits only where a next-token label is trained.

Design (checked against the transformers 5.24 and peft 0.21 sources):

- `Trainer.compute_loss` pops `labels`, runs `outputs = model(**inputs)` and then calls
  `compute_loss_func(outputs, labels, num_items_in_batch=...)`. A loss function alone therefore comes too late to
  avoid logits; what decides which logits exist is the forward call, i.e. the batch.
- `LlamaForCausalLM.forward` (and every model using `slice_logits_to_keep`) takes `logits_to_keep` as a 2D bool
  tensor and returns `lm_head(hidden_states[mask])`, shape [N, vocab]; `PeftModelForCausalLM.forward` passes it
  through in `**kwargs`. So the collator puts `logits_to_keep = completion_positions(labels)` in the batch and the
  model never computes the other T - N rows. No Trainer subclass, no reaching into `model.model`.
- `completion_only_loss` is then a valid `compute_loss_func`: it pairs the N logits with `completion_targets(labels)`
  (same row-major order as the boolean indexing) and reduces like the default path: `ForCausalLMLoss` sums the
  token losses and divides by `num_items_in_batch` (trained tokens over the whole accumulated batch, counted by
  `Trainer._get_num_items_in_batch`), or takes the mean when it is None. The Trainer treats a `compute_loss_func`
  loss as already scaled for gradient accumulation, exactly as it treats the model's loss with `num_items_in_batch`.
- The collator also sends `shift_labels`, which the model's own `ForCausalLMLoss` accepts: with no `loss_fn` at
  all, the Trainer's default path computes the same loss from the same N logits.

The only vocabulary-sized tensor left is [N, vocab] in fp32 (N = trained tokens in the micro-batch), so there is no
chunking: for classification N is a few tokens per example; 8 summaries of 40 tokens take about 60 MB at a 49k
vocabulary (SmolLM2) and 335 MB at 262k (Gemma 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from tunewise.data.encode import IGNORE_INDEX


def completion_positions(labels: torch.Tensor) -> torch.Tensor:
    """Positions whose next-token label is trained: the only hidden states the LM head needs."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[..., :-1] = labels[..., 1:] != IGNORE_INDEX
    return keep


def completion_targets(labels: torch.Tensor) -> torch.Tensor:
    """The trained next-token labels, in the row-major order of `hidden_states[completion_positions(labels)]`."""
    shifted = labels[..., 1:]
    return shifted[shifted != IGNORE_INDEX]


def completion_only_loss(
    outputs: Any, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """`Trainer(compute_loss_func=...)`: cross-entropy over the completion logits, reduced like `ForCausalLMLoss`.

    Accepts the [N, vocab] logits of a `logits_to_keep` forward, or full [batch, T, vocab] logits (then selected
    here, which is exact but saves nothing).
    """
    logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
    if logits.ndim == 3:  # the mask follows the logits: a model split over devices leaves them on its last one
        logits = logits[completion_positions(labels).to(logits.device)]
    targets = completion_targets(labels).to(logits.device)
    if logits.shape[0] != targets.shape[0]:
        raise ValueError(
            f"{logits.shape[0]} completion logits for {targets.shape[0]} trained labels: the batch's "
            "logits_to_keep must be completion_positions(labels) (use PackingCollator)"
        )
    logits = logits.float()  # as ForCausalLMLoss: the softmax in fp32 whatever the model dtype
    if num_items_in_batch is None:
        return F.cross_entropy(logits, targets, reduction="mean")
    loss = F.cross_entropy(logits, targets, reduction="sum")
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch


def model_completion_loss(
    model: Any, inputs: Mapping[str, Any], num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """The same loss for a caller that holds the model (a `compute_loss` override, a benchmark, a test).

    Works on padded batches too: `logits_to_keep` is derived from the labels when the batch does not carry it.
    """
    batch = {k: v for k, v in inputs.items() if k not in ("labels", "shift_labels")}
    labels = inputs["labels"]
    batch.setdefault("logits_to_keep", completion_positions(labels))
    return completion_only_loss(model(**batch), labels, num_items_in_batch)
