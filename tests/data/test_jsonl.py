"""data/jsonl.py: one JSON object a line, UTF-8, safe for readers that split lines at Unicode line breaks."""

from __future__ import annotations

import json
from pathlib import Path

from tunewise.data.jsonl import write_jsonl


def test_rows_are_written_one_a_line_and_read_back_the_same(tmp_path: Path):
    rows = [{"text": "café ☕", "n": 1}, {"nested": {"list": [1, None]}}]
    path = write_jsonl(tmp_path / "out.jsonl", rows)
    text = path.read_text(encoding="utf-8")
    assert "café ☕" in text  # not \\u escapes: readable as written
    assert [json.loads(line) for line in text.splitlines()] == rows


def test_unicode_line_breaks_are_escaped_so_splitlines_keeps_each_record_whole(tmp_path: Path):
    rows = [{"text": "a\u2028b\u2029c\x85d"}, {"text": "next"}]
    text = write_jsonl(tmp_path / "out.jsonl", rows).read_text(encoding="utf-8")
    assert len(text.splitlines()) == 2 and "\\u2028" in text and "\\u0085" in text
    assert [json.loads(line) for line in text.splitlines()] == rows


def test_append_adds_rows_and_values_json_cannot_hold_are_written_as_text(tmp_path: Path):
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [{"a": 1}])
    write_jsonl(path, [{"path": Path("/x/y")}], append=True)
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"a": 1}, {"path": "/x/y"}]
    write_jsonl(path, [])
    assert path.read_text() == ""
