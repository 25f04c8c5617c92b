"""The raw arms of `tunewise ablate` on small synthetic records: the curated arm's decontamination rule, seeded
draws topped up past leaked records, the stratified draw and its shortfall, the raw pool as curation reads it,
and the report lines on leakage. Nothing is trained."""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from support.tiny import write_jsonl
from tunewise.config import Config, validate_config
from tunewise.config.curate import DecontaminateStep
from tunewise.data.records import Record
from tunewise.data.splits import DataSplits
from tunewise.experiments.raw_arms import (
    DecontaminationRule,
    RawPool,
    decontamination_rule,
    draw_json,
    draw_raw_arms,
    label_counts,
    load_raw_pool,
    report_lines,
)

RNG = random.Random(0)


def _words(n: int) -> list[str]:
    return ["".join(RNG.choices(string.ascii_lowercase, k=6)) for _ in range(n)]


def _record(text: str, label: str = "a", source: str = "raw.jsonl", line: int = 0) -> Record:
    return Record("classification", {"text": text, "label": label}, source, line)


def _rule(ngram: int = 5, near: float = 0.5, strip: tuple[str, ...] = ()) -> DecontaminationRule:
    return DecontaminationRule(DecontaminateStep(step="decontaminate", ngram=ngram, near_threshold=near), strip)


EVAL_WORDS = [_words(12) for _ in range(3)]
EVAL = [_record(" ".join(words), "a", "test.jsonl", i + 1) for i, words in enumerate(EVAL_WORDS)]
# One copy of each kind the rule catches: the same dedup key; a shared 5-word span; one letter changed in every
# fourth word (no 5-word span left, but a MinHash Jaccard of the character shingles well above 0.5).
EXACT = "  " + " ".join(EVAL_WORDS[0]).upper()
NGRAM = " ".join(_words(4) + EVAL_WORDS[1][3:8] + _words(4))
NEAR = " ".join(w if i % 4 != 3 else "q" + w[1:] for i, w in enumerate(EVAL_WORDS[2]))


def _clean(n: int) -> list[str]:
    return [" ".join(_words(10)) for _ in range(n)]


def _config(steps: list[dict[str, Any]] | None = None, **data: Any) -> Config:
    raw: dict[str, Any] = {"data": {"kind": "classification", "train": "train.jsonl", **data}}
    if steps is not None:
        raw["curate"] = {"steps": steps}
    return validate_config(raw)


# --- the rule


def test_rule_says_how_each_record_copies_an_eval_record():
    clean = _clean(2)
    records = [_record(t) for t in [clean[0], EXACT, NGRAM, NEAR, clean[1]]]
    rule = _rule()
    assert rule.leaks(records, EVAL) == [None, "exact", "ngram", "near", None]
    assert rule.found(records, EVAL) == {"checked": 5, "found": 3, "exact": 1, "ngram": 1, "near": 1}
    assert rule.leaks([], EVAL) == [] and rule.found([], EVAL)["found"] == 0
    # no eval records: nothing can be a copy
    assert rule.leaks(records, []) == [None] * 5


def test_rule_uses_the_curation_dedup_key():
    with_url = _record(" ".join(EVAL_WORDS[0]) + " https://spam.example/x")
    # the key without URLs equals the eval text; with them it is a long shared span, not an exact copy
    assert _rule(strip=("urls",)).leaks([with_url], EVAL) == ["exact"]
    assert _rule().leaks([with_url], EVAL) == ["ngram"]
    # a span shorter than the rule's n-gram is no copy
    assert _rule(ngram=6).leaks([_record(NGRAM)], EVAL) == [None]


def test_decontamination_rule_without_a_decontaminate_step_is_the_step_defaults():
    for config in (_config(), _config([{"step": "exact_dedup"}])):
        rule = decontamination_rule(config)
        assert rule.to_json() == {
            "ngram": 10,
            "near_threshold": 0.8,
            "strip_for_key": [],
            "from": "decontaminate step defaults",
        }


def test_decontamination_rule_is_the_first_enabled_step_with_the_last_enabled_normalize_key():
    steps = [
        {"step": "decontaminate", "ngram": 4, "enabled": False},
        {"step": "decontaminate", "ngram": 6, "near_threshold": 0.7},
        {"step": "normalize", "strip_for_key": ["mentions"]},
        {"step": "decontaminate", "ngram": 8},
        # listed last, but normalize runs before decontamination: its key is the one curation used
        {"step": "normalize", "strip_for_key": ["urls", "hashtags"]},
        {"step": "normalize", "strip_for_key": ["mentions"], "enabled": False},
    ]
    rule = decontamination_rule(_config(steps))
    assert rule.to_json() == {
        "ngram": 6,
        "near_threshold": 0.7,
        "strip_for_key": ["urls", "hashtags"],
        "from": "curate.steps[2] (decontaminate)",
    }
    # every decontaminate step switched off: the first one's settings still name the rule
    off = decontamination_rule(_config([{"step": "decontaminate", "ngram": 4, "enabled": False}]))
    assert (off.settings.ngram, off.origin, off.strip_for_key) == (4, "curate.steps[1] (decontaminate)", ())


# --- drawing from the pool


@dataclass(frozen=True)
class CountingRule(DecontaminationRule):
    """The rule, recording which records it was asked about."""

    asked: list[str] = field(default_factory=list)

    def leaks(self, records: list[Record], eval_records: list[Record]) -> list[str | None]:
        self.asked.extend(r.text for r in records)
        return super().leaks(records, eval_records)


def _pool(texts: list[tuple[str, str]], rule: DecontaminationRule | None = None) -> RawPool:
    records = [_record(text, label, line=i + 1) for i, (text, label) in enumerate(texts)]
    return RawPool(records, {}, rule or _rule(), EVAL)


def test_draw_replaces_each_leaked_record_with_the_next_in_order():
    clean = _clean(5)
    pool = _pool([(clean[0], "a"), (EXACT, "a"), (clean[1], "b"), (NGRAM, "b"), (clean[2], "a"), (clean[3], "b")])
    draw = pool.draw(3)
    # the first 3 give 2 clean; the next one leaked too; the one after tops the draw up
    assert [r.text for r in draw.records] == clean[:3]
    assert (draw.target, draw.drawn, draw.missing) == (3, 5, 0)
    assert draw.leakage() == {"drawn": 5, "removed": 2, "exact": 1, "ngram": 1, "near": 0}
    assert pool.draw(0).records == [] and pool.draw(0).drawn == 0


def test_draw_from_a_pool_that_runs_out_gives_every_clean_record():
    clean = _clean(2)
    pool = _pool([(EXACT, "a"), (clean[0], "a"), (NEAR, "b"), (clean[1], "b")])
    draw = pool.draw(10)
    assert [r.text for r in draw.records] == clean and draw.missing == 8
    assert draw.leakage() == {"drawn": 4, "removed": 2, "exact": 1, "ngram": 0, "near": 1}


def test_draw_of_one_class_keeps_the_pool_order():
    clean = _clean(5)
    pool = _pool([(clean[0], "a"), (clean[1], "b"), (EXACT, "b"), (clean[2], "a"), (clean[3], "b"), (clean[4], "b")])
    draw = pool.draw(2, label="b")
    assert [r.text for r in draw.records] == [clean[1], clean[3]] and draw.removed == {"exact": 1}
    assert draw.drawn == 3


def test_each_record_is_checked_once_across_draws():
    clean = _clean(6)
    rule = CountingRule(_rule().settings)
    texts = [*clean[:2], EXACT, *clean[2:]]
    pool = _pool([(t, "ab"[i % 2]) for i, t in enumerate(texts)], rule)
    first = pool.draw(4)
    second = pool.draw(6)
    assert [r.text for r in second.records[:4]] == [r.text for r in first.records]  # the same seeded order
    assert sorted(rule.asked) == sorted([*clean, EXACT])  # each verdict is kept, not computed again


def test_stratified_draw_takes_each_class_count_and_names_the_short_classes():
    clean = _clean(6)
    order = [(clean[0], "b"), (EXACT, "a"), (clean[1], "a"), (clean[2], "b"), (clean[3], "a"), (NGRAM, "c")]
    pool = _pool([*order, (clean[4], "a"), (clean[5], "c")])
    draw = pool.draw_like({"a": 2, "b": 3, "c": 1})
    assert [r.text for r in draw.records] == [clean[0], clean[1], clean[2], clean[3], clean[5]]  # pool order
    assert label_counts(draw.records) == {"a": 2, "b": 2, "c": 1}
    assert (draw.target, draw.missing, draw.shortfall) == (6, 1, {"b": 1})
    assert draw.leakage() == {"drawn": 7, "removed": 2, "exact": 1, "ngram": 1, "near": 0}


# --- the raw pool as curation reads it


def test_raw_pool_reads_raw_columns_skips_bad_rows_and_unknown_labels_in_a_seeded_order(tmp_path: Path):
    texts = _clean(8)
    rows = [{"tweet": t, "label": "ab"[i % 2]} for i, t in enumerate(texts)]
    rows.append({"tweet": "a label no curated arm has", "label": "angry"})
    raw = write_jsonl(tmp_path / "raw.jsonl", rows)
    with raw.open("a", encoding="utf-8") as fh:
        fh.write('{"tweet": broken\n')
    config = _config(fields={"text": "tweet"}, on_error="raise")  # the pool skips bad rows whatever on_error says

    pool = load_raw_pool(raw, config, ["a", "b"], EVAL, _rule(), seed=5)
    assert pool.counts == {"n_raw_rejected": 1, "n_raw_unknown_label": 1, "n_raw_pool": 8}
    assert sorted(r.text for r in pool.records) == sorted(texts)
    order = [r.text for r in pool.records]
    assert order != texts  # shuffled
    assert [r.text for r in load_raw_pool(raw, config, ["a", "b"], EVAL, _rule(), seed=5).records] == order
    assert [r.text for r in load_raw_pool(raw, config, ["a", "b"], EVAL, _rule(), seed=6).records] != order
    # no label list (a task without classes): every readable record is usable
    assert load_raw_pool(raw, config, [], EVAL, _rule(), seed=5).counts["n_raw_pool"] == 9


def test_raw_arms_skip_the_balanced_draw_when_no_curated_class_has_clean_raw_records(tmp_path: Path):
    raw = write_jsonl(tmp_path / "raw.jsonl", [{"text": t, "label": "a"} for t in [*_clean(4), EXACT]])
    train = [_record(t, "b", "train.jsonl", i) for i, t in enumerate(_clean(3))]
    splits = DataSplits(train, [], EVAL, labels=["a", "b"])
    draws = draw_raw_arms(raw, _config([{"step": "decontaminate", "ngram": 5}]), splits, seed=1)
    assert len(draws.raw.records) == 3 and draws.kind == "classification"
    assert draws.balanced is None
    assert draws.balanced_note == "raw · balanced skipped: the raw file has no clean record of any curated class"
    assert draws.curated_leakage == {"checked": 3, "found": 0, "exact": 0, "ngram": 0, "near": 0}
    assert draws.pool.counts["n_raw_pool"] == 5


# --- what an arm records and the report


def test_draw_json_records_target_leakage_class_mix_and_shortfall():
    clean = _clean(3)
    pool = _pool([(clean[0], "a"), (EXACT, "a"), (clean[1], "b"), (clean[2], "a")])
    plain = draw_json(pool.draw(2), "classification")
    assert plain == {
        "target": 2,
        "leakage": {"drawn": 3, "removed": 1, "exact": 1, "ngram": 0, "near": 0},
        "label_counts": {"a": 1, "b": 1},
    }
    short = draw_json(pool.draw_like({"a": 1, "b": 2}), "classification")
    assert short["label_counts"] == {"a": 1, "b": 1} and short["class_shortfall"] == {"b": 1}
    assert "label_counts" not in draw_json(pool.draw(2), "completion")  # no classes to count


def test_label_counts_are_sorted_by_label():
    records = [_record("x", label) for label in ["b", "a", "b", "c"]]
    assert list(label_counts(records).items()) == [("a", 1), ("b", 2), ("c", 1)]


def _comparison(**changes: Any) -> dict[str, Any]:
    leak = {"drawn": 7, "removed": 2, "exact": 1, "ngram": 1, "near": 0}
    comparison = {
        "decontamination": {**_rule().to_json(), "from": "curate.steps[2] (decontaminate)"},
        "curated": {"n_train": 5, "label_counts": {"[/]": 3, "b": 2}},
        "raw": {"n_train": 5, "target": 5, "leakage": leak, "label_counts": {"[/]": 4, "b": 1}},
        "raw_balanced": {
            "n_train": 4,
            "target": 5,
            "leakage": {**leak, "drawn": 6, "removed": 1, "ngram": 0},
            "label_counts": {"[/]": 3, "b": 1},
            "class_shortfall": {"b": 1},
        },
        "raw_balanced_note": None,
        "curated_leakage": {"checked": 5, "found": 0, "exact": 0, "ngram": 0, "near": 0},
        "n_raw_pool": 9,
    }
    return comparison | changes


def _printed(lines: list[str]) -> list[str]:
    console = Console(record=True, width=400)
    for line in lines:
        console.print(line)
    return console.export_text().splitlines()


def test_report_lines_name_the_rule_the_class_mixes_and_each_draw_leakage():
    lines = report_lines(_comparison())
    assert _printed(lines) == [
        "decontamination of the raw arms (every val/test record): a shared 5-word span or MinHash Jaccard >= 0.5, "
        "as curate.steps[2] (decontaminate)",
        "label counts: curated [/] 3, b 2; raw sample [/] 4, b 1; raw · balanced [/] 3, b 1",
        "raw sample leakage: 2 of 7 raw records drawn (28.6%) copy a val/test record (exact 1, ngram 1, near 0), "
        "removed and replaced by further draws",
        "raw · balanced leakage: 1 of 6 raw records drawn (16.7%) copy a val/test record (exact 1, ngram 0, near 0), "
        "removed and replaced by further draws",
        "raw · balanced: 4 training records, not 5: too few clean raw records of 'b' (short by 1)",
    ]
    assert lines[-1].startswith("[yellow]")  # a smaller arm is a warning


def test_report_lines_on_a_raw_file_that_ran_out_a_skipped_arm_and_leakage_curation_kept():
    raw = {"n_train": 3, "target": 5, "leakage": {"drawn": 0, "removed": 0, "exact": 0, "ngram": 0, "near": 0}}
    kept = {"checked": 5, "found": 2, "exact": 0, "ngram": 1, "near": 1}
    note = "raw · balanced skipped: class balance applies to classification data, not [chat]"
    comparison = _comparison(
        curated={"n_train": 5}, raw=raw, raw_balanced=None, raw_balanced_note=note, curated_leakage=kept
    )
    printed = _printed(report_lines(comparison))
    assert not any(line.startswith("label counts") for line in printed)  # no class mix to show
    assert printed[1:] == [
        "raw sample leakage: 0 of 0 raw records drawn (0.0%) copy a val/test record (exact 0, ngram 0, near 0), "
        "removed and replaced by further draws",
        "raw sample: 3 training records, not 5: the raw file ran out: 9 usable records, 0 of them leaked",
        note,
        "curated training set: 2 of 5 records copy a val/test record by the same rule (exact 0, ngram 1, near 1); "
        "curation kept them, which favours the curated arm",
    ]


def test_report_lines_come_from_a_real_draw(tmp_path: Path):
    clean = _clean(4)
    raw = write_jsonl(tmp_path / "raw.jsonl", [{"text": t, "label": "a"} for t in [EXACT, NEAR, *clean]])
    train = [_record(t, "a", "train.jsonl", i) for i, t in enumerate(_clean(5))]
    draws = draw_raw_arms(
        raw,
        _config([{"step": "decontaminate", "ngram": 5, "near_threshold": 0.5}]),
        DataSplits(train, [], EVAL, labels=["a"]),
        seed=0,
    )
    arm = {"n_train": len(draws.raw.records)} | draw_json(draws.raw, draws.kind)
    comparison = _comparison(raw=arm, raw_balanced=None, curated={"n_train": 5}, **draws.pool.counts)
    comparison["decontamination"] = draws.pool.rule.to_json()
    comparison["curated_leakage"] = draws.curated_leakage
    printed = _printed(report_lines(comparison))
    assert printed[2] == (
        "raw sample leakage: 2 of 6 raw records drawn (33.3%) copy a val/test record (exact 1, ngram 0, near 1), "
        "removed and replaced by further draws"
    )
    assert (
        printed[3] == "raw sample: 4 training records, not 5: the raw file ran out: 6 usable records, 2 of them leaked"
    )
