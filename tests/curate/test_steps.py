"""Each curation step on small inline data: what it keeps, what it drops, and the reason it gives."""

from __future__ import annotations

import hashlib
import random
import string
import typing

import numpy as np
import pytest
from rich.console import Console

from tunewise.config.curate import (
    AnyStep,
    BalanceStep,
    ConfidenceStep,
    ConflictsStep,
    CurateConfig,
    DecontaminateStep,
    ExactDedupStep,
    LabelErrorsStep,
    NearDedupStep,
    NormalizeStep,
    QualityStep,
    RelevanceStep,
    SemanticDedupStep,
    SplitStep,
    ValidateStep,
)
from tunewise.curate.base import Context
from tunewise.curate.curation_report import advice
from tunewise.curate.dedup import Decontaminate, NearDedup, SemanticDedup
from tunewise.curate.engine import STEP_TYPES, order_note, plan_steps, run_steps
from tunewise.curate.select_steps import Balance, LabelErrors, Relevance, Split
from tunewise.curate.text_steps import Confidence, Conflicts, ExactDedup, Normalize, Quality, Validate
from tunewise.data.records import Record
from tunewise.errors import ConfigError


def rec(text: str, label: str = "a", line: int = 1, split: str | None = None, **extra) -> Record:
    return Record("classification", {"text": text, "label": label}, "in.jsonl", line, extra, split)


def bag_of_words(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in for sentence embeddings: hashed word counts, unit norm."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().split():
            out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def ctx(**kw) -> Context:
    return Context(seed=0, embedder=bag_of_words, **kw)


def verdicts(step, records, context=None):
    context = context or ctx()
    return [(v.record, v.category) for v in step(records, context)]


def dropped(step, records, context=None) -> dict[int, str]:
    return {r.line: c for r, c in verdicts(step, records, context) if c}


def test_validate_drops_unknown_labels_and_overlong_examples():
    step = Validate(
        ValidateStep(step="validate", max_tokens=5), ["a", "b"], lambda rs: [len(r.text.split()) for r in rs]
    )
    records = [rec("short", line=1), rec("one two three four five six", line=2), rec("fine", "zz", line=3)]
    assert dropped(step, records) == {2: "length:too_many_tokens", 3: "label:unknown_label"}


def test_normalize_fixes_mojibake_nfc_and_spaces_and_sets_dedup_key_options():
    context = ctx()
    step = Normalize(NormalizeStep(step="normalize", strip_for_key=["urls", "mentions"]))
    ((record, _),) = verdicts(step, [rec("cafe\u0301   isnâ€™t  bad ")], context)
    assert record.fields["text"] == "caf\u00e9 isn\u2019t bad"
    assert context.key(rec("@bob Look http://x.co/1  HERE")) == "look here"


def test_conflicting_labels_majority_or_drop():
    records = [
        rec("Same text", "a", 1),
        rec("same  TEXT", "a", 2),
        rec("same text", "b", 3),
        rec("other", "b", 4),
    ]
    majority = dropped(Conflicts(ConflictsStep(step="conflicts", resolve="majority")), records)
    assert majority == {3: "label:minority_label"}
    strict = dropped(Conflicts(ConflictsStep(step="conflicts", resolve="drop")), records)
    assert strict == {
        1: "label:conflicting_labels",
        2: "label:conflicting_labels",
        3: "label:conflicting_labels",
    }
    tie = dropped(Conflicts(ConflictsStep(step="conflicts")), [rec("x y", "a", 1), rec("x y", "b", 2)])
    assert tie == {1: "label:conflicting_labels", 2: "label:conflicting_labels"}


def test_exact_dedup_keeps_the_first_and_names_it():
    context = ctx()
    out = list(ExactDedup(ExactDedupStep(step="exact_dedup"))([rec("A b", line=1), rec("a  B", line=2)], context))
    assert out[0].drop is None and out[1].drop == "exact duplicate of in.jsonl:1"
    assert context.cluster_sizes["exact_dedup"] == [2]


def test_near_dedup_catches_small_edits_but_not_different_texts():
    base = "self driving cars will never be safe enough for my family to ride in"
    records = [
        rec(base, line=1),
        rec(base + "!!", line=2),
        rec(base.replace("never", "nevr"), line=3),
        rec("i love the new electric bus line downtown, it is quick and quiet", line=4),
    ]
    out = dropped(NearDedup(NearDedupStep(step="near_dedup", threshold=0.7)), records)
    assert out == {2: "dedup:near", 3: "dedup:near"}


def test_semantic_dedup_uses_cosine_threshold():
    records = [
        rec("cars drive themselves now", line=1),
        rec("now cars drive themselves", line=2),
        rec("bananas are yellow fruit", line=3),
    ]
    assert dropped(SemanticDedup(SemanticDedupStep(step="semantic_dedup", threshold=0.99)), records) == {
        2: "dedup:semantic"
    }


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("too short", "quality:too_short"),
        ("spam spam spam spam spam spam spam ok", "quality:repetitive"),
        ("$$$ %%% ### @@@ !!! ok ok ok", "quality:symbols"),
        ("broken \ufffd\ufffd text with \ufffd replacement chars", "quality:garbled"),
        ("a perfectly ordinary sentence about cars", None),
    ],
)
def test_quality_filters(text, category):
    step = Quality(QualityStep(step="quality", min_words=3))
    assert verdicts(step, [rec(text)])[0][1] == category


def test_language_filter_with_lingua():
    step = Quality(QualityStep(step="quality", languages=["en"]))
    records = [
        rec("The weather is lovely today and I am going outside", line=1),
        rec("Das Wetter ist heute schön und ich gehe nach draußen", line=2),
    ]
    assert dropped(step, records) == {2: "quality:language"}


def test_confidence_threshold_and_missing_values():
    records = [rec("x", line=1, confidence=0.9), rec("y", line=2, confidence=0.3), rec("z", line=3)]
    assert dropped(Confidence(ConfidenceStep(step="confidence", min=0.5)), records) == {2: "label:low_confidence"}
    strict = Confidence(ConfidenceStep(step="confidence", min=0.5, keep_missing=False))
    assert dropped(strict, records) == {2: "label:low_confidence", 3: "label:no_confidence"}


def test_label_errors_finds_a_planted_flip():
    words = {"a": "rain storm cold wet grey", "b": "sun warm bright dry clear"}
    records = [rec(f"{words[label]} day {i}", label, i) for i, label in enumerate(["a", "b"] * 20)]
    records[6] = rec(words["a"] + " day 6", "b", 6)  # the text says a, the label says b
    out = dropped(LabelErrors(LabelErrorsStep(step="label_errors")), records)
    assert out.get(6) == "label:likely_error"
    assert len(out) <= 3
    report_only = LabelErrors(LabelErrorsStep(step="label_errors", action="report"))
    kept = [r for r, c in verdicts(report_only, records) if c is None]
    assert len(kept) == 40 and "likely label error" in kept[6].extra["label_issue"]


def test_relevance_keeps_the_records_closest_to_the_task():
    records = [
        rec("autonomous cars on the highway", line=1),
        rec("my cat sleeps all day", line=2),
        rec("driverless cars and safety", line=3),
    ]
    step = Relevance(RelevanceStep(step="relevance", description="cars driverless autonomous", top_k=2))
    assert dropped(step, records) == {2: "relevance:low"}


def test_balance_caps_classes_reproducibly():
    records = [rec(f"t{i}", "a" if i < 10 else "b", i) for i in range(14)]
    step = Balance(BalanceStep(step="balance", total=8))
    first = verdicts(step, records)
    kept_labels = [r.label for r, c in first if c is None]
    assert kept_labels.count("a") == 4 and kept_labels.count("b") == 4
    assert first == verdicts(step, records)


def test_split_is_stratified_and_respects_given_splits():
    records = [rec(f"t{i}", "a" if i % 2 else "b", i) for i in range(40)]
    out = [r.split for r, _ in verdicts(Split(SplitStep(step="split", val=0.1, test=10)), records)]
    assert out.count("test") == 10 and out.count("val") == 4 and out.count("train") == 26
    tests = [r for r, _ in verdicts(Split(SplitStep(step="split", test=10)), records) if r.split == "test"]
    assert {r.label for r in tests} == {"a", "b"}
    given = ctx(reference_splits=("test",))
    assert "test" not in {r.split for r, _ in verdicts(Split(SplitStep(step="split")), records, given)}


def test_decontamination_catches_a_test_item_changed_only_in_case_and_spacing():
    test_item = rec("Google's self-driving car hit a bus in Mountain View today, nobody hurt", split="test", line=1)
    copy = rec("GOOGLE'S  self-driving car   hit a bus in mountain view today,  nobody hurt", line=2)
    span = rec("breaking: self-driving car hit a bus in mountain view today, nobody hurt says the city", line=3)
    clean = rec("I would ride in an autonomous taxi if the price were right", line=4)
    step = Decontaminate(DecontaminateStep(step="decontaminate", ngram=8))
    assert dropped(step, [test_item, copy, span, clean]) == {2: "decontam:ngram", 3: "decontam:ngram"}
    short = Decontaminate(DecontaminateStep(step="decontaminate", ngram=8, near_threshold=0.7))
    near = dropped(short, [rec("cars are bad", split="test", line=1), rec("Cars are bad!", line=2)])
    assert near == {2: "decontam:near"}


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


def test_normalize_keeps_indentation_and_leaves_answers_alone_by_default():
    code = Record("completion", {"prompt": "  Write   f:  ", "completion": " def f():\n    return  1"}, "c.jsonl", 1)
    ((out, _),) = verdicts(Normalize(NormalizeStep(step="normalize")), [code])
    assert out.fields["prompt"] == "  Write f:" and out.fields["completion"] == " def f():\n    return  1"
    ((both, _),) = verdicts(Normalize(NormalizeStep(step="normalize", answers=True)), [code])
    assert both.fields["completion"] == " def f():\n    return 1"


def test_split_hits_exact_sizes_with_many_small_classes():
    records = [rec(f"t{i}", f"class{i % 10}", i) for i in range(30)]
    out = [r.split for r, _ in verdicts(Split(SplitStep(step="split", val=0.1, test=0.1)), records)]
    assert out.count("test") == 3 and out.count("val") == 3


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
        yield

    monkeypatch.setattr(ExactDedup, "__call__", broken)
    cfg = CurateConfig(steps=[{"step": "quality"}, {"step": "exact_dedup"}])
    with pytest.raises(ValueError, match="boom") as caught:
        run_steps([rec("some text here")], [], cfg, ctx(), Console(quiet=True))
    assert caught.value.__notes__ == ["in curate step 2 (exact_dedup)"]


def test_advice_knows_whether_a_balance_step_is_configured():
    train = [rec("x", "a")] * 400 + [rec("y", "b")] * 50
    without = advice(train, "classification", [])
    assert "class 'a' is 89% of the training set; consider the balance step" in without
    steps = CurateConfig(steps=[{"step": "balance", "per_class": 400}]).steps
    notes = advice(train, "classification", steps)
    assert not any("consider the balance step" in note for note in notes)
    assert any(note.startswith("class 'a' is 89% of the training set after the balance step") for note in notes)
    capped = CurateConfig(steps=[{"step": "balance", "per_class": 100}]).steps
    assert advice([rec("x", "a")] * 100 + [rec("y", "b")] * 80, "classification", capped) == [
        "class 'a' has 100 training examples (the balance step's per_class); aim for a few hundred per class",
        "class 'b' has 80 training examples; aim for a few hundred per class",
    ]
