"""Padding-free packing + completion-only LM head are exact: same losses, gradients and Trainer steps as padding."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from support.features import make_features
from tunewise.config import Config
from tunewise.data.encode import IGNORE_INDEX, Encoded
from tunewise.train.collate import PaddingCollator
from tunewise.train.loss import completion_only_loss, completion_positions, model_completion_loss
from tunewise.train.packing import PackingCollator, enable_varlen_attention
from tunewise.train.trainer import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ATTENTION = ["sdpa", "eager", "varlen"]
ATOL = 1e-4


def lora_model(model_dir: Path, attention: str) -> Any:
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config.use_cache  # the 5.24 default that would defeat packing without the collator's use_cache=False
    torch.manual_seed(0)
    # init_lora_weights=False: random B too, so the LoRA A matrices get non-zero gradients worth comparing
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(model, lora)
    if attention == "varlen":
        enable_varlen_attention(peft_model)
    else:
        peft_model.get_base_model().set_attn_implementation(attention)
    return peft_model


def lora_grads(model: Any) -> dict[str, torch.Tensor]:
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return grads


def forward_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if k not in ("labels", "shift_labels")}


@pytest.fixture(scope="module")
def features(tiny_model_dir: Path) -> list[dict[str, Any]]:
    return make_features(6, AutoTokenizer.from_pretrained(tiny_model_dir).vocab_size, seed=3)


@pytest.mark.parametrize("attention", ATTENTION)
def test_packed_row_matches_each_example_alone(
    tiny_model_dir: Path, features: list, attention: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = lora_model(tiny_model_dir, attention).eval()
    batch = PackingCollator(completion_only=False)(features)
    query_lengths: list[int] = []
    sdpa = F.scaled_dot_product_attention

    def spy(query: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        query_lengths.append(query.shape[2])
        return sdpa(query, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        packed = model(**forward_inputs(batch)).logits[0]
    monkeypatch.undo()
    lengths = {len(f["input_ids"]) for f in features}
    expected = {"sdpa": {batch["input_ids"].shape[1]}, "eager": set(), "varlen": lengths}[attention]
    assert set(query_lengths) == expected  # varlen really attends per example, sdpa over the masked row
    with torch.no_grad():
        start = 0
        for feature in features:
            ids, labels = torch.tensor(feature["input_ids"]), torch.tensor(feature["labels"])
            alone = model(input_ids=ids[None]).logits[0]
            seg = packed[start : start + len(ids)]
            start += len(ids)
            assert torch.allclose(seg, alone, atol=ATOL), (seg - alone).abs().max()
            loss_alone = F.cross_entropy(alone[:-1], labels[1:], ignore_index=IGNORE_INDEX)
            loss_packed = F.cross_entropy(seg[:-1], labels[1:], ignore_index=IGNORE_INDEX)
            assert abs(loss_alone.item() - loss_packed.item()) < ATOL


@pytest.mark.parametrize("attention", ATTENTION)
def test_completion_only_loss_and_grads_match_padded(tiny_model_dir: Path, features: list, attention: str) -> None:
    model = lora_model(tiny_model_dir, attention).train()  # lora_dropout=0: train mode stays deterministic
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    padded = PaddingCollator(tokenizer.pad_token_id)(features)
    n_items = padded["labels"][..., 1:].ne(IGNORE_INDEX).sum()  # what Trainer._get_num_items_in_batch counts

    reference = model(**padded, num_items_in_batch=n_items).loss  # the Trainer's default: full logits
    reference.backward()
    ref_grads = lora_grads(model)

    batch = PackingCollator()(features)
    assert batch["shift_labels"].ne(IGNORE_INDEX).sum() == n_items
    outputs = model(**forward_inputs(batch))  # what Trainer.compute_loss runs before compute_loss_func
    assert outputs.logits.shape == (n_items, model.config.vocab_size)  # only the trained positions hit the LM head
    loss = completion_only_loss(outputs, batch["labels"], num_items_in_batch=n_items)
    loss.backward()
    grads = lora_grads(model)

    assert abs(loss.item() - reference.item()) < ATOL
    scale = max(g.abs().max().item() for g in ref_grads.values())
    worst = max((grads[k] - g).abs().max().item() for k, g in ref_grads.items())
    assert scale > 1e-3 and worst < ATOL * max(1.0, scale), (worst, scale)

    # the model's own loss (no loss_fn) reads the collator's shift_labels: same value
    own = model(**batch, num_items_in_batch=n_items).loss
    assert abs(own.item() - reference.item()) < ATOL
    # and the helper for callers that hold the model works on a padded batch as well
    assert abs(model_completion_loss(model, padded, n_items).item() - reference.item()) < ATOL


@pytest.mark.parametrize("attention", ATTENTION)
def test_packing_isolates_examples(tiny_model_dir: Path, features: list, attention: str) -> None:
    model = lora_model(tiny_model_dir, attention).eval()
    changed = [dict(f) for f in features]
    first = changed[0]["input_ids"]
    changed[0]["input_ids"] = [(t + 7) % model.config.vocab_size or 3 for t in first]
    length = len(first)
    with torch.no_grad():
        a = model(**forward_inputs(PackingCollator(completion_only=False)(features))).logits[0]
        b = model(**forward_inputs(PackingCollator(completion_only=False)(changed))).logits[0]
    assert (a[:length] - b[:length]).abs().max() > 1e-2  # example 1 did change
    assert torch.allclose(a[length:], b[length:], atol=1e-5), (a[length:] - b[length:]).abs().max()


def test_a_cache_would_let_packed_examples_attend_to_each_other(tiny_model_dir: Path, features: list) -> None:
    """Why the batch carries use_cache=False: in 5.24 a cache turns off the packed-sequence mask for sdpa."""
    model = lora_model(tiny_model_dir, "sdpa").eval()
    batch = forward_inputs(PackingCollator(completion_only=False)(features))
    second = slice(len(features[0]["input_ids"]), len(features[0]["input_ids"]) + len(features[1]["input_ids"]))
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([features[1]["input_ids"]])).logits[0]
        isolated = model(**batch).logits[0, second]
        leaking = model(**{**batch, "use_cache": True}).logits[0, second]
    assert torch.allclose(isolated, alone, atol=ATOL)
    assert (leaking - alone).abs().max() > 1e-2


def run_trainer(model_dir: Path, tmp: Path, name: str, collator: Any, loss_fn: Any, varlen: bool) -> dict[str, Any]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if varlen:
        enable_varlen_attention(model)
    items = [Encoded(f["input_ids"], f["labels"], False) for f in make_features(40, tokenizer.vocab_size, seed=5)]
    cfg = Config(
        data={"train": str(tmp / "unused.jsonl")},
        lora={"r": 4, "alpha": 8, "dropout": 0.0},  # dropout masks depend on tensor shapes: off for a step-exact test
        train={"lr": 1e-2, "batch_size": 4, "grad_accum": 2, "max_steps": 3, "eval_steps": 3, "logging_steps": 1},
    )
    cfg.train.patience, cfg.train.warmup, cfg.train.seed = 0, 0, 7
    run_dir = tmp / name
    run_dir.mkdir()
    console = Console(file=io.StringIO())
    result = train(model, tokenizer, cfg, items[:32], items[32:], run_dir, console, collator=collator, loss_fn=loss_fn)
    logs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {
        "loss": [r["loss"] for r in logs if "loss" in r],
        "eval_loss": [r["eval_loss"] for r in logs if "eval_loss" in r],
        "lora": {k: v.detach().clone() for k, v in result.model.named_parameters() if "lora_" in k},
    }


def test_trainer_steps_match_padded_default(tiny_model_dir: Path, tmp_path: Path) -> None:
    pad_id = AutoTokenizer.from_pretrained(tiny_model_dir).pad_token_id
    reference = run_trainer(tiny_model_dir, tmp_path, "padded", PaddingCollator(pad_id), None, varlen=False)
    assert len(reference["loss"]) == 3 and len(reference["eval_loss"]) == 1
    variants = {
        "packed_loss_fn": (PackingCollator(), completion_only_loss, False),
        "packed_model_loss": (PackingCollator(), None, False),  # shift_labels feed the model's own loss
        "packed_varlen": (PackingCollator(), completion_only_loss, True),
    }
    for name, (collator, loss_fn, varlen) in variants.items():
        got = run_trainer(tiny_model_dir, tmp_path, name, collator, loss_fn, varlen)
        for key in ("loss", "eval_loss"):
            diffs = [abs(a - b) for a, b in zip(got[key], reference[key], strict=True)]
            assert max(diffs) < ATOL, (name, key, got[key], reference[key])
        worst = max((got["lora"][k] - v).abs().max().item() for k, v in reference["lora"].items())
        assert worst < ATOL, (name, worst)


def test_collator_layout() -> None:
    features = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}]
    batch = PackingCollator()(features)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9]]  # 8 must not be predicted from example 1's last token
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["cu_seq_lens_q"].tolist() == [0, 3, 5] and batch["max_length_q"] == 3
    assert batch["logits_to_keep"].tolist() == completion_positions(batch["labels"]).tolist() == [[1, 1, 0, 1, 0]]
    assert batch["shift_labels"].tolist() == [[6, 7, 9]]
    assert batch["use_cache"] is False
