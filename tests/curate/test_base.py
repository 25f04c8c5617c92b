"""curate/base.py: verdicts (a drop always names its category), the dedup key, the shared context, cluster sizes."""

from __future__ import annotations

import numpy as np
import pytest

from tunewise.curate.base import TORCH_THREADS, Context, Verdict, cluster_sizes, default_key, drop, fixed_threads, keep
from tunewise.data.records import Record, RejectCategory


def rec(text: str, line: int = 1) -> Record:
    return Record("classification", {"text": text, "label": "a"}, "in.jsonl", line)


def test_keep_carries_the_kinds_of_change_and_no_category():
    verdict = keep(rec("x"), ["nfc", "mojibake"])
    assert verdict.drop is None and verdict.category is None and verdict.changes == {"nfc", "mojibake"}


def test_a_drop_names_its_category_and_keeps_it_whatever_the_reason_says():
    record = rec("x")
    first = drop(record, RejectCategory.EXACT_DUPLICATE, "exact duplicate of in.jsonl:1")
    reworded = drop(record, RejectCategory.EXACT_DUPLICATE, "same text as the record on line 1")
    assert first.category is reworded.category is RejectCategory.EXACT_DUPLICATE
    assert drop(record, "dedup:exact", "x").category is RejectCategory.EXACT_DUPLICATE  # the exact string is accepted


@pytest.mark.parametrize("category", [None, "", "duplicate", "other", "dedup:exact "])
def test_a_drop_without_a_known_category_is_an_error(category):
    with pytest.raises(TypeError, match="needs its category"):
        Verdict(rec("x"), "some reason", category)


def test_a_kept_record_with_a_category_is_an_error():
    with pytest.raises(TypeError, match="kept record has no drop category"):
        Verdict(rec("x"), None, RejectCategory.EXACT_DUPLICATE)


def test_default_key_folds_case_nfc_and_spaces_and_strips_what_it_is_told():
    assert default_key("Cafe\u0301  IS\n good") == "caf\u00e9 is good"
    text = "@bob see https://x.co/1 and www.y.com #news NOW"
    assert default_key(text) == "@bob see https://x.co/1 and www.y.com #news now"
    assert default_key(text, ["urls"]) == "@bob see and #news now"
    assert default_key(text, ["urls", "mentions", "hashtags"]) == "see and now"


def test_context_key_uses_the_strip_options_the_normalize_step_set():
    context = Context(seed=0)
    assert context.key(rec("Hi @bob")) == "hi @bob"
    context.key_strip = ("mentions",)
    assert context.key(rec("Hi @bob")) == "hi"


def test_embeddings_are_computed_once_per_distinct_text():
    calls: list[list[str]] = []

    def embedder(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)

    context = Context(seed=0, embedder=embedder)
    first = context.embed([rec("ab"), rec("abc"), rec("ab")])
    assert first.shape == (3, 2) and first[:, 0].tolist() == [2.0, 3.0, 2.0]
    again = context.embed([rec("abc"), rec("abcd")])
    assert again[:, 0].tolist() == [3.0, 4.0]
    assert calls == [["ab", "abc"], ["abcd"]]
    assert context.embed([]).shape == (0, 1)


def test_the_tokenizer_loads_once_and_only_when_asked():
    loads: list[int] = []
    context = Context(seed=0, tokenizer_loader=lambda: loads.append(1) or "tokenizer")
    assert loads == []
    assert context.tokenizer() == context.tokenizer() == "tokenizer" and loads == [1]
    assert Context(seed=0).tokenizer() is None


def test_cluster_sizes_count_each_kept_record_with_its_copies_largest_first():
    assert cluster_sizes([]) == []
    assert cluster_sizes([4, 0, 4, 4, 9]) == [4, 2, 2]
    assert cluster_sizes(["a", "b", "a"]) == [3, 2]


def test_fixed_threads_sets_torch_threads_and_restores_them():
    import torch

    before = torch.get_num_threads()
    with fixed_threads():
        assert torch.get_num_threads() == TORCH_THREADS
    assert torch.get_num_threads() == before
