"""Log-likelihood scoring: answer choices (classification) and completion tokens (perplexity)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch
from rich.progress import Progress

from tunewise.data.encode import IGNORE_INDEX, Encoded


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
    """Sum of log p(choice tokens | prompt) for every prompt x choice, shape [n_prompts, n_choices].

    Tokens every prompt starts with (system prompt, instructions, few-shot examples) run once and
    their KV cache is reused; each prompt's own tail then runs once and its cache is shared by all
    choices. Scoring C labels with k shots thus costs about one zero-shot pass, not C x (k+1).
    """
    model.eval()
    n_choices = len(choices)
    scores = torch.empty(len(prompts), n_choices)
    choice_ids, choice_mask = right_pad(choices, pad_id)
    shared = shared_prefix_length(prompts)
    prefix_cache = model(input_ids=torch.tensor([prompts[0][:shared]]), use_cache=True).cache if shared else None
    tails = [p[shared:] for p in prompts]
    task = progress.add_task(description, total=len(prompts)) if progress else None
    for index in batches_by_length(tails, batch_size):
        batch = len(index)
        ids, mask = left_pad([tails[i] for i in index], pad_id)
        positions = shared + (mask.cumsum(-1) - 1).clamp(min=0)
        cache = None
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(batch)
            mask = torch.cat([torch.ones(batch, shared, dtype=mask.dtype), mask], dim=1)
        out = model(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1
        )
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [B, V]
        cache = out.cache
        cache.batch_repeat_interleave(n_choices)
        cont_ids = choice_ids.repeat(batch, 1)
        cont_mask = torch.cat([mask.repeat_interleave(n_choices, 0), choice_mask.repeat(batch, 1)], dim=1)
        cont_pos = positions[:, -1:].repeat_interleave(n_choices, 0) + 1 + torch.arange(choice_ids.shape[1])
        logits = model(input_ids=cont_ids, attention_mask=cont_mask, position_ids=cont_pos, cache=cache).logits
        rest = torch.log_softmax(logits.float(), dim=-1)  # [B*C, L, V]
        for b, row in enumerate(index):
            for c, choice in enumerate(choices):
                k = b * n_choices + c
                total = first[b, choice[0]]
                if len(choice) > 1:
                    steps = torch.arange(len(choice) - 1)
                    total = total + rest[k, steps, torch.tensor(choice[1:])].sum()
                scores[row, c] = total
        if progress is not None and task is not None:
            progress.advance(task, batch)
    return scores


MIN_SHARED_PREFIX = 8  # below this, copying the prefix cache costs about what it saves


def shared_prefix_length(prompts: list[list[int]]) -> int:
    """How many leading tokens all prompts have in common, leaving each at least one token of its own."""
    if len(prompts) < 2:
        return 0
    first, length = prompts[0], min(len(p) for p in prompts) - 1
    for prompt in prompts[1:]:
        length = next((i for i in range(length) if prompt[i] != first[i]), length)
    return length if length >= MIN_SHARED_PREFIX else 0


@torch.no_grad()
def completion_nll(model: Any, items: list[Encoded], pad_id: int, batch_size: int) -> tuple[float, int]:
    """Total negative log-likelihood of the answer tokens and how many there were."""
    model.eval()
    total, count = 0.0, 0
    for index in batches_by_length([e.input_ids for e in items], batch_size):
        ids, mask = right_pad([items[i].input_ids for i in index], pad_id)
        labels, _ = right_pad([items[i].labels for i in index], IGNORE_INDEX)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        target = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            target.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        total += float(nll)
        count += int((target != IGNORE_INDEX).sum())
    return total, count


def batches_by_length(sequences: list[list[int]], batch_size: int) -> Iterator[list[int]]:
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]), reverse=True)
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def right_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([list(r) + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask
