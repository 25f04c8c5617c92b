"""data/readers.py: JSONL, CSV and Parquet rows with their line numbers; each bad row comes back as a problem
with its category, named where it is found."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunewise.data import readers
from tunewise.data.readers import known_labels, read_rows
from tunewise.data.records import RejectCategory
from tunewise.errors import DataError


def _rows(path: Path, **kw) -> list[tuple]:
    """(line, row, category, field) per row; the reason is checked where it matters."""
    return [(line, row, problem and problem.category, field) for line, row, problem, field in read_rows(path, **kw)]


def _problems(path: Path, **kw) -> dict[int, tuple[RejectCategory, str]]:
    return {line: (problem.category, problem.reason) for line, _, problem, _ in read_rows(path, **kw) if problem}


def test_jsonl_rows_come_with_their_line_numbers_and_blank_lines_are_not_rows(tmp_path: Path):
    path = tmp_path / "d.jsonl"
    path.write_text('\ufeff{"text": "a"}\n\n   \n{"text": "b"}\n', encoding="utf-8")
    assert _rows(path) == [(1, {"text": "a"}, None, None), (4, {"text": "b"}, None, None)]


def test_each_bad_jsonl_line_has_its_category(tmp_path: Path):
    path = tmp_path / "d.jsonl"
    deep = "[" * 150 + "]" * 150
    lines = [b'{"text": ', b"[1, 2]", b'{"text": "caf\xe9"}', b'{"text": "\\ud800"}', f'{{"x": {deep}}}'.encode()]
    lines += [b'{"n": ' + b"9" * 5000 + b"}"]
    path.write_bytes(b"\n".join(lines) + b"\n")
    problems = _problems(path)
    assert {line: category for line, (category, _) in problems.items()} == {
        1: RejectCategory.INVALID_JSON,
        2: RejectCategory.DATA_TYPE,
        3: RejectCategory.INVALID_ENCODING,
        4: RejectCategory.INVALID_ENCODING,
        5: RejectCategory.NESTED_TOO_DEEPLY,
        6: RejectCategory.INVALID_JSON,
    }
    assert problems[2][1] == "expected a JSON object, got list"
    assert problems[3][1].startswith("not valid utf-8 at byte 13 of the line")
    assert [field for _, _, _, field in read_rows(path)][3:5] == ["text", "x"]  # the field is named where known


def test_a_record_past_the_size_limit_is_skipped_as_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(readers, "MAX_RECORD_BYTES", 64)
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "x" * 200}) + "\n" + json.dumps({"text": "ok"}) + "\n", encoding="utf-8")
    assert _rows(path) == [(1, None, RejectCategory.RECORD_TOO_LARGE, None), (2, {"text": "ok"}, None, None)]


def test_a_reworded_reason_keeps_its_category(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The reasons' wording (here the shared hints and the "record too large" lead) is free to change."""
    monkeypatch.setattr(readers, "MAX_RECORD_BYTES", 64)
    monkeypatch.setattr(readers, "TOO_LARGE", "oversized line")
    monkeypatch.setattr(readers, "QUOTE_HINT", "see the CSV guide")
    monkeypatch.setattr(readers, "ENCODING_HINT", "see the encoding guide")
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_bytes(b'{"text": "' + b"x" * 100 + b'"}\n{"text": "\xff"}\n')
    csv = tmp_path / "d.csv"
    csv.write_text('text,label\n"open,a\nnext,b\n', encoding="utf-8")
    assert _problems(jsonl)[1] == (RejectCategory.RECORD_TOO_LARGE, _problems(jsonl)[1][1])
    assert _problems(jsonl)[1][1].startswith("oversized line")
    assert _problems(jsonl)[2][0] is RejectCategory.INVALID_ENCODING and "encoding guide" in _problems(jsonl)[2][1]
    category, reason = _problems(csv)[2]
    assert category is RejectCategory.UNBALANCED_QUOTE and reason.endswith("see the CSV guide")


def test_csv_rows_map_the_header_and_missing_trailing_values_read_as_none(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\r\n"two\r\nlines",a\r\nonly one\r\n', encoding="utf-8")
    assert _rows(path) == [
        (2, {"text": "two\r\nlines", "label": "a"}, None, None),
        (4, {"text": "only one", "label": None}, None, None),
    ]


def test_each_bad_csv_record_has_its_category(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_bytes(b'text,label\nok,a\nx,a,extra\nbad \xff,a\nfine,b\n"never closed,a\nlast,b\n')
    problems = _problems(path)
    assert {line: category for line, (category, _) in problems.items()} == {
        3: RejectCategory.EXTRA_VALUES,
        4: RejectCategory.INVALID_ENCODING,
        6: RejectCategory.UNBALANCED_QUOTE,
    }
    assert problems[3][1] == "more values than the 2 header columns"
    assert problems[6][1].startswith("unterminated quote: the quoted field opened on line 6 never closes")
    good = [line for line, row, _, _ in read_rows(path) if row]
    assert good == [2, 5, 7]  # the line after the open quote is read as a row of its own
    assert [field for _, _, _, field in read_rows(path)][2] == "text"  # the undecodable byte's column


@pytest.mark.parametrize(
    ("state", "opened", "last", "category", "lead"),
    [
        ("open", 3, 5, RejectCategory.UNBALANCED_QUOTE, "unterminated quote: the quoted field opened on line 3"),
        ("text after quote", 2, 4, RejectCategory.UNBALANCED_QUOTE, "unbalanced quote: the quoted field opened"),
        ("text after quote", 2, 2, RejectCategory.UNBALANCED_QUOTE, "stray quote on line 2"),
        ("closed", 2, 2, RejectCategory.INVALID_CSV, "unreadable CSV: some csv error;"),
    ],
)
def test_each_kind_of_broken_csv_record_has_its_category(state, opened, last, category, lead):
    problem = readers._quote_problem(state, opened, last, "some csv error")
    assert problem.category is category and problem.reason.startswith(lead)


def test_a_broken_header_is_a_file_error(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text('"text,label\nx,a\n', encoding="utf-8")
    with pytest.raises(DataError, match="the header: unterminated quote"):
        list(read_rows(path))


def test_parquet_rows_and_values_python_cannot_hold(tmp_path: Path):
    days = pa.array([0, 2**30], pa.int32()).cast(pa.date32())
    pq.write_table(pa.table({"text": ["a", "b"], "day": days}), tmp_path / "d.parquet")
    first, second = _rows(tmp_path / "d.parquet")
    assert (first[0], first[1]["text"], str(first[1]["day"]), first[2]) == (1, "a", "1970-01-01", None)
    assert second == (2, None, RejectCategory.DATA_TYPE, "day")


def test_known_labels_lists_a_few_labels_cut_short():
    assert known_labels(["a", "b"]) == "a, b"
    assert known_labels([f"l{i}" for i in range(30)], limit=3) == "l0, l1, l2, ... (30 in all)"
    assert known_labels(["x" * 100]) == "x" * 57 + "..."
