"""curate/text_steps.py: the record-local steps and exact dedup, each on small inline data: what it keeps, what it
drops, and the category and reason it gives."""

from __future__ import annotations

import pytest

from support.curate import dropped, rec, verdicts
from tunewise.config.curate import (
    ConfidenceStep,
    ConflictsStep,
    ExactDedupStep,
    NormalizeStep,
    QualityStep,
    ValidateStep,
)
from tunewise.curate.base import Context
from tunewise.curate.text_steps import (
    Confidence,
    Conflicts,
    ExactDedup,
    Normalize,
    Quality,
    Validate,
    detect_languages,
    garbled_ratio,
)
from tunewise.data.records import Record, RejectCategory
from tunewise.errors import ConfigError


def ctx(**kw) -> Context:
    return Context(seed=0, **kw)


def test_validate_drops_unknown_labels_and_overlong_examples():
    step = Validate(
        ValidateStep(step="validate", max_tokens=5), ["a", "b"], lambda rs: [len(r.text.split()) for r in rs]
    )
    records = [rec("short", line=1), rec("one two three four five six", line=2), rec("fine", "zz", line=3)]
    assert dropped(step, records) == {2: "length:too_many_tokens", 3: "label:unknown_label"}


def test_validate_drops_a_record_that_cannot_be_rendered_with_the_reason():
    step = Validate(ValidateStep(step="validate", max_tokens=5), None, lambda rs: [1, "the chat template failed"])
    out = list(step([rec("ok", line=1), rec("bad", line=2)], ctx()))
    assert [v.category for v in out] == [None, RejectCategory.UNRENDERABLE]
    assert out[1].drop == "the prompt cannot be rendered: the chat template failed"


def test_validate_keeps_an_unknown_label_category_whatever_the_label_says():
    """A label that reads like another problem ("empty", "invalid JSON") is still an unknown label."""
    step = Validate(ValidateStep(step="validate"), ["a"], None)
    records = [rec("x", "empty", 1), rec("y", "invalid JSON", 2), rec("z", "missing", 3)]
    assert set(dropped(step, records).values()) == {RejectCategory.UNKNOWN_LABEL}


def test_normalize_fixes_mojibake_nfc_and_spaces_and_sets_dedup_key_options():
    context = ctx()
    step = Normalize(NormalizeStep(step="normalize", strip_for_key=["urls", "mentions"]))
    ((record, _),) = verdicts(step, [rec("cafe\u0301   isnâ€™t  bad ")], context)
    assert record.fields["text"] == "caf\u00e9 isn\u2019t bad"
    assert context.key(rec("@bob Look http://x.co/1  HERE")) == "look here"


def test_normalize_keeps_indentation_and_leaves_answers_alone_by_default():
    code = Record("completion", {"prompt": "  Write   f:  ", "completion": " def f():\n    return  1"}, "c.jsonl", 1)
    ((out, _),) = verdicts(Normalize(NormalizeStep(step="normalize")), [code])
    assert out.fields["prompt"] == "  Write f:" and out.fields["completion"] == " def f():\n    return  1"
    ((both, _),) = verdicts(Normalize(NormalizeStep(step="normalize", answers=True)), [code])
    assert both.fields["completion"] == " def f():\n    return 1"


def test_normalize_without_apply_to_text_only_sets_the_key_options():
    context = ctx()
    step = Normalize(NormalizeStep(step="normalize", apply_to_text=False, strip_for_key=["hashtags"]))
    out = list(step([rec("cafe\u0301   #x")], context))
    assert out[0].record.fields["text"] == "cafe\u0301   #x" and not out[0].changes
    assert context.key_strip == ("hashtags",)


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


def test_conflicts_counts_conflicting_texts_once_each():
    context = ctx()
    records = [rec("x", "a", 1), rec("x", "b", 2), rec("x", "b", 3), rec("y", "a", 4), rec("y", "b", 5)]
    list(Conflicts(ConflictsStep(step="conflicts"))(records, context))
    assert context.notes["conflicting_texts"] == 2


def test_exact_dedup_keeps_the_first_and_names_it():
    context = ctx()
    out = list(ExactDedup(ExactDedupStep(step="exact_dedup"))([rec("A b", line=1), rec("a  B", line=2)], context))
    assert out[0].drop is None and out[1].drop == "exact duplicate of in.jsonl:1"
    assert context.cluster_sizes["exact_dedup"] == [2]


def test_exact_dedup_cluster_sizes_list_each_repeated_text_largest_first():
    context = ctx()
    texts = ["x", "y", "x", "z", "x", "y", "w"]
    out = list(ExactDedup(ExactDedupStep(step="exact_dedup"))([rec(t, line=i) for i, t in enumerate(texts)], context))
    assert [v.category for v in out].count(RejectCategory.EXACT_DUPLICATE) == 3
    assert context.cluster_sizes["exact_dedup"] == [3, 2]


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


def test_quality_check_gives_the_category_and_a_reason_with_the_numbers():
    step = Quality(QualityStep(step="quality", min_words=1, max_words=3))
    assert step.check("one two three four") == (RejectCategory.QUALITY_TOO_LONG, "4 words > max_words 3")
    assert step.check("one two") is None


def test_language_filter_with_lingua():
    step = Quality(QualityStep(step="quality", languages=["en"]))
    records = [
        rec("The weather is lovely today and I am going outside", line=1),
        rec("Das Wetter ist heute schön und ich gehe nach draußen", line=2),
    ]
    assert dropped(step, records) == {2: "quality:language"}


def test_detect_languages_is_unsure_about_short_text_and_refuses_unknown_codes():
    found = detect_languages(["The weather is lovely today and I am going outside", "ok", "@bob http://x.co #tag"])
    assert found == ["en", None, None]
    with pytest.raises(ConfigError, match="unknown ISO 639-1 language code 'XX'"):
        detect_languages(["hello there friend"], ["en", "xx"])


def test_garbled_ratio_counts_replacement_and_control_characters():
    assert garbled_ratio("plain clean text") == 0.0
    assert garbled_ratio("ab\ufffd\x01") == pytest.approx(0.5)
    assert garbled_ratio("tab\tand\nnewline") == 0.0


def test_confidence_threshold_and_missing_values():
    records = [rec("x", line=1, confidence=0.9), rec("y", line=2, confidence=0.3), rec("z", line=3)]
    assert dropped(Confidence(ConfidenceStep(step="confidence", min=0.5)), records) == {2: "label:low_confidence"}
    strict = Confidence(ConfidenceStep(step="confidence", min=0.5, keep_missing=False))
    assert dropped(strict, records) == {2: "label:low_confidence", 3: "label:no_confidence"}


def test_confidence_treats_nan_and_text_as_no_value():
    records = [
        rec("x", line=1, confidence=float("nan")),
        rec("y", line=2, confidence="high"),
        rec("z", line=3, c="0.9"),
    ]
    strict = Confidence(ConfidenceStep(step="confidence", min=0.5, keep_missing=False))
    assert dropped(strict, records) == {1: "label:no_confidence", 2: "label:no_confidence", 3: "label:no_confidence"}
    by_field = Confidence(ConfidenceStep(step="confidence", field="c", min=0.5, keep_missing=False))
    assert dropped(by_field, [rec("z", line=3, c="0.9")]) == {}
