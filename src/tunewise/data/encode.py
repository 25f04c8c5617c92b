"""Segments -> token ids with loss labels (-100 on prompt tokens); reject what max_length would ruin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunewise.data.prompt import PromptRenderer
from tunewise.data.records import Record, Reject, RejectCategory
from tunewise.data.template_sizes import RecordTooLong
from tunewise.errors import RenderError

IGNORE_INDEX = -100
# A record far past max_length is tokenized only as far as it is used: a 50 MB line was tokenized whole
# (8.7M tokens, 6.7 GB, 90 s) only to be cut to max_length. A prefix of a text is tokenized instead, first
# _CHARS_PER_TOKEN characters per token needed, four times more while it yields too few tokens (a few
# times the work of tokenizing just enough, at most). Cutting a text can change the last few tokens of the
# prefix, never the early ones: the prefix must yield _MARGIN tokens more than are kept, and it is cut at
# a space, so the cut falls between words, where tokenizers split anyway.
_CHARS_PER_TOKEN = 8
_MARGIN = 64
PROMPT_COUNT_FACTOR = 16  # a prompt's length is counted exactly up to this many times max_length


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool
    label: str | None = None  # the record's class (classification): what train.sampler stratifies on


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


def first_tokens(tokenizer: Any, text: str, limit: int) -> tuple[list[int], bool]:
    """The first `limit` token ids of `text` (no special tokens added) and whether it has more, without
    tokenizing all of a text far longer than that."""
    size = (limit + _MARGIN) * _CHARS_PER_TOKEN
    while size < len(text):
        space = text.rfind(" ", size // 2, size)
        ids = tokenizer(text[: space if space > 0 else size], add_special_tokens=False)["input_ids"]
        if len(ids) > limit + _MARGIN:
            return ids[:limit], True
        size *= 4
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[:limit], len(ids) > limit


def count_tokens(tokenizer: Any, text: str, cap: int) -> tuple[int, bool]:
    """(tokens in `text`, exact): exact up to `cap`; past it a lower bound, and only a prefix is tokenized."""
    ids, more = first_tokens(tokenizer, text, cap)
    return (len(ids) + 1, False) if more else (len(ids), True)


def encode_segments(segments: list, tokenizer: Any, max_length: int, prefix: list[int]) -> Encoded:
    prefix = prompt_prefix(tokenizer, segments[0].text if segments else "", prefix)
    input_ids, labels = list(prefix), [IGNORE_INDEX] * len(prefix)
    truncated = len(input_ids) > max_length
    for segment in segments:
        # Tokens past max_length are cut anyway: take only what fits (and learn whether there was more).
        ids, more = first_tokens(tokenizer, segment.text, max(max_length - len(input_ids), 0))
        input_ids += ids
        labels += ids if segment.train else [IGNORE_INDEX] * len(ids)
        truncated = truncated or more
    return Encoded(input_ids[:max_length], labels[:max_length], truncated)


def encode_records(
    records: list[Record], renderer: PromptRenderer, tokenizer: Any, max_length: int
) -> tuple[list[Encoded], list[Reject]]:
    prefix = special_prefix(tokenizer)
    encoded, rejects = [], []
    for record in records:
        try:
            item = encode_segments(renderer.segments(record), tokenizer, max_length, prefix)
        except RenderError as exc:  # this record's content is to blame (a config error still stops the run)
            rejects.append(_unrenderable(record, exc, max_length))
            continue
        if all(label == IGNORE_INDEX for label in item.labels):
            n, exact = count_tokens(tokenizer, renderer.prompt(record), PROMPT_COUNT_FACTOR * max_length)
            reason = (
                f"answer cut entirely by train.max_length={max_length} "
                f"(prompt is {n if exact else f'over {n - 1}'} tokens); raise train.max_length or shorten the prompt"
            )
            category = RejectCategory.TOO_MANY_TOKENS
            rejects.append(Reject(record.source, record.line, None, reason, stage="encode", category=category))
            continue
        item.label = record.label
        encoded.append(item)
    return encoded, rejects


def _unrenderable(record: Record, exc: RenderError, max_length: int) -> Reject:
    """A record the prompt cannot be made of. Past a size limit of the template engine (RecordTooLong) it is too
    long: a prompt of a million characters is far more than any max_length holds."""
    if isinstance(exc, RecordTooLong):
        reason = f"too long: {exc.reason}, far more than train.max_length={max_length} tokens hold; shorten it"
        category = RejectCategory.TOO_MANY_TOKENS
    else:
        reason, category = f"the prompt cannot be rendered: {exc.reason}", RejectCategory.UNRENDERABLE
    return Reject(record.source, record.line, None, reason, stage="encode", category=category)
