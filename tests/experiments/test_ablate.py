"""`ablate` on the tiny model: nested learning-curve arms, curated vs equal-budget raw samples (the raw class mix
and the curated label counts), decontaminated by the curated arm's rule, bootstrap CIs."""

from __future__ import annotations

import json
import random
import string
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from support.tiny import make_classification_rows, write_jsonl
from tunewise.config import load_config, validate_config
from tunewise.data.records import Record
from tunewise.data.splits import DataSplits
from tunewise.errors import ConfigError
from tunewise.evaluate.metrics import classification_metrics
from tunewise.evaluate.tasks import ClassificationTask
from tunewise.experiments import metric_ci
from tunewise.experiments.ablate import ablate, attribution
from tunewise.experiments.raw_arms import draw_raw_arms, label_counts

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _key(text: str) -> str:
    return " ".join(text.casefold().split())


def _eval(run_dir: str) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "eval.json").read_text())


def _imbalanced_rows(counts: dict[str, int], seed: int) -> list[dict[str, Any]]:
    rows = make_classification_rows(3 * max(counts.values()), seed=seed)
    return [row for label, n in counts.items() for row in [r for r in rows if r["label"] == label][:n]]


def test_learning_curve_and_curated_vs_raw_on_the_tiny_model(write_config, tiny_data, tmp_path: Path):
    test_rows = _rows(tiny_data["test"])
    planted = {"text": "  " + test_rows[0]["text"].upper().replace(" ", "   "), "label": test_rows[0]["label"]}
    # Near-copies of every test record (as spam templates repeat): not equal to any test text after case and
    # space folding, but within the decontaminate step's default MinHash threshold.
    near_copies = [{"text": row["text"] + "!", "label": row["label"]} for row in test_rows]
    clean = _imbalanced_rows({"negative": 34, "neutral": 40, "positive": 100}, seed=5)  # the raw mix: not 1:1:1
    raw = tmp_path / "raw.jsonl"
    write_jsonl(raw, [*clean, *near_copies, planted, {"text": "a b c d", "label": "angry"}])
    with raw.open("a") as fh:
        fh.write('{"text": broken\n{"label": "neutral"}\n')
    path = write_config(train={"epochs": 1, "eval_steps": 4}, ablate={"fractions": [0.25, 0.5], "raw": str(raw)})
    console = Console(record=True, width=200)
    out = ablate(load_config(path), path, console)

    report = json.loads((out / "ablation.json").read_text())
    assert report["primary_metric"] == "macro_f1" and report["n_test"] == 30 and report["n_train"] == 96
    curve = report["learning_curve"]
    assert [a["fraction"] for a in curve] == [0.25, 0.5, 1.0]  # the full set is always an arm
    assert [a["n_train"] for a in curve] == [24, 48, 96]
    assert [a["planned_steps"] for a in curve] == [3, 6, 12] == [a["steps"] for a in curve]  # epochs rule, no stop
    subsets = [{json.dumps(r) for r in _rows(out / "data" / f"train-{a['fraction']:g}.jsonl")} for a in curve]
    assert subsets[0] < subsets[1] < subsets[2]  # nested
    assert {r["text"] for r in _rows(out / "data" / "train-1.jsonl")} == {r["text"] for r in _rows(tiny_data["train"])}

    # every arm is scored on the same test file; only the first also scores the base model
    sources = [[p["source"] for p in _rows(Path(a["run_dir"]) / "predictions.jsonl")] for a in curve]
    assert sources[0][30:] == sources[1] == sources[2] and len(sources[1]) == 30
    assert [set(_eval(a["run_dir"])["models"]) for a in curve] == [
        {"base", "fine-tuned"},
        {"fine-tuned"},
        {"fine-tuned"},
    ]
    assert report["base"]["metric"] == _eval(curve[0]["run_dir"])["models"]["base"]["macro_f1"]
    for arm in curve:
        assert arm["metric"] == _eval(arm["run_dir"])["models"]["fine-tuned"]["macro_f1"]
        assert 0 <= arm["ci_low"] <= arm["ci_high"] <= 1
    assert curve[-1]["vs_full"] is None
    for arm in curve[:-1]:
        assert arm["vs_full"]["delta"] == pytest.approx(arm["metric"] - curve[-1]["metric"])
        assert arm["vs_full"]["ci_low"] <= arm["vs_full"]["delta"] <= arm["vs_full"]["ci_high"]
    last = report["last_step"]
    assert (last["from"], last["to"]) == (0.5, 1.0) and last["text"].startswith("50% -> 100%: ")
    assert last["delta"] == pytest.approx(curve[2]["metric"] - curve[1]["metric"])

    comparison = report["curated_vs_raw"]
    assert comparison["raw_source"] == str(raw)
    assert comparison["n_raw_rejected"] == 2 and comparison["n_raw_unknown_label"] == 1
    assert comparison["n_raw_pool"] == len(clean) + len(near_copies) + 1
    # no configured decontaminate step: the step's defaults, the rule every raw arm is held to
    assert comparison["decontamination"] == {
        "ngram": 10,
        "near_threshold": 0.8,
        "strip_for_key": [],
        "from": "decontaminate step defaults",
    }
    evaluated = {_key(r["text"]) for r in [*test_rows, *_rows(tiny_data["val"])]}
    leaked = {_key(r["text"]) for r in [planted, *near_copies]}
    raw_rows = _rows(out / "data" / "train-raw.jsonl")
    balanced_rows = _rows(out / "data" / "train-raw-balanced.jsonl")
    for rows in (raw_rows, balanced_rows):  # no exact or near copy of a val/test record in either raw arm
        assert not {_key(r["text"]) for r in rows} & (evaluated | leaked)
    # leakage: the raw draw met copies of test records, removed them and drew others in their place
    leakage = comparison["raw"]["leakage"]
    assert leakage["near"] >= 1 and leakage["removed"] == leakage["exact"] + leakage["ngram"] + leakage["near"]
    assert leakage["drawn"] == 96 + leakage["removed"]
    assert len(raw_rows) == comparison["n_raw_sample"] == comparison["raw"]["n_train"] == comparison["raw"]["target"]
    assert comparison["raw"]["n_train"] == 96  # topped up to the curated size
    assert comparison["curated_leakage"] == {"checked": 96, "found": 0, "exact": 0, "ngram": 0, "near": 0}

    # raw · balanced: the curated training set's label counts; raw: the raw file's mix
    curated_counts = dict(Counter(r["label"] for r in _rows(tiny_data["train"])))
    assert dict(Counter(r["label"] for r in balanced_rows)) == curated_counts == {k: 32 for k in curated_counts}
    balanced = comparison["raw_balanced"]
    assert balanced["label_counts"] == comparison["curated"]["label_counts"] == curated_counts
    assert "class_shortfall" not in balanced and balanced["n_train"] == balanced["target"] == 96
    assert balanced["leakage"]["removed"] == balanced["leakage"]["drawn"] - 96 >= 1
    assert comparison["raw"]["label_counts"]["positive"] > 32 and comparison["raw_balanced_note"] is None
    # equal budget: every raw arm runs exactly the steps the full curated arm planned, no early stop
    assert comparison["max_steps"] == comparison["raw"]["steps"] == curve[-1]["planned_steps"] == 12
    assert balanced["steps"] == balanced["planned_steps"] == 12
    assert comparison["curated"]["run_dir"] == curve[-1]["run_dir"]
    assert balanced["run_dir"] not in {comparison["raw"]["run_dir"], curve[-1]["run_dir"]}
    balanced_sources = [p["source"] for p in _rows(Path(balanced["run_dir"]) / "predictions.jsonl")]
    assert balanced_sources == sources[1]  # the same test records
    for arm in (comparison["raw"], balanced):  # the table's last column: arm - curated 100%, paired
        assert arm["vs_full"]["delta"] == pytest.approx(arm["metric"] - curve[-1]["metric"])
    diff = comparison["difference"]
    assert diff["delta"] == pytest.approx(curve[-1]["metric"] - comparison["raw"]["metric"])
    assert diff["ci_low"] <= diff["delta"] <= diff["ci_high"] and 0 < diff["p_value"] <= 1
    assert set(comparison["differences"]) == {"macro_f1", "accuracy"}
    assert ("no significant difference" in comparison["text"]) == (not diff["significant"])
    parts = comparison["attribution"]
    assert parts["balancing"]["delta"] == pytest.approx(balanced["metric"] - comparison["raw"]["metric"])
    assert parts["cleaning"]["delta"] == pytest.approx(curve[-1]["metric"] - balanced["metric"])
    significant = tuple(k for k in ("balancing", "cleaning") if parts[k]["significant"])
    verdicts = {(): "neither", ("balancing",): "balancing", ("cleaning",): "cleaning"}
    assert parts["verdict"] == verdicts.get(significant, "both")

    assert (out / "plots" / "learning_curve.png").stat().st_size > 0
    printed = console.export_text()
    assert "Ablation: macro_f1" in printed and "raw sample" in printed and "curated vs raw (12 steps each)" in printed
    assert "raw · balanced" in printed and "balancing vs cleaning (12 steps each): " in printed
    assert f"raw sample leakage: {leakage['removed']} of {leakage['drawn']} raw records drawn" in printed


def test_curated_config_samples_raw_from_the_file_curation_reads(tiny_model_dir, tmp_path: Path):
    rows = make_classification_rows(120, seed=3)
    raw = write_jsonl(tmp_path / "raw.jsonl", [*rows, rows[0], rows[1]])  # duplicates for curation to drop
    config_path = tmp_path / "tweets.yaml"
    config_path.write_text(
        json.dumps(
            {
                "model": {"name": str(tiny_model_dir)},
                "data": {"kind": "classification", "train": "raw.jsonl"},
                "curate": {
                    "output": "curated",
                    "steps": [
                        {"step": "validate"},
                        {"step": "exact_dedup"},
                        {"step": "split", "val": 0.2, "test": 0.2},
                        {"step": "decontaminate", "ngram": 4, "near_threshold": 0.9},
                    ],
                },
                "train": {"max_steps": 2, "eval_steps": 2, "batch_size": 8, "max_length": 64},
                "eval": {"batch_size": 8},
                "output": {"dir": str(tmp_path / "runs")},
                "ablate": {"fractions": [1.0]},
            }
        )
    )
    from typer.testing import CliRunner

    from tunewise.cli import app

    result = CliRunner().invoke(app, ["ablate", str(config_path)], catch_exceptions=False)  # through the CLI
    assert result.exit_code == 0, result.output
    out = tmp_path / "runs" / "ablations" / "tweets"
    report = json.loads((out / "ablation.json").read_text())
    curated = {split: _rows(tmp_path / "curated" / f"{split}.jsonl") for split in ("train", "val", "test")}
    assert report["n_train"] == len(curated["train"]) and report["n_test"] == len(curated["test"])
    comparison = report["curated_vs_raw"]
    assert comparison["raw_source"] == str(raw)
    # the raw arms are held to the curated arm's decontaminate step
    rule = {"ngram": 4, "near_threshold": 0.9, "strip_for_key": [], "from": "curate.steps[4] (decontaminate)"}
    assert comparison["decontamination"] == rule
    # the raw file holds every curated val/test text: every copy drawn is removed, counted and replaced
    eval_texts = {_key(r["text"]) for r in curated["val"] + curated["test"]}
    raw_texts = {_key(r["text"]) for r in _rows(out / "data" / "train-raw.jsonl")}
    assert raw_texts and not raw_texts & eval_texts
    leakage = comparison["raw"]["leakage"]
    assert leakage["exact"] >= 1 and leakage["drawn"] == comparison["raw"]["n_train"] + leakage["removed"]
    assert comparison["raw"]["target"] == comparison["curated"]["n_train"] == len(curated["train"])
    assert [a["fraction"] for a in report["learning_curve"]] == [1.0] and report["last_step"] is None
    assert comparison["max_steps"] == comparison["raw"]["steps"] == comparison["raw_balanced"]["steps"] == 2


def test_curated_vs_raw_needs_a_raw_file(write_config):
    path = write_config(ablate={"fractions": [0.5]})
    with pytest.raises(ConfigError, match="needs raw data: set ablate.raw"):
        ablate(load_config(path), path, Console(quiet=True))
    with pytest.raises(ConfigError, match="no ablate: section"):
        ablate(load_config(write_config()), path, Console(quiet=True))


def test_one_sample_bootstrap_ci_recomputes_the_metric_per_resample():
    labels = ["negative", "neutral", "positive"]
    gold = [labels[i % 3] for i in range(60)]
    pred = [g if i % 4 else labels[(i + 1) % 3] for i, g in enumerate(gold)]
    predictions = [{"gold": g, "pred": p} for g, p in zip(gold, pred, strict=True)]
    task = ClassificationTask(labels)
    ci = metric_ci(task, predictions, seed=1)
    assert ci is not None
    assert ci.delta == pytest.approx(classification_metrics(gold, pred, labels)["macro_f1"])  # same as evaluation
    assert ci.low < ci.delta < ci.high < 1
    perfect = metric_ci(task, [{"gold": g, "pred": g} for g in gold])
    assert perfect is not None and perfect.low == perfect.high == 1.0
    unparsed = metric_ci(ClassificationTask(labels, mode="generate"), [{"gold": "neutral", "pred": "(unparsed)"}] * 5)
    assert unparsed is not None and unparsed.high == 0.0


def _words(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choices(string.ascii_lowercase, k=6)) for _ in range(n)]


def _record(text: str, label: str, source: str, line: int) -> Record:
    return Record("classification", {"text": text, "label": label}, source, line)


def test_raw_draw_removes_exact_ngram_and_near_copies_by_the_curated_rule_and_tops_up(tmp_path: Path):
    rng = random.Random(0)
    test_words = [_words(rng, 12) for _ in range(3)]
    test = [_record(" ".join(words), "a", "test.jsonl", i) for i, words in enumerate(test_words)]
    val = [_record(" ".join(_words(rng, 12)), "b", "val.jsonl", 0)]
    # copies the rule below must catch: the same key once the URL is left out; a shared 5-word span;
    # one letter changed in every fourth word (no 5-word span left, but a MinHash Jaccard well above 0.5)
    exact = "  " + " ".join(test_words[0]).upper() + " https://spam.example/x"
    ngram = " ".join(test_words[1][:5] + _words(rng, 7))
    near = " ".join(w if i % 4 != 3 else "q" + w[1:] for i, w in enumerate(test_words[2]))
    clean = [(" ".join(_words(rng, 10)), label) for label in "aaaaaabbbb"]
    rows = [{"text": t, "label": label} for t, label in [(exact, "a"), (ngram, "b"), (near, "a"), *clean]]
    raw = write_jsonl(tmp_path / "raw.jsonl", rows)
    train = [_record(" ".join(_words(rng, 10)), label, "train.jsonl", i) for i, label in enumerate("aaaaaaabbb")]
    train.append(_record(near + " extra", "a", "train.jsonl", 10))  # the curated set kept one near-copy
    config = validate_config(
        {
            "data": {"kind": "classification", "train": str(raw)},
            "curate": {
                "steps": [
                    {"step": "normalize", "strip_for_key": ["urls"]},
                    {"step": "decontaminate", "ngram": 5, "near_threshold": 0.5},
                ]
            },
        }
    )
    splits = DataSplits(train[:10], val, test, labels=["a", "b"])  # 10 to draw: exactly the clean raw records

    draws = draw_raw_arms(raw, config, splits, seed=3)
    assert draws.pool.rule.to_json() == {
        "ngram": 5,
        "near_threshold": 0.5,
        "strip_for_key": ["urls"],
        "from": "curate.steps[2] (decontaminate)",
    }
    assert draws.raw.leakage() == {"drawn": 13, "removed": 3, "exact": 1, "ngram": 1, "near": 1}
    assert sorted(r.text for r in draws.raw.records) == sorted(t for t, _ in clean)
    assert [r.text for r in draw_raw_arms(raw, config, splits, seed=3).raw.records] == [
        r.text for r in draws.raw.records
    ]  # deterministic with the seed
    # raw · balanced: the curated label counts (a 7, b 3), but only 6 clean raw records of class a
    assert draws.balanced is not None and label_counts(draws.balanced.records) == {"a": 6, "b": 3}
    assert draws.balanced.shortfall == {"a": 1} and draws.balanced.target == 10
    assert draws.curated_leakage == {"checked": 10, "found": 0, "exact": 0, "ngram": 0, "near": 0}
    with_copy = DataSplits(train[1:], val, test, labels=["a", "b"])
    assert draw_raw_arms(raw, config, with_copy, seed=3).curated_leakage["near"] == 1

    # without a decontaminate step: the step's defaults (a 10-word span, Jaccard 0.8) and a key that keeps URLs:
    # the URL copy still shares 12 words, the other two pass
    defaults = validate_config({"data": {"kind": "classification", "train": str(raw)}})
    pool = draw_raw_arms(raw, defaults, splits, seed=3).pool
    assert pool.rule.to_json() == {
        "ngram": 10,
        "near_threshold": 0.8,
        "strip_for_key": [],
        "from": "decontaminate step defaults",
    }
    assert pool.rule.found(pool.records, [*val, *test]) == {
        "checked": 13,
        "found": 1,
        "exact": 0,
        "ngram": 1,
        "near": 0,
    }

    only_copies = write_jsonl(tmp_path / "copies.jsonl", rows[:3])
    with pytest.raises(ConfigError, match="no usable raw records for curated vs raw"):
        draw_raw_arms(only_copies, config, splits, seed=3)


def test_raw_balanced_is_skipped_with_a_note_for_tasks_without_classes(tmp_path: Path):
    def completion(i: int, source: str) -> Record:
        return Record("completion", {"prompt": f"question {i} {source}", "completion": f"answer {i}"}, source, i)

    raw = write_jsonl(tmp_path / "raw.jsonl", [completion(i, "raw").to_row() for i in range(8)])
    config = validate_config({"data": {"kind": "completion", "train": str(raw)}})
    splits = DataSplits([completion(i, "train") for i in range(5)], [completion(0, "val")], [completion(0, "test")])
    draws = draw_raw_arms(raw, config, splits, seed=0)
    assert len(draws.raw.records) == 5 and draws.balanced is None
    assert draws.balanced_note == "raw · balanced skipped: class balance applies to classification data, not completion"


def test_attribution_says_whether_balancing_or_cleaning_made_the_difference():
    labels = ["ham", "spam"]
    gold = [labels[i % 2] for i in range(80)]
    right = [{"gold": g, "pred": g} for g in gold]
    half = [{"gold": g, "pred": g if i % 4 < 2 else labels[1 - labels.index(g)]} for i, g in enumerate(gold)]
    task = ClassificationTask(labels)

    def arms(raw: list, balanced: list, curated: list) -> dict[str, Any] | None:
        return attribution(task, {"_predictions": curated}, {"_predictions": raw}, {"_predictions": balanced}, 0)

    balancing = arms(half, right, right)
    assert balancing is not None and balancing["verdict"] == "balancing"
    assert balancing["balancing"]["delta"] > 0 and balancing["cleaning"]["delta"] == 0
    assert balancing["text"].startswith("balancing helped; cleaning made no significant difference: ")
    cleaning = arms(half, half, right)
    assert cleaning is not None and cleaning["verdict"] == "cleaning" and cleaning["cleaning"]["significant"]
    both, neither = arms(right, half, right), arms(half, half, half)
    assert (
        both is not None and both["verdict"] == "both" and both["text"].startswith("balancing hurt and cleaning helped")
    )
    assert neither is not None and neither["verdict"] == "neither"
