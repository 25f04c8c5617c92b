"""curate/decide.py: the plan's steps over the table in order: a record leaves the pool at the first step
that drops it, record steps and set steps alike, so the counts are those of running the steps one by one."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from support.curate import ctx, rec
from tunewise.config.curate import CurateConfig
from tunewise.curate.decide import StepReport
from tunewise.curate.engine import run_steps


def _run(records, steps):
    return run_steps(records, [], CurateConfig(steps=steps), ctx(), Console(quiet=True))


def test_a_row_dropped_by_an_earlier_set_step_is_not_counted_by_a_later_record_step():
    records = [rec("one two three", line=1), rec("one two three", line=2), rec("no", line=3)]
    result = _run(records, [{"step": "exact_dedup"}, {"step": "quality", "min_words": 3}])
    # "no" is short, and line 2 is a copy; quality sees 2 rows (not 3) and drops only "no"
    assert all(isinstance(s, StepReport) for s in result.steps)
    assert [(s.name, s.n_in, s.kept) for s in result.steps] == [
        ("read", 3, 3),
        ("exact_dedup", 3, 2),
        ("quality", 2, 1),
    ]
    assert [(r.line, r.stage) for r in result.rejects] == [(2, "exact_dedup"), (3, "quality")]


def test_a_set_step_decides_only_over_rows_still_in_the_pool():
    # "aa bb cc" (line 1) is too short for quality, which runs first: line 2 is then the first of its key
    records = [rec("aa bb", line=1), rec("AA  bb", line=2), rec("aa bb", line=3)]
    result = _run(records, [{"step": "quality", "min_words": 3}, {"step": "exact_dedup"}])
    assert result.kept == []
    result = _run([*records, rec("x y z w", line=4)], [{"step": "quality", "min_words": 2}, {"step": "exact_dedup"}])
    assert [r.line for r in result.kept] == [1, 4]
    assert [r.reason for r in result.rejects] == ["exact duplicate of in.jsonl:1"] * 2


def test_a_training_only_step_leaves_val_and_test_rows_alone():
    records = [rec(f"text number {i}", "a" if i % 2 else "b", line=i) for i in range(20)]
    result = _run(records, [{"step": "split", "val": 4, "test": 4}, {"step": "balance", "per_class": 2}])
    sizes = {s: sum(r.split == s for r in result.kept) for s in ("train", "val", "test")}
    assert sizes == {"train": 4, "val": 4, "test": 4}
    balance = result.steps[-1]
    assert (balance.n_in, balance.kept, balance.dropped) == (12, 4, {"balance:capped": 8})


def test_label_errors_in_report_mode_add_a_field_to_the_kept_record(tmp_path: Path):
    records = [rec(f"good great fine {i}", "pos", line=i) for i in range(12)]
    records += [rec(f"bad awful poor {i}", "neg", line=20 + i) for i in range(12)]
    records.append(rec("good great fine 99", "neg", line=99))
    result = _run(records, [{"step": "label_errors", "action": "report", "folds": 3}])
    flagged = [r for r in result.kept if "label_issue" in r.extra]
    assert [r.line for r in flagged] == [99]
    assert len(result.kept) == len(records)


def test_a_row_a_set_step_drops_is_rejected_by_it_even_when_a_later_record_step_would_drop_it():
    # near_dedup, quality and confidence run in one pass; line 2 is a near copy of line 1 AND low confidence
    text = "the self driving cars are coming to every city near you soon enough"
    records = [rec(text, line=1, confidence=0.9), rec(text + " now", line=2, confidence=0.1)]
    steps = [{"step": "exact_dedup"}, {"step": "near_dedup", "threshold": 0.7}, {"step": "confidence"}]
    result = _run(records, steps)
    assert [(r.line, r.stage) for r in result.rejects] == [(2, "near_dedup")]
    assert [s.dropped for s in result.steps[1:]] == [{}, {"dedup:near": 1}, {}]
