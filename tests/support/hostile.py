"""Hostile JSONL, CSV and Parquet files for tests/system/test_fuzz_inputs.py, each with what must happen to it.

A generated `Case` is the file's bytes plus its oracle, built from how the file was made (not from the
reader's code): how many records it holds (a non-blank line of JSONL, a data row of CSV, a row of
Parquet; a line is blank when it decodes to whitespace only), which of them must be kept, which must be
rejected, and whether the whole file is unreadable (then a DataError naming the file is the answer).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

KINDS = ("classification", "completion", "chat", "alpaca")
REQUIRED = {
    "classification": ("text", "label"),
    "completion": ("prompt", "completion"),
    "chat": ("messages",),
    "alpaca": ("instruction", "output"),
}
OPTIONAL = {"alpaca": ("input",)}
# Renamed columns (data.fields) for some cases, so the mapping is exercised too.
RENAMES = {"text": "tweet", "label": "sentiment", "prompt": "question", "output": "answer"}
BOM = b"\xef\xbb\xbf"
INVALID_UTF8 = (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xe2\x82")
HOSTILE_TEXT = (
    "\x00",
    "nul\x00inside",
    "\ufeffbom inside",
    "cr\rlf\r\nline",
    "tab\tvt\vff\x0c",
    "$\\frac{1}{$",
    "a$b$c",
    "{{ 7*7 }}{% for x in y %}",
    "<script>alert(1)</script>",
    "\u202eright to left",
    "e\u0301\u0301\u0301",
    "😀🎉",
    "\u2028\u2029",
    "Ã©tÃ© mojibake",
    '"quoted", comma; semi',
    "\\u0000 literal",
    "\x1b[31mansi\x1b[0m",
)
SIZES = {"small": 40, "curate": 2_000}
_chars = st.characters(exclude_categories=("Cs",))  # lone surrogates are a corruption of their own


@dataclass
class Case:
    fmt: str
    kind: str
    data: bytes = field(repr=False)  # up to 5 MB: a failing case shows its notes, not its bytes
    mapping: dict[str, str]
    records: int | None = 0  # None: unknown (unreadable file)
    must_keep: set[int] = field(default_factory=set)  # line (JSONL, CSV) or row (Parquet) numbers
    must_reject: set[int] = field(default_factory=set)
    record_lines: set[int] | None = field(default_factory=set)  # where records start; None: not known
    whole_file_error: bool = False
    labels: set[str] = field(default_factory=set)  # labels of the rows that must be kept
    notes: list[str] = field(default_factory=list)  # which hostile features the case has


def texts(max_size: int = SIZES["small"]) -> st.SearchStrategy[str]:
    plain = st.text(_chars, min_size=1, max_size=max_size)
    return st.one_of(plain, st.sampled_from(HOSTILE_TEXT), st.builds(str.__add__, plain, st.sampled_from(HOSTILE_TEXT)))


def nonblank(max_size: int = SIZES["small"]) -> st.SearchStrategy[str]:
    return texts(max_size).filter(lambda s: bool(s.strip()))


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(_chars, max_size=10))
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(_chars, max_size=5), inner, max_size=3),
        max_leaves=6,
    )


@st.composite
def valid_fields(draw: st.DrawFn, kind: str, size: int) -> dict[str, Any]:
    """Canonical field -> a value the reader must accept."""
    if kind == "chat":
        turns = draw(
            st.lists(
                st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": texts()}),
                max_size=3,
            )
        )
        return {"messages": [*turns, {"role": "assistant", "content": draw(texts())}]}
    values = {name: draw(nonblank(size)) for name in REQUIRED[kind]}
    if kind == "classification":  # labels from a small set mostly, hostile ones (math, markup, long) sometimes
        values["label"] = draw(st.one_of(st.sampled_from(["pos", "neg", "neu"]), nonblank(), st.just("L" * 500)))
    if kind == "alpaca" and draw(st.booleans()):
        values["input"] = draw(st.one_of(st.none(), texts()))
    return values


BAD_VALUES = st.one_of(
    st.none(),
    st.just(""),
    st.just(" \t "),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.just("k"), st.integers(), max_size=1),
)
BAD_MESSAGES = st.one_of(
    st.just([]),
    st.just("hello"),
    st.just([{"role": "user", "content": "no answer"}]),
    st.just([{"role": ["assistant"], "content": "x"}]),
    st.just([{"role": {"r": 1}, "content": "x"}]),
    st.just([{"role": "bot", "content": "x"}]),
    st.just([{"role": "assistant", "content": 5}]),
    st.just([{"role": "assistant"}]),
    st.just(["assistant: hi"]),
)


@st.composite
def bad_fields(draw: st.DrawFn, kind: str, size: int) -> tuple[dict[str, Any], str]:
    """Fields with one required field broken (wrong type, missing, empty); and what was broken."""
    values = draw(valid_fields(kind, size))
    name = draw(st.sampled_from(REQUIRED[kind]))
    if draw(st.booleans()):
        del values[name]
        return values, f"missing {name}"
    values[name] = draw(BAD_MESSAGES if kind == "chat" else BAD_VALUES)
    return values, f"bad {name}"


def to_columns(values: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    return {mapping.get(k, k): v for k, v in values.items()}


def extras(kind: str, mapping: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    """Schema drift: extra columns that differ from row to row, never named like a used column."""
    used = {mapping.get(n, n) for n in (*REQUIRED[kind], *OPTIONAL.get(kind, ()))}
    keys = st.one_of(st.sampled_from(["confidence", "id", "meta", "x"]), st.text(_chars, max_size=8))
    return st.dictionaries(keys.filter(lambda k: k not in used and k not in REQUIRED[kind]), json_values(), max_size=3)


# -- JSONL ---------------------------------------------------------------------------------------------

BLANK_LINES = (b"", b" ", b"\t", b"\r", b" \t\r", "\u3000\u00a0".encode())
NON_OBJECTS = (b"[1, 2]", b"[]", b'"just a string"', b"3.5", b"null", b"true")


def _dumps(row: dict[str, Any], ascii_only: bool) -> str:
    return json.dumps(row, ensure_ascii=ascii_only)


@st.composite
def jsonl_line(draw: st.DrawFn, kind: str, mapping: dict[str, str], size: int) -> tuple[bytes, bool | None, str]:
    """(raw line without terminator, must be kept / rejected / None for blank, what it is)."""
    row = {**draw(extras(kind, mapping)), **to_columns(draw(valid_fields(kind, size)), mapping)}
    keys = draw(st.permutations(list(row)))
    row = {k: row[k] for k in keys}  # field order varies from row to row
    text = _dumps(row, draw(st.booleans()))
    how = draw(
        st.sampled_from(
            ["valid", "valid", "valid", "bad_field", "truncated", "nul", "bad_utf8", "non_object", "deep",
             "big_int", "surrogate", "bom", "two_objects", "duplicate_key", "blank"]
        )
    )  # fmt: skip
    if how == "valid":
        return text.encode(), True, how
    if how == "blank":
        return draw(st.sampled_from(BLANK_LINES)), None, how
    if how == "bad_field":
        values, what = draw(bad_fields(kind, size))
        return _dumps({**draw(extras(kind, mapping)), **to_columns(values, mapping)}, True).encode(), False, what
    if how == "truncated":  # any proper prefix of a JSON object is invalid JSON
        return text[: draw(st.integers(1, len(text) - 1))].encode(), False, how
    if how in ("nul", "bad_utf8"):
        at = draw(st.integers(0, len(text)))
        bad = b"\x00" if how == "nul" else draw(st.sampled_from(INVALID_UTF8))
        return text[:at].encode() + bad + text[at:].encode(), False, how
    if how == "non_object":
        return draw(st.sampled_from(NON_OBJECTS)), False, how
    if how == "deep":
        depth = draw(st.sampled_from([3, 100_000]))
        return b"[" * depth + b"]" * depth, False, how
    if how == "big_int":
        return b'{"text": ' + b"9" * 5000 + b', "label": "pos"}', False, how
    if how == "surrogate":  # valid JSON ("\udfff" escape) that decodes to text no UTF-8 file can hold
        key = draw(st.sampled_from(list(row)))
        if draw(st.booleans()):
            row[key + "\udfff"] = row.pop(key)
        else:
            row[key] = f"{row[key]}\udfff" if isinstance(row[key], str) else [row[key], "\udfff"]
        return _dumps(row, True).encode(), False, how
    if how == "bom":  # a BOM is stripped at the start of the file only: here it must be the first line
        return BOM + text.encode(), "bom", how  # type: ignore[return-value]
    if how == "two_objects":
        return (text + draw(st.sampled_from(["\r", " ", ""])) + text).encode(), False, how
    # duplicate_key: the first value of a repeated key is broken; JSON takes the last one, which is fine
    first = next(iter(to_columns(dict.fromkeys(REQUIRED[kind]), mapping)))
    return ('{"' + first + '": 12345, ' + text[1:]).encode(), True, how


@st.composite
def jsonl_cases(draw: st.DrawFn, size: int = SIZES["small"], huge: tuple[int, ...] = (0,)) -> Case:
    kind = draw(st.sampled_from(KINDS))
    mapping = draw(st.sampled_from([{}, {k: v for k, v in RENAMES.items() if k in REQUIRED[kind]}]))
    lines = draw(st.lists(jsonl_line(kind, mapping, size), max_size=12))
    if big := draw(st.sampled_from(huge)):  # a valid record whose main text is 1-5 MB
        values = draw(valid_fields(kind, SIZES["small"]))
        if kind == "chat":
            values["messages"][-1]["content"] = "word " * (big // 5)
        else:
            values[REQUIRED[kind][0]] = "word " * (big // 5)
        row = json.dumps(to_columns(values, mapping))
        lines.insert(draw(st.integers(0, len(lines))), (row.encode(), True, f"huge {big}"))
    terminator = draw(st.sampled_from([b"\n", b"\r\n"]))
    bom = draw(st.booleans())
    data = (BOM if bom else b"") + terminator.join(raw for raw, _, _ in lines)
    data += terminator if lines and draw(st.booleans()) else b""
    case = Case("jsonl", kind, data, mapping, notes=[how for _, _, how in lines] + ["bom"] * bom)
    for number, (_, expect, _) in enumerate(lines, start=1):
        if expect is None:
            continue
        case.record_lines.add(number)  # type: ignore[union-attr]
        keep = expect is True or (expect == "bom" and number == 1)
        (case.must_keep if keep else case.must_reject).add(number)
    case.records = len(case.record_lines or ())
    return case


# -- CSV -----------------------------------------------------------------------------------------------

PLACEHOLDER = "QQBADBYTESQQ"  # replaced by invalid UTF-8 after csv.writer has quoted the row
_LINE_BREAK = re.compile("\r\n|\r|\n")  # what csv's line count (the file iterator, newline="") splits on


def _breaks(text: str) -> int:
    return len(_LINE_BREAK.findall(text))


@st.composite
def csv_cases(draw: st.DrawFn, size: int = SIZES["small"], huge: tuple[int, ...] = (0,)) -> Case:
    kind = draw(st.sampled_from(("classification", "completion", "alpaca")))  # chat has no CSV form
    mapping = draw(st.sampled_from([{}, {k: v for k, v in RENAMES.items() if k in REQUIRED[kind]}]))
    required = [mapping.get(n, n) for n in REQUIRED[kind]]
    extra_names = draw(st.lists(st.text(_chars, min_size=1, max_size=8), max_size=3, unique=True))
    header = list(dict.fromkeys([*required, *[n for n in extra_names if n not in required]]))
    header = draw(st.permutations(header))
    drift = draw(st.sampled_from(["none"] * 6 + ["drop_required", "duplicate", "bad_header"]))
    if drift == "drop_required":  # every row then lacks that field
        header = [h for h in header if h != draw(st.sampled_from(required))] or ["only"]
    if drift == "duplicate":
        header = [*header, draw(st.sampled_from(header))]
    terminator = draw(st.sampled_from(["\r\n", "\n"]))
    rows = draw(st.lists(csv_row(header, required, size), max_size=10))
    if (big := draw(st.sampled_from(huge))) and set(required) <= set(header):
        cells = ["x" * big if name == required[0] else "pos" for name in header]
        rows.insert(draw(st.integers(0, len(rows))), (cells, True, f"huge {big}"))
    unterminated = draw(st.integers(0, 7)) == 0  # a last row opening a quote it never closes
    empty = draw(st.integers(0, 9)) == 0  # no header at all: only blank lines, or nothing
    bom = draw(st.booleans())
    case = Case("csv", kind, b"", mapping, notes=[f"drift {drift}"] + [how for _, _, how in rows])
    if empty:
        case.data = (BOM if bom else b"") + terminator.encode() * draw(st.integers(0, 2))
        case.notes = ["empty"]
        return case
    out = io.BytesIO(BOM if bom else b"")
    header_text = _render(header, terminator)
    out.write(header_text.encode().replace(PLACEHOLDER.encode(), b""))
    if drift == "bad_header":
        out.seek(len(BOM) if bom else 0)
        out.write(b"\xff" + header_text.encode())
    line = 1 + _breaks(header_text)
    case.whole_file_error = drift in ("duplicate", "bad_header")
    for cells, expect, _ in rows:
        if cells is None:  # a blank line: not a record
            out.write(terminator.encode())
            line += 1
            continue
        text = _render(cells, terminator)
        out.write(text.encode().replace(PLACEHOLDER.encode(), draw(st.sampled_from(INVALID_UTF8))))
        case.record_lines.add(line)  # type: ignore[union-attr]
        if expect is not None:
            (case.must_keep if expect else case.must_reject).add(line)
        line += _breaks(text)
    if unterminated:
        out.write(b'"never closed, ' + draw(nonblank()).replace('"', "").encode() + terminator.encode())
        case.record_lines.add(line)  # type: ignore[union-attr]
        case.notes.append("unterminated quote")
    case.data = out.getvalue()
    if not draw(st.booleans()) and case.data.endswith(terminator.encode()) and rows and not unterminated:
        case.data = case.data[: -len(terminator)]  # no newline after the last row
    case.records = len(case.record_lines or ())
    return case


def _render(cells: list[str], terminator: str) -> str:
    buffer = io.StringIO()
    # csv.writer quotes a field with "\r" only when "\r" is in the line terminator, yet every reader takes
    # a bare "\r" for a line break; quote such rows as CSV writers (Excel, pandas) do.
    quoting = csv.QUOTE_ALL if any("\r" in cell for cell in cells) else csv.QUOTE_MINIMAL
    csv.writer(buffer, lineterminator=terminator, quoting=quoting).writerow(cells)
    return buffer.getvalue()


@st.composite
def csv_row(draw: st.DrawFn, header: list[str], required: list[str], size: int) -> tuple[Any, bool | None, str]:
    """(cells or None for a blank line, must be kept / rejected / None: either, what it is)."""
    cells = {name: draw(nonblank(size) if name in required else texts()) for name in header}
    complete = set(required) <= set(header)
    how = draw(st.sampled_from(["valid"] * 3 + ["blank_field", "fewer", "more", "bad_utf8", "blank_line"]))
    values = [cells[name] for name in header]
    if how == "blank_line":
        return None, None, how
    if how == "blank_field" and set(required) & set(header):
        name = draw(st.sampled_from(sorted(set(required) & set(header))))
        values[header.index(name)] = draw(st.sampled_from(["", "  ", "\t"]))
        return values, False, how
    if how == "fewer" and len(header) > 1:
        k = draw(st.integers(1, len(header) - 1))
        return values[:k], complete and set(required) <= set(header[:k]), how
    if how == "more":
        return [*values, *draw(st.lists(texts(), min_size=1, max_size=2))], False, how
    if how == "bad_utf8":
        at = draw(st.integers(0, len(values) - 1))
        values[at] += PLACEHOLDER
        return values, False, how
    if len(values) == 1 and values[0] == "":
        return values, None, how
    return values, complete, "valid"
