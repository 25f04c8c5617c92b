"""Padding-free packing + completion-only LM head are exact: same losses, gradients and Trainer steps as padding,
for Llama and for Gemma 3 (sliding-window layers, final-logit soft-capping, fused LoRA)."""

from __future__ import annotations

import importlib.util
import io
import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.masking_utils import sdpa_mask, sliding_window_causal_mask_function

from support.devices import lazy_device, strict_device
from support.features import make_features
from support.tiny import build_tiny_gemma
from tunewise.config import Config
from tunewise.data.encode import IGNORE_INDEX, Encoded
from tunewise.train import packing
from tunewise.train.collate import PaddingCollator
from tunewise.train.fused_lora import enable_fused_lora
from tunewise.train.loss import completion_only_loss, completion_positions, model_completion_loss
from tunewise.train.packing import PackingCollator, enable_varlen_attention, varlen_kernel, varlen_sdpa_attention
from tunewise.train.trainer import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ATTENTION = ["sdpa", "eager", "varlen"]
ATOL = 1e-4


def lora_model(model_dir: Path, attention: str, **config: Any) -> Any:
    model = AutoModelForCausalLM.from_pretrained(model_dir, **config)
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


# -- Gemma 3: sliding-window layers, final-logit soft-capping, fused LoRA ---------------------------------------------

WINDOW = 8  # build_tiny_gemma's sliding window: make_features' examples are 4 to 18 tokens, on both sides of it


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gemma(tmp_path_factory.mktemp("tiny-gemma"), sliding_window=WINDOW)


@pytest.fixture(scope="module")
def gemma_features() -> list[dict[str, Any]]:
    features = make_features(6, 300, seed=3)
    lengths = [len(f["input_ids"]) for f in features]
    assert min(lengths) <= WINDOW < max(lengths)  # the test covers both kinds of example
    return features


def padded_reference(model: Any, features: list, pad_id: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], Any]:
    """Loss and LoRA gradients of a padded batch: the model's own sliding-window and causal masks."""
    padded = PaddingCollator(pad_id)(features)
    n_items = padded["labels"][..., 1:].ne(IGNORE_INDEX).sum()
    loss = model(**padded, num_items_in_batch=n_items).loss
    loss.backward()
    return loss.detach(), lora_grads(model), n_items


@pytest.mark.parametrize("attention", ATTENTION)
@pytest.mark.parametrize("softcap", [None, 2.0], ids=["no-softcap", "final-logit-softcap"])
def test_gemma_packed_loss_and_grads_match_padded(
    gemma_dir: Path, gemma_features: list, attention: str, softcap: float | None
) -> None:
    config = {"final_logit_softcapping": softcap}
    reference, ref_grads, n_items = padded_reference(lora_model(gemma_dir, "sdpa", **config).train(), gemma_features, 0)
    model = lora_model(gemma_dir, attention, **config).train()
    batch = PackingCollator()(gemma_features)
    outputs = model(**forward_inputs(batch))
    assert outputs.logits.shape == (n_items, model.config.vocab_size)  # logits_to_keep's bool mask was honoured
    if softcap:
        assert outputs.logits.abs().max() < softcap  # the cap applies to the kept logits
    loss = completion_only_loss(outputs, batch["labels"], num_items_in_batch=n_items)
    loss.backward()
    grads = lora_grads(model)
    assert abs(loss.item() - reference.item()) < ATOL
    worst = max((grads[k] - g).abs().max().item() for k, g in ref_grads.items())
    assert worst < ATOL, worst
    # the model's own loss from the collator's shift_labels agrees as well
    assert abs(model(**batch, num_items_in_batch=n_items).loss.item() - reference.item()) < ATOL


def test_gemma_sliding_window_changes_what_packed_examples_see(gemma_dir: Path, gemma_features: list) -> None:
    """The window is really applied: a window longer than every example gives another loss (so the exactness test
    above would fail if the packed path attended causally over whole examples)."""
    batch = forward_inputs(PackingCollator()(gemma_features))
    labels = PackingCollator()(gemma_features)["labels"]
    with torch.no_grad():
        windowed = completion_only_loss(lora_model(gemma_dir, "varlen").eval()(**batch), labels)
        whole = completion_only_loss(lora_model(gemma_dir, "varlen", sliding_window=64).eval()(**batch), labels)
    assert abs(windowed.item() - whole.item()) > 1e-3


class SlidingModule(torch.nn.Module):
    """What varlen_sdpa_attention reads from an attention module."""

    def __init__(self, window: int | None) -> None:
        super().__init__()
        self.sliding_window, self.num_key_value_groups, self.is_causal = window, 2, True


def test_varlen_window_is_transformers_sliding_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per example: transformers' `sliding_window_causal_mask_function` (key k visible from query q when
    q - window < k <= q); an example no longer than the window keeps `is_causal=True` without a mask."""
    torch.manual_seed(0)
    lengths, window = [3, WINDOW, 20, 9], WINDOW
    bounds = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    query, key, value = (
        torch.randn(1, 4, sum(lengths), 16),
        torch.randn(1, 2, sum(lengths), 16),
        torch.randn(1, 2, sum(lengths), 16),
    )
    masks: list[Any] = []
    sdpa = F.scaled_dot_product_attention

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        masks.append(kwargs.get("attn_mask"))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    out, _ = varlen_sdpa_attention(SlidingModule(window), query, key, value, None, scaling=0.25, cu_seq_lens_q=bounds)
    monkeypatch.undo()
    assert [m is None for m in masks] == [n <= window for n in lengths]
    for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        n = end - start
        mask = sdpa_mask(
            batch_size=1,
            q_length=n,
            kv_length=n,
            mask_function=sliding_window_causal_mask_function(window),
            allow_is_causal_skip=False,
        )
        expected = sdpa(
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            attn_mask=mask,
            scale=0.25,
            enable_gqa=True,
        )
        assert torch.allclose(out[0, start:end], expected[0].transpose(0, 1), atol=1e-6)
    with pytest.raises(ValueError, match="softcap"):
        varlen_sdpa_attention(SlidingModule(None), query, key, value, None, cu_seq_lens_q=bounds, softcap=30.0)


def test_gemma_linear_layers_are_fused_and_exact(gemma_dir: Path, gemma_features: list) -> None:
    batch = PackingCollator()(gemma_features)
    labels = batch["labels"]
    results = []
    for fused in (False, True):
        model = lora_model(gemma_dir, "varlen").train()
        if fused:  # q, k, v, o, gate, up, down in each of 3 layers; lm_head is tied to the embedding, not adapted
            assert enable_fused_lora(model) == 7 * len(model.get_base_model().model.layers)
        loss = completion_only_loss(model(**forward_inputs(batch)), labels)
        loss.backward()
        results.append((loss.item(), lora_grads(model)))
    (plain_loss, plain), (fused_loss, fused_grads) = results
    assert abs(plain_loss - fused_loss) < 1e-5
    assert max((plain[k] - fused_grads[k]).abs().max().item() for k in plain) < 1e-5


def test_gemma_trainer_steps_match_padded(gemma_dir: Path, tmp_path: Path) -> None:
    reference = run_trainer(gemma_dir, tmp_path, "padded", PaddingCollator(0), None, varlen=False)
    got = run_trainer(gemma_dir, tmp_path, "packed", PackingCollator(), completion_only_loss, varlen=True)
    for key in ("loss", "eval_loss"):
        assert max(abs(a - b) for a, b in zip(got[key], reference[key], strict=True)) < ATOL, key
    assert max((got["lora"][k] - v).abs().max().item() for k, v in reference["lora"].items()) < ATOL


@pytest.mark.parametrize(
    ("device", "dtype", "flash", "kernel"),
    [
        ("cpu", torch.bfloat16, True, "sdpa"),  # CPU keeps the per-example SDPA whatever is installed
        ("cpu", torch.float32, True, "sdpa"),
        ("cuda", torch.float32, True, "sdpa"),  # flash-attn has no fp32 kernel
        ("cuda", torch.bfloat16, False, "sdpa"),  # flash-attn not installed
        ("cuda", torch.bfloat16, True, "flash"),
        ("cuda", torch.float16, True, "flash"),
        ("mps", torch.float16, True, "sdpa"),
    ],
)
def test_the_flash_kernel_only_on_cuda_in_half_precision_when_installed(
    monkeypatch: pytest.MonkeyPatch, device: str, dtype: torch.dtype, flash: bool, kernel: str
) -> None:
    monkeypatch.setattr(packing, "flash_varlen_function", lambda: _reference_flash if flash else None)
    assert varlen_kernel(torch.device(device), dtype) == kernel


def test_flash_attn_absent_here_means_the_sdpa_path() -> None:
    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed in this environment")
    assert packing.flash_varlen_function() is None
    assert varlen_kernel(torch.device("cuda"), torch.bfloat16) == "sdpa"


def _reference_flash(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, **kwargs: Any) -> torch.Tensor:
    """flash_attn_varlen_func's contract, written out: (total, heads, dim) in and out, causal per sequence, a
    window (left, right) of keys at most `left` before the query, query heads grouped onto key/value heads."""
    assert cu_seqlens_q.dtype == torch.int32 and torch.equal(cu_seqlens_q, cu_seqlens_k)
    assert kwargs["causal"] and max_seqlen_q == max_seqlen_k == int(cu_seqlens_q.diff().max())
    left = kwargs["window_size"][0]
    parts = []
    for start, end in pairwise(cu_seqlens_q.tolist()):
        qs = q[start:end].transpose(0, 1)
        ks, vs = (t[start:end].transpose(0, 1).repeat_interleave(q.shape[1] // k.shape[1], 0) for t in (k, v))
        distance = torch.arange(end - start)[:, None] - torch.arange(end - start)[None, :]
        visible = (distance >= 0) & ((distance <= left) if left >= 0 else True)
        scores = (qs @ ks.transpose(1, 2) * kwargs["softmax_scale"]).masked_fill(~visible, float("-inf"))
        parts.append((scores.softmax(-1) @ vs).transpose(0, 1))
    return torch.cat(parts)


@pytest.mark.parametrize("window", [None, WINDOW])
def test_the_flash_path_hands_the_packed_row_over_as_flash_attn_reads_it(
    monkeypatch: pytest.MonkeyPatch, window: int | None
) -> None:
    """Layouts, bounds, scale and window as flash-attn takes them (a reference of its contract stands in for the
    CUDA kernel, which cannot run here): the same output as the per-example SDPA path."""
    torch.manual_seed(0)
    lengths = [3, WINDOW, 20, 9]
    bounds = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    query, key, value = (torch.randn(1, heads, sum(lengths), 16) for heads in (4, 2, 2))
    inputs = (SlidingModule(window), query, key, value, None)
    sdpa, _ = varlen_sdpa_attention(*inputs, scaling=0.25, cu_seq_lens_q=bounds)
    monkeypatch.setattr(packing, "flash_varlen_function", lambda: _reference_flash)
    monkeypatch.setattr(packing, "varlen_kernel", lambda device, dtype: "flash")
    flash, _ = varlen_sdpa_attention(*inputs, scaling=0.25, cu_seq_lens_q=bounds, max_length_q=max(lengths))
    assert flash.shape == sdpa.shape == (1, sum(lengths), 4, 16)
    assert torch.allclose(flash, sdpa, atol=1e-5)


def test_the_sdpa_path_builds_its_tensors_on_the_query_device() -> None:
    """Packed attention on torch's lazy device (a second device here), with no op mixing it with the CPU."""
    torch.manual_seed(0)
    lengths = [3, 20, 9]  # 20 > WINDOW: the banded mask is built
    bounds = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    tensors = [torch.randn(1, heads, sum(lengths), 16) for heads in (4, 2, 2)]
    expected, _ = varlen_sdpa_attention(SlidingModule(WINDOW), *tensors, None, scaling=0.25, cu_seq_lens_q=bounds)
    lazy = lazy_device()
    with strict_device():
        got, _ = varlen_sdpa_attention(
            SlidingModule(WINDOW), *(t.to(lazy) for t in tensors), None, scaling=0.25, cu_seq_lens_q=bounds.to(lazy)
        )
    assert got.device.type == "lazy"
    assert torch.allclose(got.cpu(), expected, atol=1e-5)
