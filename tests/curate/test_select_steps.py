"""curate/select_steps.py: the steps that look at the whole set (label errors, relevance, balance, split) on
small inline data, and the apportioning behind exact split sizes."""

from __future__ import annotations

import pytest

from support.curate import ctx, dropped, rec, verdicts
from tunewise.config.curate import BalanceStep, LabelErrorsStep, RelevanceStep, SplitStep
from tunewise.curate.select_steps import Balance, LabelErrors, Relevance, Split, apportion
from tunewise.errors import ConfigError


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


def test_label_errors_is_skipped_with_a_note_when_a_class_is_too_small():
    context = ctx()
    records = [rec(f"text {i}", "a", i) for i in range(10)] + [rec("lonely", "b", 10)]
    assert dropped(LabelErrors(LabelErrorsStep(step="label_errors", folds=3)), records, context) == {}
    assert context.notes["label_errors"].startswith("skipped")


def test_relevance_keeps_the_records_closest_to_the_task():
    records = [
        rec("autonomous cars on the highway", line=1),
        rec("my cat sleeps all day", line=2),
        rec("driverless cars and safety", line=3),
    ]
    step = Relevance(RelevanceStep(step="relevance", description="cars driverless autonomous", top_k=2))
    assert dropped(step, records) == {2: "relevance:low"}


def test_relevance_by_min_score_from_seed_examples_and_its_config_errors():
    records = [rec("cars drive fast", line=1), rec("fruit is sweet", line=2)]
    context = ctx()
    step = Relevance(RelevanceStep(step="relevance", seeds=["fast cars drive"], min_score=0.5))
    out = list(step(records, context))
    assert [v.category for v in out] == [None, "relevance:low"]
    assert out[1].drop.startswith("similarity to the task 0.000 < cutoff 0.500")
    assert context.notes["relevance_cutoff"] == 0.5
    with pytest.raises(ConfigError, match="give a description or seeds"):
        list(Relevance(RelevanceStep(step="relevance", description="cars"))(records, ctx()))


def test_balance_caps_classes_reproducibly():
    records = [rec(f"t{i}", "a" if i < 10 else "b", i) for i in range(14)]
    step = Balance(BalanceStep(step="balance", total=8))
    first = verdicts(step, records)
    kept_labels = [r.label for r, c in first if c is None]
    assert kept_labels.count("a") == 4 and kept_labels.count("b") == 4
    assert first == verdicts(step, records)


def test_balance_per_class_and_a_total_that_small_classes_cannot_use():
    records = [rec(f"t{i}", "a" if i < 10 else "b" if i < 16 else "c", i) for i in range(18)]
    capped = Balance(BalanceStep(step="balance", per_class=3))
    kept = [r.label for r, c in verdicts(capped, records) if c is None]
    assert (kept.count("a"), kept.count("b"), kept.count("c")) == (3, 3, 2)
    water = Balance(BalanceStep(step="balance", total=12))  # c has only 2: its share goes to a and b
    out = verdicts(water, records)
    kept = [r.label for r, c in out if c is None]
    assert (kept.count("a"), kept.count("b"), kept.count("c")) == (5, 5, 2)
    reasons = {v.drop for v in water(records, ctx()) if v.drop}
    assert reasons == {"class 'a' sampled down to 5", "class 'b' sampled down to 5"}


def test_split_is_stratified_and_respects_given_splits():
    records = [rec(f"t{i}", "a" if i % 2 else "b", i) for i in range(40)]
    out = [r.split for r, _ in verdicts(Split(SplitStep(step="split", val=0.1, test=10)), records)]
    assert out.count("test") == 10 and out.count("val") == 4 and out.count("train") == 26
    tests = [r for r, _ in verdicts(Split(SplitStep(step="split", test=10)), records) if r.split == "test"]
    assert {r.label for r in tests} == {"a", "b"}
    given = ctx(reference_splits=("test",))
    assert "test" not in {r.split for r, _ in verdicts(Split(SplitStep(step="split")), records, given)}


def test_split_hits_exact_sizes_with_many_small_classes():
    records = [rec(f"t{i}", f"class{i % 10}", i) for i in range(30)]
    out = [r.split for r, _ in verdicts(Split(SplitStep(step="split", val=0.1, test=0.1)), records)]
    assert out.count("test") == 3 and out.count("val") == 3


def test_split_keeps_records_that_already_have_one_and_refuses_to_leave_no_training_records():
    records = [rec("given", line=0, split="val")] + [rec(f"t{i}", line=i + 1) for i in range(10)]
    out = [r.split for r, _ in verdicts(Split(SplitStep(step="split", test=2)), records)]
    assert out[0] == "val" and out[1:].count("test") == 2 and out.count("val") == 1
    assert verdicts(Split(SplitStep(step="split")), []) == []
    with pytest.raises(ConfigError, match="leave no training records of 4"):
        list(Split(SplitStep(step="split", val=2, test=2))([rec(f"t{i}", line=i) for i in range(4)], ctx()))


def test_apportion_splits_a_total_in_proportion_with_largest_remainders():
    assert apportion(3, [10, 10, 10]) == [1, 1, 1]
    assert apportion(4, [5, 3, 2]) == [2, 1, 1]
    assert sum(apportion(7, [3, 3, 3, 3])) == 7
    assert apportion(5, [1, 1]) == [1, 1]  # never more than a group holds
    assert apportion(2, []) == [] and apportion(2, [0, 0]) == [0, 0]
