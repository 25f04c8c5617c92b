"""data/encode.py: token ids with loss labels, bounded tokenization of long texts, and the rejects of records
that max_length or the template's limits would ruin, each with its category."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tunewise.config import PromptConfig
from tunewise.data.encode import (
    IGNORE_INDEX,
    count_tokens,
    encode_prompt,
    encode_prompts,
    encode_records,
    encode_segments,
    first_tokens,
    prompt_prefix,
    special_prefix,
)
from tunewise.data.prompt import PromptRenderer, Segment
from tunewise.data.records import Record, RejectCategory
from tunewise.data.template_limits import TemplateLimits
from tunewise.data.template_sizes import RecordTooLong
from tunewise.errors import RenderError


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


class BosTokenizer:
    """A tokenizer that puts id 1 in front of every text when asked for special tokens (Llama-2 style)."""

    bos_token = "<s>"

    def __call__(self, text, add_special_tokens: bool = True):
        ids = [ord(c) for c in text] if isinstance(text, str) else [[ord(c) for c in t] for t in text]
        return {"input_ids": [1, *ids] if add_special_tokens and isinstance(text, str) else ids}


def _record(text: str, line: int = 1, **extra) -> Record:
    return Record("classification", {"text": text, "label": "positive"}, "t.jsonl", line, extra)


def test_special_prefix_is_what_the_tokenizer_adds_in_front(tokenizer):
    assert special_prefix(BosTokenizer()) == [1]
    without = tokenizer("the car", add_special_tokens=False)["input_ids"]
    assert special_prefix(tokenizer) + without == tokenizer("the car")["input_ids"]


def test_the_prefix_is_left_out_when_the_text_already_starts_with_bos():
    assert prompt_prefix(BosTokenizer(), "<s>hello", [1]) == []
    assert prompt_prefix(BosTokenizer(), "hello", [1]) == [1]
    assert encode_prompt(BosTokenizer(), "hi", [1]) == [1, ord("h"), ord("i")]


def test_first_tokens_of_a_long_text_equal_the_start_of_the_whole_tokenization(tokenizer):
    text = " ".join(["the car was great today and the trip was very happy"] * 400)
    whole = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids, more = first_tokens(tokenizer, text, 50)
    assert ids == whole[:50] and more
    short, more = first_tokens(tokenizer, "the car", 50)
    assert short == tokenizer("the car", add_special_tokens=False)["input_ids"] and not more


def test_count_tokens_is_exact_up_to_the_cap_and_a_lower_bound_past_it(tokenizer):
    text = "the car was great " * 100
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert count_tokens(tokenizer, text, n) == (n, True)
    assert count_tokens(tokenizer, text, 10) == (11, False)


def test_encode_segments_trains_only_on_answer_tokens_and_cuts_at_max_length(tokenizer):
    segments = [Segment("the car was", False), Segment(" great", True)]
    full = encode_segments(segments, tokenizer, 64, [])
    prompt_ids = tokenizer("the car was", add_special_tokens=False)["input_ids"]
    assert full.labels[: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    assert full.labels[len(prompt_ids) :] == full.input_ids[len(prompt_ids) :] and not full.truncated
    cut = encode_segments(segments, tokenizer, 2, [])
    assert cut.input_ids == full.input_ids[:2] and cut.truncated


def test_encode_prompts_tokenizes_each_rendered_prompt(tokenizer):
    renderer = PromptRenderer(PromptConfig(chat_template=False), "classification", tokenizer, ["positive"])
    (ids,) = encode_prompts(tokenizer, renderer, [_record("the car")])
    assert tokenizer.decode(ids) == renderer.prompt(_record("the car"))


def test_records_that_cannot_be_trained_on_are_rejected_with_their_category(tokenizer):
    cfg = PromptConfig(template="{{ text }} {{ 10 // n }}", chat_template=False)
    limits = TemplateLimits(output_chars=400)
    renderer = PromptRenderer(cfg, "classification", tokenizer, ["positive"], limits=limits)
    records = [
        _record("the car", 1, n=1),
        _record("the car", 2, n=0),  # ZeroDivisionError: this record's value
        _record("great " * 100, 3, n=1),  # past the template's output limit
        _record("great " * 30, 4, n=1),  # renders, but the answer is past max_length
    ]
    items, rejects = encode_records(records, renderer, tokenizer, max_length=20)
    assert len(items) == 1 and items[0].label == "positive"
    assert [(r.line, r.stage, r.category) for r in rejects] == [
        (2, "encode", RejectCategory.UNRENDERABLE),
        (3, "encode", RejectCategory.TOO_MANY_TOKENS),
        (4, "encode", RejectCategory.TOO_MANY_TOKENS),
    ]
    assert rejects[0].reason.startswith("the prompt cannot be rendered: prompt.template failed: ZeroDivisionError")
    assert rejects[1].reason.startswith("too long: prompt.template: output exceeds the limit of 400 characters")
    assert rejects[1].reason.endswith("far more than train.max_length=20 tokens hold; shorten it")
    assert rejects[2].reason.startswith("answer cut entirely by train.max_length=20 (prompt is ")


class _Failing:
    """A renderer whose every record fails with `error`."""

    def __init__(self, error: RenderError) -> None:
        self.error = error

    def segments(self, record: Record) -> list[Segment]:
        raise self.error


@pytest.mark.parametrize(
    ("error", "category"),
    [
        (RecordTooLong("the join filter would make 10 characters"), RejectCategory.TOO_MANY_TOKENS),
        (RecordTooLong("anything at all"), RejectCategory.TOO_MANY_TOKENS),
        (RenderError("the chat template says: exceeds the limit of 5 turns"), RejectCategory.UNRENDERABLE),
        (RenderError("output over the limit of 400"), RejectCategory.UNRENDERABLE),
    ],
)
def test_too_long_or_unrenderable_follows_the_kind_of_error_not_its_words(tokenizer, error, category):
    _, (reject,) = encode_records([_record("x")], _Failing(error), tokenizer, max_length=20)
    assert reject.category is category and error.reason in reject.reason
