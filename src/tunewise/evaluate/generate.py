"""Batched generation: left padding, length-sorted batches, KV cache, token cap and stop strings."""

from __future__ import annotations

from typing import Any

import torch
from rich.progress import Progress

from tunewise.data.encode import encode_prompts
from tunewise.evaluate.scoring import batches_by_length, left_pad
from tunewise.models.device import input_device


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int = 16,
    stop: list[str] | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    progress: Progress | None = None,
    description: str = "generating",
) -> list[str]:
    """Completions for tokenized prompts, in the prompts' order, cut at the first stop string.

    Sorting by length keeps padding (wasted compute) small; left padding lines up the last prompt
    token of every row so one `generate` call serves the whole batch with its KV cache.
    """
    model.eval()
    device = input_device(model)
    torch.manual_seed(seed)
    outputs: list[str] = [""] * len(prompts)
    stop = [s for s in (stop or []) if s]
    task = progress.add_task(description, total=len(prompts)) if progress else None
    for index in batches_by_length(prompts, batch_size):
        ids, mask = left_pad([prompts[i] for i in index], tokenizer.pad_token_id, device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "do_sample": do_sample,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        }
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p)
        else:  # greedy: silence sampling defaults a model's generation_config may carry
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if stop:
            kwargs.update(stop_strings=stop, tokenizer=tokenizer)
        # Only the new tokens come back to the host, once per batch, to be decoded.
        new_tokens = model.generate(input_ids=ids, attention_mask=mask, **kwargs)[:, ids.shape[1] :].tolist()
        for row, i in enumerate(index):
            outputs[i] = decode_answer(tokenizer, new_tokens[row], stop)
        if progress is not None and task is not None:
            progress.advance(task, len(index))
    return outputs


def generate_answers(
    model: Any,
    tokenizer: Any,
    renderer: Any,
    records: list,
    max_new_tokens: int,
    batch_size: int,
    stop: list[str] | None = None,
    **kwargs: Any,
) -> list[str]:
    """The model's answers to the records' rendered prompts (the same rendering as training)."""
    prompts = encode_prompts(tokenizer, renderer, records)
    return generate(model, tokenizer, prompts, max_new_tokens, batch_size, stop, **kwargs)


def decode_answer(tokenizer: Any, ids: Any, stop: list[str]) -> str:
    """Generated token ids as the answer text every tunewise score reads: special tokens dropped, cut at the first
    stop string, stripped."""
    return cut_at_stop(tokenizer.decode(ids, skip_special_tokens=True), stop)


def cut_at_stop(text: str, stop: list[str]) -> str:
    cut = min((text.find(s) for s in stop if s in text), default=len(text))
    return text[:cut].strip()
