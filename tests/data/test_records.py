"""data/records.py: the Record type, checking a row's fields per kind, and rejects whose category is named where
the record is rejected, never read back from the reason's wording."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

import tunewise
from tunewise.data.records import (
    Problem,
    Record,
    Reject,
    RejectCategory,
    brief,
    build_record,
    reject_category,
)

SOURCE = Path(tunewise.__file__).parent

# The categories users count and filter rejects.jsonl on: a rename here is a change to the file format.
PUBLISHED = {
    "length:record_too_large",
    "length:too_many_tokens",
    "format:nested_too_deeply",
    "format:unbalanced_quote",
    "format:invalid_csv",
    "format:invalid_json",
    "format:invalid_encoding",
    "format:data_type",
    "format:extra_values",
    "format:missing_field",
    "format:empty_field",
    "format:missing_messages_list",
    "format:message_missing_key",
    "format:unrecognized_role",
    "format:missing_assistant_message",
    "format:unrenderable",
    "label:unknown_label",
    "label:minority_label",
    "label:conflicting_labels",
    "label:no_confidence",
    "label:low_confidence",
    "label:likely_error",
    "dedup:exact",
    "dedup:near",
    "dedup:semantic",
    "quality:too_short",
    "quality:too_long",
    "quality:repetitive",
    "quality:symbols",
    "quality:garbled",
    "quality:language",
    "relevance:low",
    "balance:capped",
    "decontam:ngram",
    "decontam:near",
}


def _build(row: dict, kind: str = "classification", mapping: dict | None = None, need_answer: bool = True):
    return build_record(row, kind, mapping or {}, "in.jsonl", 4, need_answer)


def test_the_categories_are_the_published_ones():
    assert {c.value for c in RejectCategory} == PUBLISHED


def test_a_reject_without_a_category_cannot_be_made():
    with pytest.raises(TypeError, match="category"):
        Reject("in.jsonl", 1, None, "missing")  # type: ignore[call-arg]
    for wrong in (None, "other", "missing", "format:invalid"):
        with pytest.raises(TypeError, match="a reject needs its category"):
            Reject("in.jsonl", 1, None, "missing", category=wrong)  # type: ignore[arg-type]


def test_a_category_given_as_its_string_is_the_member():
    reject = Reject("in.jsonl", 1, "text", "missing", category="format:missing_field")  # type: ignore[arg-type]
    assert reject.category is RejectCategory.MISSING_FIELD
    assert reject_category(RejectCategory.DATA_TYPE) is RejectCategory.DATA_TYPE


def test_a_reworded_reason_keeps_its_category():
    reject = Reject("in.jsonl", 2, None, "invalid JSON at column 3", "read", category=RejectCategory.INVALID_JSON)
    for reason in ("the line is not JSON", "empty", "missing", "unknown label", "max_length", ""):
        assert dataclasses.replace(reject, reason=reason).to_json()["category"] == "format:invalid_json"


def test_to_json_is_the_rejects_file_row():
    reject = Reject("in.jsonl", 2, "label", "empty", "labels", {"label": " "}, category=RejectCategory.EMPTY_FIELD)
    row = reject.to_json()
    assert row == {
        "source": "in.jsonl",
        "line": 2,
        "stage": "labels",
        "category": "format:empty_field",
        "field": "label",
        "reason": "empty",
        "raw": {"label": " "},
    }
    assert type(row["category"]) is str and json.loads(json.dumps(row)) == row


def test_a_good_row_becomes_a_record_with_canonical_fields_and_extras():
    record = _build(
        {"tweet": "  hello  ", "sentiment": "pos", "id": 7}, mapping={"text": "tweet", "label": "sentiment"}
    )
    assert isinstance(record, Record)
    assert record.fields == {"text": "hello", "label": "pos"} and record.extra == {"id": 7}
    assert (record.where, record.label, record.text) == ("in.jsonl:4", "pos", "hello")
    assert record.to_row() == {"id": 7, "text": "hello", "label": "pos"}
    completion = _build({"prompt": " q ", "completion": " a\n"}, "completion")
    assert completion.fields == {"prompt": "q", "completion": " a\n"}  # the answer keeps its spacing
    assert completion.label is None and completion.text == "q\n a\n"


def test_to_row_leaves_out_the_split_column_and_text_skips_empty_optional_fields():
    record = _build({"instruction": "Do", "input": None, "output": "done", "split": "val"}, "alpaca")
    assert record.fields["input"] == "" and record.text == "Do\ndone"
    assert "split" not in record.to_row() and record.extra == {"split": "val"}


@pytest.mark.parametrize(
    ("row", "kind", "field", "category", "reason"),
    [
        ({"label": "a"}, "classification", "text", "format:missing_field", "missing"),
        ({"text": "  ", "label": "a"}, "classification", "text", "format:empty_field", "empty"),
        ({"text": 5, "label": "a"}, "classification", "text", "format:data_type", "expected a string, got int"),
        ({"text": "x", "label": 1}, "classification", "label", "format:data_type", "label must be a string; quote"),
        ({"messages": []}, "chat", "messages", "format:missing_messages_list", "expected a non-empty list"),
        ({"messages": [{"role": "user"}]}, "chat", "messages", "format:message_missing_key", "message 0: expected"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "chat", "messages", "format:unrecognized_role", "message 0"),
        (
            {"messages": [{"role": "user", "content": "x"}]},
            "chat",
            "messages",
            "format:missing_assistant_message",
            "no",
        ),
    ],
)
def test_a_bad_row_is_a_reject_naming_the_field_category_and_reason(row, kind, field, category, reason):
    reject = _build(row, kind)
    assert isinstance(reject, Reject)
    assert (reject.field, reject.category, reject.stage, reject.raw) == (field, category, "read", row)
    assert reject.reason.startswith(reason)


def test_the_category_does_not_follow_words_from_the_file_inside_the_reason():
    """A role or label quoted in a reason may read like another problem; the category is still the real one."""
    for role in ("invalid JSON", "not valid", "missing", "record too large"):
        reject = _build({"messages": [{"role": role, "content": "x"}]}, "chat")
        assert reject.category is RejectCategory.UNRECOGNIZED_ROLE and role in reject.reason


def test_inputs_to_predict_on_may_lack_the_answer():
    assert isinstance(_build({"text": "x"}, need_answer=False), Record)
    assert isinstance(_build({"text": "x", "label": ""}, need_answer=False), Record)
    assert _build({"label": "a"}, need_answer=False).category is RejectCategory.MISSING_FIELD
    assert isinstance(_build({"messages": [{"role": "user", "content": "x"}]}, "chat", need_answer=False), Record)


def test_problem_pairs_a_category_with_its_reason():
    problem = Problem(RejectCategory.EXTRA_VALUES, "more values than the 2 header columns")
    category, reason = problem
    assert category is problem.category and reason == problem.reason


def test_brief_cuts_a_long_value_for_a_reason():
    assert brief("short") == "'short'"
    cut = brief("x" * 500)
    assert len(cut) == 60 and cut.endswith("...")
    assert brief(["a", 1], limit=6) == "['a..." and brief(["a", 1]) == "['a', 1]"


# -- no category from message text -----------------------------------------------------------------------------

_REASON_NAMES = {"reason", "drop"}  # a reject's reason, a verdict's drop reason
_TEXT_TESTS = {"search", "match", "fullmatch", "findall", "finditer", "startswith", "endswith", "find", "rfind"}
_TEXT_TESTS |= {"index", "count", "partition", "get", "__contains__"}


def _mentions_reason(node: ast.AST) -> bool:
    return any(
        (isinstance(n, ast.Attribute) and n.attr in _REASON_NAMES)
        or (isinstance(n, ast.Name) and n.id in _REASON_NAMES)
        for n in ast.walk(node)
    )


def _looks_into_reason(node: ast.AST) -> bool:
    if isinstance(node, ast.Compare) and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops):
        return any(_mentions_reason(side) for side in (node.left, *node.comparators))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _TEXT_TESTS:
        return _mentions_reason(node.func.value) or any(_mentions_reason(arg) for arg in node.args)
    if isinstance(node, ast.Subscript):
        return _mentions_reason(node.slice)
    name = node.id if isinstance(node, ast.Name) else node.name if isinstance(node, ast.FunctionDef) else None
    return name in {"category_of", "_CATEGORIES"}  # the substring table categories were once looked up in


def reason_text_matches(source: str, filename: str = "<snippet>") -> list[str]:
    """Places in `source` that look into a reason's text: `x in reason`, `pattern.search(exc.reason)`,
    `reason.startswith(...)`, `TABLE[reason]`, and a `category_of` or `_CATEGORIES` table."""
    return [f"{filename}:{node.lineno}" for node in ast.walk(ast.parse(source, filename)) if _looks_into_reason(node)]


@pytest.mark.parametrize(
    "snippet",
    [
        'def category_of(reason):\n    return next((c for needle, c in _CATEGORIES if needle in reason), "other")',
        'def kind(exc):\n    return "length" if _SIZE_LIMIT.search(exc.reason) else "format"',
        'def kind(reject):\n    return "quote" if reject.reason.startswith("unterminated") else None',
        "def kind(reason):\n    return TABLE[reason]",
    ],
)
def test_the_scan_finds_a_category_taken_from_reason_text(snippet: str):
    assert reason_text_matches(snippet)


def test_no_module_derives_a_category_from_reason_text():
    found = [hit for path in sorted(SOURCE.rglob("*.py")) for hit in reason_text_matches(path.read_text(), str(path))]
    assert found == []
