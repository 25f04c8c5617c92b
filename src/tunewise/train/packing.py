"""Padding-free batches: the examples of a micro-batch packed into one row, attention kept per example.

What transformers 5.24 does with a packed row (verified in `masking_utils.py` and by `tests/train/test_packing.py`):

- `create_causal_mask` detects packing from `position_ids` that restart (`find_packed_sequence_indices`) and builds a
  block-diagonal causal mask for the sdpa, eager and flex implementations, but only when `attention_mask is None`
  and `cache is None`. `LlamaModel.forward` creates a `DynamicCache` whenever `use_cache` resolves to True, and
  `config.use_cache` defaults to True: the packed examples then attend to each other silently. The Trainer sets
  `config.use_cache = args.use_cache` (False by default), but nothing else does, so the batch carries
  `use_cache=False` itself.
- With sdpa the block-diagonal mask is dense [1, 1, T, T]: attention costs T^2 for T packed tokens, most of it on
  masked pairs. `enable_varlen_attention` registers an attention function that runs causal SDPA per example from the
  batch's `cu_seq_lens_q` (the FlashAttention kwarg names, so flash_attention_2 on a GPU reads the same batch), and
  plain sdpa for everything else (padded batches, generation with a cache). It is exact, and faster than the dense
  mask on long rows (SmolLM2-width probe, 2 layers, 1 thread, 8 examples of 200-450 tokens: 1.9 s vs 3.4 s a step).
- Sliding-window layers (Gemma 3: 5 of every 6 layers; the model passes `sliding_window`, None on full layers) keep
  transformers' convention, `sliding_window_overlay` in `masking_utils.py`: a query attends to key `k` when
  `q - sliding_window < k <= q`, i.e. itself and the `sliding_window - 1` tokens before it (flash attention's
  `window_size=(w - 1, w - 1)` says the same). An example no longer than the window is plain causal; only a longer
  one gets its banded [t, t] mask.
- On CUDA in fp16 or bf16, with the `flash_attn` package installed, a packed row runs flash-attn's
  `flash_attn_varlen_func` (one kernel over the whole row, the same `cu_seq_lens` and window) instead of one SDPA per
  example; anywhere else (CPU, fp32, no flash-attn) the per-example SDPA path runs, on the query's device
  (`varlen_kernel` decides).
- Logit soft-capping: Gemma 3's attention does not pass `softcap` (its `attn_logit_softcapping` is unused by every
  implementation, eager included), and `final_logit_softcapping` is applied element-wise after the LM head, so it
  commutes with `logits_to_keep`. A model that does pass `softcap` (Gemma 2) is refused, as transformers' sdpa does.

Batching: a packed row wastes nothing on padding, so packing needs no length grouping; `train.sampler` picks the
order (sampling.py) and is the same for the padded and the packed paths, which gives them identical micro-batches
and makes them comparable step for step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from tunewise.data.encode import IGNORE_INDEX
from tunewise.train.loss import completion_positions, completion_targets

VARLEN_ATTENTION = "tunewise_varlen_sdpa"
FLASH_DTYPES = (torch.float16, torch.bfloat16)  # the only dtypes flash-attn's kernels take


@dataclass
class PackingCollator:
    """Concatenates a micro-batch into one [1, T] row with per-example position ids.

    `completion_only=True` adds `logits_to_keep` (a bool mask, which `slice_logits_to_keep` in 5.24 accepts) and
    `shift_labels` (the matching targets, [1, N]): the model then projects only N hidden states onto the vocabulary.
    The model's own loss (`ForCausalLMLoss` takes `shift_labels`) and `tunewise.train.loss.completion_only_loss`
    both compute the padded path's loss from that; the Trainer counts `num_items_in_batch` from `shift_labels`.
    """

    completion_only: bool = True

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        features = [f for f in features if len(f["input_ids"]) > 0]
        if not features:
            raise ValueError("PackingCollator got a batch of empty examples")
        input_ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        bounds = [0]
        for feature in features:
            ids, labs = list(feature["input_ids"]), list(feature["labels"])
            input_ids += ids
            # The first token of an example is never a target of its own example; -100 also guarantees the last
            # token of the previous example never learns to predict it across the boundary.
            labels += [IGNORE_INDEX, *labs[1:]]
            positions += range(len(ids))
            bounds.append(bounds[-1] + len(ids))
        labels_t = torch.tensor([labels], dtype=torch.long)
        cu_seq_lens = torch.tensor(bounds, dtype=torch.int32)
        longest = int(cu_seq_lens.diff().max())
        batch: dict[str, Any] = {
            "input_ids": torch.tensor([input_ids], dtype=torch.long),
            "labels": labels_t,
            "position_ids": torch.tensor([positions], dtype=torch.long),
            "cu_seq_lens_q": cu_seq_lens,
            "cu_seq_lens_k": cu_seq_lens,
            "max_length_q": longest,
            "max_length_k": longest,
            "use_cache": False,  # a cache disables the packed-sequence mask in 5.24 (see the module docstring)
        }
        if self.completion_only:
            batch["logits_to_keep"] = completion_positions(labels_t)
            batch["shift_labels"] = completion_targets(labels_t)[None]
        return batch


def varlen_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    cu_seq_lens_k: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal SDPA per packed example (no T^2 mask), within the layer's sliding window if it has one; plain sdpa
    when the call is not a packed row."""
    packed = (
        cu_seq_lens_q is not None
        and query.shape[0] == 1
        and query.shape[2] == key.shape[2]  # a cache makes keys longer than queries: not a packed training row
        and (cu_seq_lens_k is None or torch.equal(cu_seq_lens_q, cu_seq_lens_k))
        and getattr(module, "is_causal", True)
    )
    if not packed:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if kwargs.get("softcap") is not None:
        raise ValueError("tunewise's packed attention does not support `softcap`, as transformers' sdpa does not")
    window = kwargs.get("sliding_window", getattr(module, "sliding_window", None))
    if varlen_kernel(query.device, query.dtype) == "flash":
        longest = kwargs.get("max_length_q")  # the collator's, known on the host: no device sync to find it
        return _flash_varlen_attention(query, key, value, cu_seq_lens_q, longest, window, dropout, scaling), None
    gqa = getattr(module, "num_key_value_groups", 1) > 1
    bounds = cu_seq_lens_q.tolist()
    parts = [
        _causal_sdpa(
            query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], window, dropout, scaling, gqa
        )
        for start, end in pairwise(bounds)
    ]
    # [1, heads, t, dim] parts -> one [1, T, heads, dim] tensor, the layout every attention interface returns,
    # written by a single copy (cat then transpose+contiguous would allocate and copy twice)
    return torch.cat([part.transpose(1, 2) for part in parts], dim=1), None


def varlen_kernel(device: torch.device, dtype: torch.dtype) -> str:
    """Which kernel runs a packed row: "flash" (flash-attn's varlen kernel) on CUDA in fp16/bf16 when the
    `flash_attn` package imports, else "sdpa" (causal SDPA per example)."""
    if device.type == "cuda" and dtype in FLASH_DTYPES and flash_varlen_function() is not None:
        return "flash"
    return "sdpa"


@functools.cache
def flash_varlen_function() -> Callable[..., torch.Tensor] | None:
    """flash-attn's `flash_attn_varlen_func`, or None where the package is missing or does not load (a build for
    another CUDA or torch fails at import)."""
    try:
        from flash_attn import flash_attn_varlen_func
    except Exception:  # ImportError, or the OSError/RuntimeError of a mismatched native build
        return None
    return flash_attn_varlen_func


def _flash_varlen_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seq_lens: torch.Tensor,
    longest: int | None,
    window: int | None,
    dropout: float,
    scaling: float | None,
) -> torch.Tensor:
    """The packed row through flash-attn in one call: [1, heads, T, dim] in, [1, T, heads, dim] out, causal within
    each example (and its sliding window, transformers' convention: itself and the `window - 1` keys before it).
    Grouped-query attention needs no repeat: the kernel maps query heads to key/value heads itself."""
    flash = flash_varlen_function()
    assert flash is not None  # varlen_kernel chose this path only when it imports
    bounds = cu_seq_lens.to(device=query.device, dtype=torch.int32)
    longest = int(longest) if longest is not None else int(bounds.diff().max())
    out = flash(
        query[0].transpose(0, 1),  # [T, heads, dim]: the kernel's (total tokens, heads, dim) layout
        key[0].transpose(0, 1),
        value[0].transpose(0, 1),
        cu_seqlens_q=bounds,
        cu_seqlens_k=bounds,
        max_seqlen_q=longest,
        max_seqlen_k=longest,
        dropout_p=dropout,
        softmax_scale=scaling,
        causal=True,
        window_size=(window - 1, window - 1) if window is not None else (-1, -1),
    )
    return out[None]


def _causal_sdpa(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    window: int | None,
    dropout: float,
    scaling: float | None,
    gqa: bool,
) -> torch.Tensor:
    """Causal SDPA over one example; with a sliding window shorter than it, each query sees its last `window` keys."""
    length = query.shape[2]
    if window is None or length <= window:
        return F.scaled_dot_product_attention(
            query, key, value, dropout_p=dropout, scale=scaling, is_causal=True, enable_gqa=gqa
        )
    positions = torch.arange(length, device=query.device)
    distance = positions[:, None] - positions[None, :]  # query index minus key index
    band = (distance >= 0) & (distance < window)
    return F.scaled_dot_product_attention(
        query, key, value, attn_mask=band, dropout_p=dropout, scale=scaling, enable_gqa=gqa
    )


def enable_varlen_attention(model: Any) -> Any:
    """Switch `model` (a PreTrainedModel or a PeftModel over one) to `varlen_sdpa_attention`; returns it.

    The sdpa mask builder stays registered for this name, so padded batches and generation get exactly the masks
    they got before; only calls that carry `cu_seq_lens_q` for a packed row take the per-example path.
    """
    AttentionInterface.register(VARLEN_ATTENTION, varlen_sdpa_attention)
    AttentionMaskInterface.register(VARLEN_ATTENTION, sdpa_mask)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.set_attn_implementation(VARLEN_ATTENTION)
    return model
