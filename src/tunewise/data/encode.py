"""Segments -> token ids with loss labels (-100 on prompt tokens); reject what max_length would ruin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunewise.data.prompt import PromptRenderer
from tunewise.data.records import Record, Reject

IGNORE_INDEX = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


def special_prefix(tokenizer: Any) -> list[int]:
    """Tokens the tokenizer adds in front by itself (e.g. BOS for Llama-2 style models)."""
    with_special = tokenizer("x", add_special_tokens=True)["input_ids"]
    without = tokenizer("x", add_special_tokens=False)["input_ids"]
    return list(with_special[: len(with_special) - len(without)]) if with_special[-len(without) :] == without else []


def prompt_prefix(tokenizer: Any, text: str, prefix: list[int]) -> list[int]:
    """The special prefix, unless the rendered text already carries BOS (chat templates often do)."""
    bos = getattr(tokenizer, "bos_token", None)
    return [] if bos and text.startswith(bos) else prefix


def encode_prompt(tokenizer: Any, text: str, prefix: list[int]) -> list[int]:
    """Token ids of a rendered prompt for scoring or generation, tokenized as in training."""
    return prompt_prefix(tokenizer, text, prefix) + tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_prompts(tokenizer: Any, renderer: PromptRenderer, records: list[Record]) -> list[list[int]]:
    """Every record's rendered prompt as token ids, ready for label scoring or generation."""
    prefix = special_prefix(tokenizer)
    return [encode_prompt(tokenizer, renderer.prompt(r), prefix) for r in records]


def encode_segments(segments: list, tokenizer: Any, max_length: int, prefix: list[int]) -> Encoded:
    prefix = prompt_prefix(tokenizer, segments[0].text if segments else "", prefix)
    input_ids, labels = list(prefix), [IGNORE_INDEX] * len(prefix)
    for segment in segments:
        ids = tokenizer(segment.text, add_special_tokens=False)["input_ids"]
        input_ids += ids
        labels += ids if segment.train else [IGNORE_INDEX] * len(ids)
    truncated = len(input_ids) > max_length
    return Encoded(input_ids[:max_length], labels[:max_length], truncated)


def encode_records(
    records: list[Record], renderer: PromptRenderer, tokenizer: Any, max_length: int
) -> tuple[list[Encoded], list[Reject]]:
    prefix = special_prefix(tokenizer)
    encoded, rejects = [], []
    for record in records:
        item = encode_segments(renderer.segments(record), tokenizer, max_length, prefix)
        if all(label == IGNORE_INDEX for label in item.labels):
            prompt_len = len(tokenizer(renderer.prompt(record), add_special_tokens=False)["input_ids"])
            reason = (
                f"answer cut entirely by train.max_length={max_length} (prompt is {prompt_len} tokens); "
                "raise train.max_length or shorten the prompt"
            )
            rejects.append(Reject(record.source, record.line, None, reason, stage="encode"))
            continue
        encoded.append(item)
    return encoded, rejects
