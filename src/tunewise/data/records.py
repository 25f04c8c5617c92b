"""The one record type that crosses every stage, and its validation per kind."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tunewise.data.readers import brief

# Canonical fields of each record kind; `data.fields` maps them to the file's column names.
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "classification": ("text", "label"),
    "completion": ("prompt", "completion"),
    "chat": ("messages",),
    "alpaca": ("instruction", "input", "output"),
}
# Fields whose text is the example's content (the label is not: it is what the text is about).
TEXT_FIELDS = {
    "classification": ("text",),
    "completion": ("prompt", "completion"),
    "alpaca": ("instruction", "input", "output"),
}
OPTIONAL_FIELDS = {"alpaca": {"input"}}
CHAT_ROLES = {"system", "user", "assistant"}


@dataclass(frozen=True)
class Record:
    kind: str
    fields: Mapping[str, Any]
    source: str
    line: int
    extra: Mapping[str, Any] = field(default_factory=dict)
    split: str | None = None  # "train" | "val" | "test" once known

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def text(self) -> str:
        """All the record's text in one string: what dedup, filters and embeddings look at."""
        if self.kind == "chat":
            return "\n".join(m["content"] for m in self.fields["messages"])
        return "\n".join(str(self.fields[name]) for name in TEXT_FIELDS[self.kind] if self.fields.get(name))

    def to_row(self) -> dict[str, Any]:
        """The record as a file row with canonical field names (extra columns kept, split dropped)."""
        return {**{k: v for k, v in self.extra.items() if k != "split"}, **self.fields}

    @property
    def label(self) -> str | None:
        return str(self.fields["label"]) if self.kind == "classification" else None


@dataclass(frozen=True)
class Reject:
    source: str
    line: int
    field: str | None
    reason: str
    stage: str = "read"
    raw: Any = None
    category: str | None = None  # a stable machine-readable kind of problem, e.g. "format:invalid_json"

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "line": self.line,
            "stage": self.stage,
            "category": self.category or category_of(self.reason),
            "field": self.field,
            "reason": self.reason,
            "raw": self.raw,
        }


ANSWER_FIELDS = {"classification": "label", "completion": "completion", "alpaca": "output"}


def build_record(
    row: Mapping[str, Any], kind: str, mapping: Mapping[str, str], source: str, line: int, need_answer: bool = True
) -> Record | Reject:
    """Map columns to canonical fields and check types; a bad row becomes a Reject naming the field.

    `need_answer=False` reads inputs to predict on: the answer field (or assistant turn) may be absent.
    """
    fields: dict[str, Any] = {}
    optional = set(OPTIONAL_FIELDS.get(kind, ()))
    if not need_answer and kind in ANSWER_FIELDS:
        optional.add(ANSWER_FIELDS[kind])
    for name in KIND_FIELDS[kind]:
        column = mapping.get(name, name)
        value = row.get(column)
        if value is None and name in optional:
            value = ""
        problem = _check_value(kind, name, value, need_answer)
        if problem:
            return Reject(source, line, column, problem, raw=dict(row))
        fields[name] = value.strip() if isinstance(value, str) and name != "completion" else value
    used = {mapping.get(name, name) for name in KIND_FIELDS[kind]}
    extra = {k: v for k, v in row.items() if k not in used}
    return Record(kind, fields, source, line, extra)


def _check_value(kind: str, name: str, value: Any, need_answer: bool = True) -> str | None:
    if value is None:
        return "missing"
    if kind == "chat":
        return _check_messages(value, need_answer)
    if not isinstance(value, str):
        if kind == "classification" and name == "label" and isinstance(value, int | bool):
            return "label must be a string; quote it in the file or map integer ids to names first"
        return f"expected a string, got {type(value).__name__}"
    if (
        not value.strip()
        and name not in OPTIONAL_FIELDS.get(kind, ())
        and (need_answer or name != ANSWER_FIELDS.get(kind))
    ):
        return "empty"
    return None


def _check_messages(messages: Any, need_answer: bool = True) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "expected a non-empty list of {role, content} messages"
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), str):
            return f"message {i}: expected {{'role': ..., 'content': <string>}}"
        role = msg.get("role")
        if not isinstance(role, str) or role not in CHAT_ROLES:  # isinstance first: a list is unhashable
            return f"message {i}: unknown role {brief(role)} (use system, user or assistant)"
    if need_answer and not any(m["role"] == "assistant" for m in messages):
        return "no assistant turn to learn from"
    return None


# OpenAI-style problem categories, from the wording of the reasons this package writes.
_CATEGORIES = (
    ("record too large", "length:record_too_large"),  # readers.TOO_LARGE: bigger than any max_length could use
    ("levels deep", "format:nested_too_deeply"),
    ("unterminated quote", "format:unbalanced_quote"),
    ("unbalanced quote", "format:unbalanced_quote"),
    ("stray quote", "format:unbalanced_quote"),
    ("unreadable CSV", "format:invalid_csv"),
    ("invalid JSON", "format:invalid_json"),
    ("not valid", "format:invalid_encoding"),
    ("expected a JSON object", "format:data_type"),
    ("expected a string", "format:data_type"),
    ("must be a string", "format:data_type"),
    ("more values than", "format:extra_values"),
    ("cannot be read", "format:data_type"),
    ("unknown role", "format:unrecognized_role"),
    ("no assistant turn", "format:missing_assistant_message"),
    ("expected {'role'", "format:message_missing_key"),
    ("non-empty list", "format:missing_messages_list"),
    ("missing", "format:missing_field"),
    ("empty", "format:empty_field"),
    ("unknown label", "label:unknown_label"),
    ("max_length", "length:too_many_tokens"),
)


def category_of(reason: str) -> str:
    return next((category for needle, category in _CATEGORIES if needle in reason), "other")
