"""train.loss: the completion-only LM head. Positions and targets pair up row-major, the loss reduces like
transformers' `ForCausalLMLoss` (sum over trained tokens divided by their count over the accumulated batch, or the
mean), and a model given `logits_to_keep` computes logits only where a label is trained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from support.devices import lazy_device, on_lazy, strict_device
from tunewise.data.encode import IGNORE_INDEX
from tunewise.models.device import to_device
from tunewise.train.loss import (
    completion_only_loss,
    completion_positions,
    completion_targets,
    model_completion_loss,
)
from tunewise.train.packing import PackingCollator

X = IGNORE_INDEX
LABELS = torch.tensor([[X, X, 11, 12, X], [X, 21, X, X, X], [X, X, X, 31, 32]])


def full_causal_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The textbook shifted cross-entropy over every position, ignored labels skipped."""
    vocab = logits.shape[-1]
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, vocab).float(), labels[:, 1:].reshape(-1), ignore_index=X, reduction=reduction
    )


def test_positions_are_those_whose_next_label_is_trained() -> None:
    assert completion_positions(LABELS).tolist() == [
        [False, True, True, False, False],
        [True, False, False, False, False],
        [False, False, True, True, False],
    ]  # the last position never predicts anything


def test_targets_pair_with_positions_in_row_major_order() -> None:
    assert completion_targets(LABELS).tolist() == [11, 12, 21, 31, 32]
    assert completion_positions(LABELS).sum() == completion_targets(LABELS).numel()


def test_the_loss_over_full_logits_is_the_shifted_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 40)
    mean = completion_only_loss({"logits": logits}, LABELS)
    assert torch.allclose(mean, full_causal_loss(logits, LABELS), atol=1e-6)
    summed = completion_only_loss({"logits": logits}, LABELS, num_items_in_batch=torch.tensor(10))
    assert torch.allclose(summed, full_causal_loss(logits, LABELS, "sum") / 10, atol=1e-6)  # accumulation's count


def test_kept_logits_give_the_same_loss_as_full_ones() -> None:
    torch.manual_seed(1)
    logits = torch.randn(3, 5, 40, dtype=torch.bfloat16)
    kept = logits[completion_positions(LABELS)]  # what a `logits_to_keep` forward returns: [N, vocab]
    assert kept.shape == (5, 40)
    as_tuple = completion_only_loss((kept,), LABELS, num_items_in_batch=7)  # tuple outputs too
    assert as_tuple.dtype == torch.float32  # the softmax runs in fp32 whatever the model dtype
    assert torch.equal(as_tuple, completion_only_loss({"logits": logits}, LABELS, num_items_in_batch=7))


def test_logits_that_do_not_match_the_labels_are_refused() -> None:
    with pytest.raises(ValueError, match="4 completion logits for 5 trained labels: .*completion_positions"):
        completion_only_loss({"logits": torch.randn(4, 40)}, LABELS)


def test_a_model_computes_logits_only_at_trained_positions(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    vocab = model.config.vocab_size
    torch.manual_seed(2)
    input_ids = torch.randint(3, vocab, LABELS.shape)
    labels = torch.where(LABELS == X, X, input_ids)
    with torch.no_grad():
        full = model(input_ids=input_ids).logits
        kept = model(input_ids=input_ids, logits_to_keep=completion_positions(labels)).logits
        loss = model_completion_loss(model, {"input_ids": input_ids, "labels": labels})
    assert kept.shape == (5, vocab)
    assert torch.allclose(kept, full[completion_positions(labels)], atol=1e-5)
    assert torch.allclose(loss, full_causal_loss(full, labels), atol=1e-5)


def test_a_packed_batch_keeps_its_own_positions(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    features = [{"input_ids": [5, 6, 7, 8], "labels": [X, X, 7, 8]}, {"input_ids": [9, 10, 11], "labels": [X, 10, 11]}]
    batch = PackingCollator()(features)
    assert torch.equal(batch["logits_to_keep"], completion_positions(batch["labels"]))
    with torch.no_grad():
        loss = model_completion_loss(model, batch, num_items_in_batch=4)
        alone = [model(input_ids=torch.tensor([f["input_ids"]])).logits for f in features]
    sums = [full_causal_loss(a, torch.tensor([f["labels"]]), "sum") for a, f in zip(alone, features, strict=True)]
    reference = sum(sums) / 4  # 4 trained tokens in all: each example's own shifted loss, nothing across the seam
    assert torch.allclose(loss, reference, atol=1e-4)


def test_the_loss_follows_the_logits_device(tiny_model_dir: Path) -> None:
    """Logits on another device than the labels (torch's lazy device here; a model split over GPUs leaves its
    logits on the last one): selected and scored there, with no op mixing the two devices, the CPU's loss."""
    lazy = lazy_device()
    torch.manual_seed(3)
    logits = torch.randn(3, 5, 40)
    expected = completion_only_loss({"logits": logits}, LABELS, num_items_in_batch=torch.tensor(7))
    with strict_device():
        full = completion_only_loss({"logits": logits.to(lazy)}, LABELS, num_items_in_batch=torch.tensor(7))
        kept = completion_only_loss((logits[completion_positions(LABELS)].to(lazy),), LABELS)
    assert full.device.type == kept.device.type == "lazy"
    assert torch.allclose(full.cpu(), expected, atol=1e-6)
    assert torch.allclose(kept.cpu(), completion_only_loss({"logits": logits}, LABELS), atol=1e-6)

    model = on_lazy(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval())
    features = [{"input_ids": [5, 6, 7, 8], "labels": [X, X, 7, 8]}, {"input_ids": [9, 10, 11], "labels": [X, 10, 11]}]
    batch = PackingCollator()(features)
    with torch.no_grad():
        reference = model_completion_loss(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), batch, 4)
        with strict_device():  # as the Trainer hands it over: every tensor of the batch on the model's device
            loss = model_completion_loss(model, to_device(batch, lazy), num_items_in_batch=4)
    assert torch.allclose(loss.cpu(), reference, atol=1e-4)
