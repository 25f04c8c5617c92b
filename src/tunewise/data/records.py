"""The one record type that crosses every stage, and its validation per kind."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

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
MAX_REASON_VALUE = 60  # characters of a bad value quoted in a reason: a 5 MB value must not become the message


class RejectCategory(StrEnum):
    """The stable, machine-readable kind of a reject or a curation drop (OpenAI-style names), as users count
    and filter them in rejects.jsonl. Each place that rejects a record names its category here; the reason
    text is for people and may be reworded freely."""

    # reading a file (data/readers.py)
    RECORD_TOO_LARGE = "length:record_too_large"
    NESTED_TOO_DEEPLY = "format:nested_too_deeply"
    UNBALANCED_QUOTE = "format:unbalanced_quote"
    INVALID_CSV = "format:invalid_csv"
    INVALID_JSON = "format:invalid_json"
    INVALID_ENCODING = "format:invalid_encoding"
    DATA_TYPE = "format:data_type"
    EXTRA_VALUES = "format:extra_values"
    # checking a row's fields (build_record)
    MISSING_FIELD = "format:missing_field"
    EMPTY_FIELD = "format:empty_field"
    MISSING_MESSAGES_LIST = "format:missing_messages_list"
    MESSAGE_MISSING_KEY = "format:message_missing_key"
    UNRECOGNIZED_ROLE = "format:unrecognized_role"
    MISSING_ASSISTANT_MESSAGE = "format:missing_assistant_message"
    # labels, rendering and tokens (data/splits.py, data/encode.py, curate validate)
    UNKNOWN_LABEL = "label:unknown_label"
    UNRENDERABLE = "format:unrenderable"
    TOO_MANY_TOKENS = "length:too_many_tokens"
    # curation steps (curate/)
    MINORITY_LABEL = "label:minority_label"
    CONFLICTING_LABELS = "label:conflicting_labels"
    NO_CONFIDENCE = "label:no_confidence"
    LOW_CONFIDENCE = "label:low_confidence"
    LIKELY_LABEL_ERROR = "label:likely_error"
    EXACT_DUPLICATE = "dedup:exact"
    NEAR_DUPLICATE = "dedup:near"
    SEMANTIC_DUPLICATE = "dedup:semantic"
    QUALITY_TOO_SHORT = "quality:too_short"
    QUALITY_TOO_LONG = "quality:too_long"
    QUALITY_REPETITIVE = "quality:repetitive"
    QUALITY_SYMBOLS = "quality:symbols"
    QUALITY_GARBLED = "quality:garbled"
    QUALITY_LANGUAGE = "quality:language"
    LOW_RELEVANCE = "relevance:low"
    BALANCE_CAPPED = "balance:capped"
    DECONTAM_NGRAM = "decontam:ngram"
    DECONTAM_NEAR = "decontam:near"


def reject_category(value: object) -> RejectCategory:
    """`value` as a RejectCategory: a member, or the exact string of one. Anything else (None included) is a
    TypeError, so no reject or drop is ever made without its category."""
    if isinstance(value, str):  # a member is a str too
        try:
            return RejectCategory(value)
        except ValueError:
            pass
    raise TypeError(f"a reject needs its category (a RejectCategory), got {value!r}")


class Problem(NamedTuple):
    """Why a row or a field cannot become a record: its category and the reason a person reads."""

    category: RejectCategory
    reason: str


def brief(value: Any, limit: int = MAX_REASON_VALUE) -> str:
    """repr() of a value for a reason or error message, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    """A record left out, with where it came from, why (`reason`, for people) and what kind of problem it is
    (`category`, required and keyword-only: every place that rejects a record names it)."""

    source: str
    line: int
    field: str | None
    reason: str
    stage: str = "read"
    raw: Any = None
    category: RejectCategory = field(kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "category", reject_category(self.category))

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "line": self.line,
            "stage": self.stage,
            "category": self.category.value,
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
            return Reject(source, line, column, problem.reason, raw=dict(row), category=problem.category)
        fields[name] = value.strip() if isinstance(value, str) and name != "completion" else value
    used = {mapping.get(name, name) for name in KIND_FIELDS[kind]}
    extra = {k: v for k, v in row.items() if k not in used}
    return Record(kind, fields, source, line, extra)


def _check_value(kind: str, name: str, value: Any, need_answer: bool = True) -> Problem | None:
    if value is None:
        return Problem(RejectCategory.MISSING_FIELD, "missing")
    if kind == "chat":
        return _check_messages(value, need_answer)
    if not isinstance(value, str):
        if kind == "classification" and name == "label" and isinstance(value, int | bool):
            reason = "label must be a string; quote it in the file or map integer ids to names first"
            return Problem(RejectCategory.DATA_TYPE, reason)
        return Problem(RejectCategory.DATA_TYPE, f"expected a string, got {type(value).__name__}")
    if (
        not value.strip()
        and name not in OPTIONAL_FIELDS.get(kind, ())
        and (need_answer or name != ANSWER_FIELDS.get(kind))
    ):
        return Problem(RejectCategory.EMPTY_FIELD, "empty")
    return None


def _check_messages(messages: Any, need_answer: bool = True) -> Problem | None:
    if not isinstance(messages, list) or not messages:
        return Problem(RejectCategory.MISSING_MESSAGES_LIST, "expected a non-empty list of {role, content} messages")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), str):
            reason = f"message {i}: expected {{'role': ..., 'content': <string>}}"
            return Problem(RejectCategory.MESSAGE_MISSING_KEY, reason)
        role = msg.get("role")
        if not isinstance(role, str) or role not in CHAT_ROLES:  # isinstance first: a list is unhashable
            reason = f"message {i}: unknown role {brief(role)} (use system, user or assistant)"
            return Problem(RejectCategory.UNRECOGNIZED_ROLE, reason)
    if need_answer and not any(m["role"] == "assistant" for m in messages):
        return Problem(RejectCategory.MISSING_ASSISTANT_MESSAGE, "no assistant turn to learn from")
    return None
