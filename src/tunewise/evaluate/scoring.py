"""Log-likelihood scoring: answer choices (classification) and completion tokens (perplexity)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from rich.progress import Progress

from tunewise.data.encode import IGNORE_INDEX, Encoded
from tunewise.models.device import input_device


@torch.no_grad()
def choice_logprobs(
    model: Any,
    prompts: list[list[int]],
    choices: list[list[int]],
    pad_id: int,
    batch_size: int,
    progress: Progress | None = None,
    description: str = "scoring",
) -> torch.Tensor:
    """Sum of log p(choice tokens | prompt) for every prompt x choice, shape [n_prompts, n_choices], on the CPU.

    Tokens every prompt starts with (system prompt, instructions, few-shot examples) run once and
    their KV cache is reused; each prompt's own tail then runs once and its cache is shared by all
    choices. Scoring C labels with k shots thus costs about one zero-shot pass, not C x (k+1).
    The inputs go to the model's device and the scores stay there until all batches have run.
    """
    model.eval()
    device = input_device(model)
    n_choices = len(choices)
    choice_ids, choice_mask = right_pad(choices, pad_id, device)
    shared = shared_prefix_length(prompts)
    window = sliding_window(model)
    if window is not None and shared + max(len(p) - shared for p in prompts) + choice_ids.shape[1] > window:
        # A sliding window counts positions in the row, padding included, and sharing the prefix puts the tails'
        # padding between prefix and tail: past the window that would hide real tokens. Padding at the start of
        # whole prompts does not (the real tokens stay contiguous), so past the window nothing is shared.
        shared = 0
    prefix_cache = None
    if shared:
        prefix_cache = model(input_ids=torch.tensor([prompts[0][:shared]], device=device), use_cache=True).cache
    tails = [p[shared:] for p in prompts]
    order: list[int] = []
    parts: list[torch.Tensor] = []
    task = progress.add_task(description, total=len(prompts)) if progress else None
    for index in batches_by_length(tails, batch_size):
        batch = len(index)
        ids, mask = left_pad([tails[i] for i in index], pad_id, device)
        positions = shared + (mask.cumsum(-1) - 1).clamp(min=0)
        cache = None
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(batch)
            mask = torch.cat([torch.ones(batch, shared, dtype=mask.dtype, device=device), mask], dim=1)
        out = model(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1
        )
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [B, V]
        total = first[:, choice_ids[:, 0].to(first.device)]  # [B, C]: every choice's first token
        if choice_ids.shape[1] > 1:  # single-token choices are scored by `first` alone
            cache = out.cache
            cache.batch_repeat_interleave(n_choices)
            cont_ids = choice_ids.repeat(batch, 1)
            cont_mask = torch.cat([mask.repeat_interleave(n_choices, 0), choice_mask.repeat(batch, 1)], dim=1)
            steps = torch.arange(choice_ids.shape[1], device=device)
            cont_pos = positions[:, -1:].repeat_interleave(n_choices, 0) + 1 + steps
            logits = model(input_ids=cont_ids, attention_mask=cont_mask, position_ids=cont_pos, cache=cache).logits
            total = total + _continuation_logprobs(logits, choice_ids, choice_mask).view(batch, n_choices)
        order += index
        parts.append(total)
        if progress is not None and task is not None:
            progress.advance(task, batch)
    scores = torch.empty(len(prompts), n_choices)
    if parts:  # one copy to the host for the whole split, not one per batch or per score
        scores[order] = torch.cat(parts).cpu()
    return scores


def _continuation_logprobs(logits: torch.Tensor, choice_ids: torch.Tensor, choice_mask: torch.Tensor) -> torch.Tensor:
    """Sum of log p(choice token j + 1 | ..., token j) over each choice's own tokens, shape [B*C].

    `logits` ([B*C, L, V], B prompts each followed by the C right-padded choices of `choice_ids` [C, L]) predict
    the token after each position; padding positions count nothing."""
    batch = logits.shape[0] // choice_ids.shape[0]
    targets = choice_ids[:, 1:].repeat(batch, 1).to(logits.device)  # [B*C, L-1]
    real = choice_mask[:, 1:].repeat(batch, 1).to(logits.device).bool()
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, targets[..., None])[..., 0]
    return torch.where(real, logp, torch.zeros_like(logp)).sum(dim=1)


def sliding_window(model: Any) -> int | None:
    """The model's sliding attention window, if its config has one (Gemma 3, Mistral, ...)."""
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(text, "sliding_window", None)
    return window if isinstance(window, int) and window > 0 else None


MIN_SHARED_PREFIX = 8  # below this, copying the prefix cache costs about what it saves


def shared_prefix_length(prompts: list[list[int]]) -> int:
    """How many leading tokens all prompts have in common, leaving each at least one token of its own."""
    if len(prompts) < 2:
        return 0
    first, length = prompts[0], min(len(p) for p in prompts) - 1
    for prompt in prompts[1:]:
        length = next((i for i in range(length) if prompt[i] != first[i]), length)
    return length if length >= MIN_SHARED_PREFIX else 0


# The most vocabulary logits one forward of `completion_nll` makes: 64M floats, 256 MB. Full [B, T, V] logits of
# a 262,144-token vocabulary (Gemma 3) are 1 GB for 8 x 128 tokens, and cross-entropy's log-softmax doubles that.
LOGIT_ELEMENTS = 1 << 26


@torch.no_grad()
def completion_nll(model: Any, items: list[Encoded], pad_id: int, batch_size: int) -> tuple[float, int]:
    """Total negative log-likelihood of the answer tokens and how many there were.

    Only the positions that predict an answer token are projected onto the vocabulary (`logits_to_keep`, a bool
    mask), and a batch is split where its answer tokens would make more than LOGIT_ELEMENTS logits (one example
    with more answer tokens than that is its own part): the same sum, without a vocabulary-sized tensor per prompt
    token."""
    model.eval()
    device = input_device(model)
    rows = max(1, LOGIT_ELEMENTS // _vocab_size(model))
    sums: list[torch.Tensor] = []  # on the logits' device: read back once, at the end
    count = 0
    for index in batches_by_length([e.input_ids for e in items], batch_size):
        for part in _within_rows(index, items, rows):
            # The labels stay on the host, where which positions are trained is known without a device sync.
            labels, _ = right_pad([items[i].labels for i in part], IGNORE_INDEX)
            trained = labels[:, 1:] != IGNORE_INDEX
            if not trained.any():
                continue
            ids, mask = right_pad([items[i].input_ids for i in part], pad_id, device)
            keep = torch.zeros_like(labels, dtype=torch.bool)
            keep[:, :-1] = trained  # position t predicts token t + 1
            keep = keep.to(device)
            logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
            if logits.ndim == 3:  # a model that ignores logits_to_keep returns every position
                logits = logits[keep.to(logits.device)]
            targets = labels[:, 1:][trained].to(logits.device)  # the row-major order of hidden_states[keep]
            for start in range(0, len(targets), rows):  # cross-entropy's fp32 log-softmax: LOGIT_ELEMENTS at most
                chunk = slice(start, start + rows)
                sums.append(F.cross_entropy(logits[chunk].float(), targets[chunk], reduction="sum"))
            count += len(targets)
    total = sum(torch.stack(sums).cpu().tolist()) if sums else 0.0  # summed in float64, in order, as before
    return total, count


def _vocab_size(model: Any) -> int:
    embeddings = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(embeddings, "weight", None)
    return int(weight.shape[0]) if weight is not None else int(getattr(model.config, "vocab_size", 1) or 1)


def _within_rows(index: list[int], items: list[Encoded], rows: int) -> Iterator[list[int]]:
    """`index` in consecutive parts whose answer tokens fit in `rows` logit rows (an example alone always runs)."""
    part: list[int] = []
    used = 0
    for i in index:
        answer = sum(1 for label in items[i].labels[1:] if label != IGNORE_INDEX)
        if part and used + answer > rows:
            yield part
            part, used = [], 0
        part.append(i)
        used += answer
    if part:
        yield part


def batches_by_length(sequences: list[list[int]], batch_size: int) -> Iterator[list[int]]:
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]), reverse=True)
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def left_pad(rows: list[list[int]], pad: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded on the left and their attention mask, [rows, longest], built on `device` (CPU if None)."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return ids, mask


def right_pad(rows: list[list[int]], pad: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded on the right and their attention mask, [rows, longest], built on `device` (CPU if None)."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([list(r) + [pad] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    return ids, mask
