"""curate/engine.py: the plan (steps by category), running the steps with every record accounted for, the
rejects each drop becomes, and the curated splits written."""

from __future__ import annotations

import json
import random
import string
import typing
from pathlib import Path

import pytest
from rich.console import Console

from support.curate import rec
from tunewise.config.curate import AnyStep, CurateConfig
from tunewise.curate.base import Context
from tunewise.curate.engine import STEP_TYPES, build_chain, curate_stream, local_map, order_note, plan_steps, run_steps
from tunewise.curate.sinks import FileSink
from tunewise.curate.text_steps import ExactDedup, Quality
from tunewise.data.records import Record, Reject, RejectCategory
from tunewise.errors import ConfigError, TunewiseError


def ctx(**kw) -> Context:
    return Context(seed=0, **kw)


def test_pipeline_counts_every_step_and_keeps_the_invariant():
    records = [rec("cars are great fun", "a", 1), rec("Cars are great fun", "a", 2), rec("no", "b", 3)]
    cfg = CurateConfig(
        steps=[
            {"step": "exact_dedup"},
            {"step": "quality", "min_words": 2},
            {"step": "near_dedup", "enabled": False},
        ]
    )
    result = run_steps(records, [], cfg, ctx(), Console(quiet=True))
    assert [(s.name, s.n_in, s.kept, s.dropped) for s in result.steps] == [
        ("read", 3, 3, {}),
        ("exact_dedup", 3, 2, {"dedup:exact": 1}),
        ("quality", 2, 1, {"quality:too_short": 1}),
        ("near_dedup", 1, 1, {}),
    ]
    assert [r.stage for r in result.rejects] == ["exact_dedup", "quality"]
    assert len(result.kept) + len(result.rejects) == 3


def test_a_dropped_record_becomes_a_reject_with_the_steps_category_reason_and_row():
    records = [rec("cars are great fun", line=1, confidence=0.9), rec("cars are great fun", line=2, confidence=0.8)]
    read = [Reject("in.jsonl", 3, None, "invalid JSON at column 2", category=RejectCategory.INVALID_JSON)]
    result = run_steps(records, read, CurateConfig(steps=[{"step": "exact_dedup"}]), ctx(), Console(quiet=True))
    assert result.steps[0].dropped == {"format:invalid_json": 1}  # the file's bad rows, by category
    assert [r.to_json() for r in result.rejects] == [
        {
            "source": "in.jsonl",
            "line": 3,
            "stage": "validate",
            "category": "format:invalid_json",
            "field": None,
            "reason": "invalid JSON at column 2",
            "raw": None,
        },
        {
            "source": "in.jsonl",
            "line": 2,
            "stage": "exact_dedup",
            "category": "dedup:exact",
            "field": None,
            "reason": "exact duplicate of in.jsonl:1",
            "raw": {"confidence": 0.8, "text": "cars are great fun", "label": "a"},
        },
    ]
    (example,) = result.steps[1].examples["dedup:exact"]
    assert example == {"where": "in.jsonl:2", "text": "cars are great fun", "reason": "exact duplicate of in.jsonl:1"}


def _tagged(per_class: int, contaminated: int) -> tuple[list[Record], list[Record]]:
    """`per_class` records of each of two classes, the first `contaminated` of each sharing a span with an
    eval record; and those eval records."""
    records, reference = [], []
    for label in ("a", "b"):
        for i in range(per_class):
            line = len(records) + 1
            if i < contaminated:
                span = f"eval span {label} {i} appears in the test set"
                records.append(rec(f"{span} and also here", label, line))
                reference.append(rec(span, label, line, split="test"))
            else:
                words = random.Random(line).choices(string.ascii_lowercase, k=40)
                records.append(rec(" ".join("".join(words[j : j + 5]) for j in range(0, 40, 5)), label, line))
    return records, reference


def test_balance_listed_before_decontaminate_still_ends_with_exactly_per_class():
    records, reference = _tagged(20, 6)
    cfg = CurateConfig(
        steps=[
            {"step": "balance", "per_class": 8},
            {"step": "decontaminate", "ngram": 4},
            {"step": "split", "val": 4, "test": 4},
        ]
    )
    console = Console(record=True, width=300)
    result = run_steps(records, [], cfg, ctx(reference=reference, reference_splits=("test",)), console)
    train = [r for r in result.kept if r.split == "train"]
    assert {label: [r.label for r in train].count(label) for label in "ab"} == {"a": 8, "b": 8}
    assert [r.split for r in result.kept].count("val") == 4  # balance samples the training records only
    assert result.executed_order == ["split", "decontaminate", "balance"] and result.reordered
    assert [(s.name, s.position, s.category) for s in result.steps[1:]] == [
        ("split", 3, "split"),
        ("decontaminate", 2, "decontaminate"),
        ("balance", 1, "sample"),
    ]
    assert "steps run as split → decontaminate → balance" in console.export_text()


def test_steps_run_by_category_and_in_list_order_within_one():
    cfg = CurateConfig(
        steps=[
            {"step": "balance", "per_class": 5},
            {"step": "decontaminate"},
            {"step": "split"},
            {"step": "relevance", "description": "x", "top_k": 3},
            {"step": "exact_dedup"},
            {"step": "normalize"},
        ]
    )
    plan = plan_steps(cfg.steps)
    assert [p.name for p in plan] == ["exact_dedup", "normalize", "relevance", "split", "decontaminate", "balance"]
    assert order_note(plan).startswith("curate: steps run as exact_dedup → normalize → relevance → split")
    assert order_note(plan_steps(CurateConfig(steps=[{"step": "split"}, {"step": "balance"}]).steps)) is None


def test_an_earlier_balance_shrinks_the_pool_where_listed_and_the_last_one_sets_the_size():
    cfg = CurateConfig(
        steps=[
            {"step": "exact_dedup"},
            {"step": "balance", "per_class": 50},
            {"step": "semantic_dedup"},
            {"step": "split"},
            {"step": "balance", "per_class": 10},
            {"step": "decontaminate"},
        ]
    )
    plan = plan_steps(cfg.steps)
    assert [(p.name, p.category.name) for p in plan] == [
        ("exact_dedup", "clean"),
        ("balance", "pre-sample"),
        ("semantic_dedup", "clean"),
        ("split", "split"),
        ("decontaminate", "decontaminate"),
        ("balance", "sample"),
    ]
    disabled_last = CurateConfig(steps=[{"step": "balance", "per_class": 5}, {"step": "balance", "enabled": False}])
    assert [p.category.name for p in plan_steps(disabled_last.steps)] == ["sample", "sample"]


def test_every_step_type_has_a_category():
    models = typing.get_args(typing.get_args(AnyStep)[0])
    assert {typing.get_args(model.model_fields["step"].annotation)[0] for model in models} == set(STEP_TYPES)


def test_normalize_counts_what_it_changed_by_kind():
    records = [rec("Price: Â£5 off", line=1), rec("cafe\u0301 ok", line=2), rec("too   many  spaces", line=3)]
    records += [rec("isnâ€™t  bad", line=4), rec("clean text", line=5)]
    cfg = CurateConfig(steps=[{"step": "normalize"}, {"step": "exact_dedup"}])
    result = run_steps(records, [], cfg, ctx(), Console(quiet=True))
    normalize, dedup = result.steps[1:]
    assert (normalize.changed, normalize.changes) == (4, {"mojibake": 2, "nfc": 1, "whitespace": 2})
    assert (dedup.changed, dedup.changes) == (0, {})


def test_an_error_in_a_step_names_the_step_and_its_place_in_the_list():
    cfg = CurateConfig(steps=[{"step": "balance", "per_class": 5}, {"step": "relevance", "top_k": 3}])
    with pytest.raises(ConfigError) as caught:
        run_steps([rec("some text here")], [], cfg, ctx(), Console(quiet=True))
    assert str(caught.value) == "curate step 2 (relevance): give a description or seeds, and top_k or min_score"


def test_an_unexpected_error_keeps_its_traceback_and_names_the_step(monkeypatch: pytest.MonkeyPatch):
    def broken(self, records, context):
        raise ValueError("boom")

    monkeypatch.setattr(ExactDedup, "features", broken)
    cfg = CurateConfig(steps=[{"step": "quality"}, {"step": "exact_dedup"}])
    with pytest.raises(ValueError, match="boom") as caught:
        run_steps([rec("some text here")], [], cfg, ctx(), Console(quiet=True))
    assert caught.value.__notes__ == ["in curate step 2 (exact_dedup)"]


def test_a_step_that_loses_a_record_is_reported_as_a_bug(monkeypatch: pytest.MonkeyPatch):
    def lossy(self, records, context):
        return iter([])

    monkeypatch.setattr(Quality, "__call__", lossy)
    with pytest.raises(TunewiseError, match="quality lost records: a bug"):
        run_steps([rec("a b c")], [], CurateConfig(steps=[{"step": "quality"}]), ctx(), Console(quiet=True))


def _write(records, steps, folder: Path, given=(), given_rejects=()) -> dict[str, Path]:
    """Curate `records` to files in `folder`, streamed through the FileSink."""
    cfg = CurateConfig(steps=steps)
    chain = build_chain(plan_steps(cfg.steps), ctx())
    sink = FileSink(folder, folder.parent, list(given), list(given_rejects))
    curate_stream(local_map(records), cfg, chain, folder.parent / f"{folder.name}-table", sink, Console(quiet=True))
    return sink.paths


def test_the_file_sink_writes_each_split_given_eval_records_and_all_rejects(tmp_path: Path):
    records = [rec("one", line=1), rec("one", line=2), rec("two", line=3, split="val")]
    given = [rec("held out", line=7, split="test")]
    given_rejects = [Reject("test.jsonl", 8, "label", "unknown label 'z'", "labels", category="label:unknown_label")]
    paths = _write(records, [{"step": "exact_dedup"}], tmp_path / "out", given, given_rejects)
    assert sorted(paths) == ["test", "train", "val"]

    def rows(name: str) -> list[dict]:
        return [json.loads(line) for line in (tmp_path / "out" / name).read_text().splitlines()]

    assert rows("train.jsonl") == [{"text": "one", "label": "a"}]
    assert rows("val.jsonl") == [{"text": "two", "label": "a"}]
    assert rows("test.jsonl") == [{"text": "held out", "label": "a"}]
    assert [(r["line"], r["stage"], r["category"]) for r in rows("rejects.jsonl")] == [
        (2, "exact_dedup", "dedup:exact"),
        (8, "labels", "label:unknown_label"),
    ]
    assert sorted(_write([], [], tmp_path / "empty")) == ["train"]  # train is always written, even empty
    assert (tmp_path / "empty" / "train.jsonl").read_text() == ""
