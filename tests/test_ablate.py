"""`ablate` on the tiny model: nested learning-curve arms, curated vs an equal-budget raw sample, bootstrap CIs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tiny import make_classification_rows, write_jsonl
from tunewise.config import load_config
from tunewise.errors import ConfigError
from tunewise.evaluate.metrics import classification_metrics
from tunewise.evaluate.tasks import ClassificationTask
from tunewise.experiments import metric_ci
from tunewise.experiments.ablate import ablate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _key(text: str) -> str:
    return " ".join(text.casefold().split())


def _eval(run_dir: str) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "eval.json").read_text())


def test_learning_curve_and_curated_vs_raw_on_the_tiny_model(write_config, tiny_data, tmp_path: Path):
    test_rows = _rows(tiny_data["test"])
    planted = {"text": "  " + test_rows[0]["text"].upper().replace(" ", "   "), "label": test_rows[0]["label"]}
    raw = tmp_path / "raw.jsonl"
    write_jsonl(raw, [*make_classification_rows(96, seed=5), planted, {"text": "a b c d", "label": "angry"}])
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
    assert comparison["n_raw_in_eval"] >= 1  # at least the planted copy of a test record
    raw_texts = [_key(r["text"]) for r in _rows(out / "data" / "train-raw.jsonl")]
    assert _key(planted["text"]) not in raw_texts
    assert not set(raw_texts) & {_key(r["text"]) for r in [*test_rows, *_rows(tiny_data["val"])]}
    assert len(raw_texts) == comparison["n_raw_sample"] == comparison["raw"]["n_train"] == comparison["n_raw_usable"]
    # equal budget: the raw arm runs exactly the steps the full curated arm planned, no early stop
    assert comparison["max_steps"] == comparison["raw"]["steps"] == curve[-1]["planned_steps"] == 12
    assert comparison["curated"]["run_dir"] == curve[-1]["run_dir"]
    diff = comparison["difference"]
    assert diff["delta"] == pytest.approx(curve[-1]["metric"] - comparison["raw"]["metric"])
    assert diff["ci_low"] <= diff["delta"] <= diff["ci_high"] and 0 < diff["p_value"] <= 1
    assert set(comparison["differences"]) == {"macro_f1", "accuracy"}
    assert ("no significant difference" in comparison["text"]) == (not diff["significant"])

    assert (out / "plots" / "learning_curve.png").stat().st_size > 0
    printed = console.export_text()
    assert "Ablation: macro_f1" in printed and "raw sample" in printed and "curated vs raw (12 steps each)" in printed


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
    # the raw file holds every curated val/test text (some twice): all copies are kept out of the raw arm
    eval_texts = {_key(r["text"]) for r in curated["val"] + curated["test"]}
    assert comparison["n_raw_in_eval"] == sum(_key(r["text"]) in eval_texts for r in _rows(raw)) >= len(eval_texts)
    raw_texts = {_key(r["text"]) for r in _rows(out / "data" / "train-raw.jsonl")}
    assert raw_texts and not raw_texts & eval_texts
    assert [a["fraction"] for a in report["learning_curve"]] == [1.0] and report["last_step"] is None
    assert comparison["max_steps"] == comparison["raw"]["steps"] == 2


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
