"""curate/sinks.py: rows streamed to split files and rejects.jsonl (by step, in plan order), or to lists."""

from __future__ import annotations

import json
from pathlib import Path

from support.curate import rec
from tunewise.curate.sinks import FileSink, ListSink
from tunewise.data.records import Reject, RejectCategory


def _reject(line: int, stage: str) -> Reject:
    return Reject("in.jsonl", line, None, "why", stage, category=RejectCategory.EXACT_DUPLICATE)


def test_rejects_are_listed_by_step_in_plan_order_then_the_eval_files_rejects(tmp_path: Path):
    given = [rec("held out", line=1, split="test")]
    late = Reject("test.jsonl", 5, "label", "unknown label", "labels", category=RejectCategory.UNKNOWN_LABEL)
    sink = FileSink(tmp_path / "out", tmp_path, given, [late])
    sink.reject(_reject(3, "quality"), 2)
    sink.keep(rec("kept", line=2))
    sink.reject(_reject(1, "validate"), None)
    sink.reject(_reject(4, "exact_dedup"), 0)
    sink.keep(rec("val row", line=6, split="val"))
    sink.finish([None, 0, 1, 2])
    rows = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["stage"]) for r in rows] == [
        (1, "validate"),
        (4, "exact_dedup"),
        (3, "quality"),
        (5, "labels"),
    ]
    assert sorted(sink.paths) == ["test", "train", "val"]
    assert (tmp_path / "out" / "test.jsonl").read_text().count("held out") == 1


def test_line_breaks_inside_text_stay_escaped(tmp_path: Path):
    sink = FileSink(tmp_path / "out", tmp_path)
    sink.keep(rec("one\u2028two", line=1))
    sink.finish([None])
    assert (tmp_path / "out" / "train.jsonl").read_text().splitlines() == ['{"text": "one\\u2028two", "label": "a"}']


def test_the_list_sink_orders_rejects_the_same_way():
    sink = ListSink()
    sink.reject(_reject(2, "quality"), 1)
    sink.reject(_reject(1, "exact_dedup"), 0)
    sink.finish([None, 0, 1])
    assert [r.line for r in sink.ordered] == [1, 2]
