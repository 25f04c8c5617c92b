"""`bakeoff` on tiny models: every candidate estimated, its base scored zero- and few-shot on validation, its
learning curve extrapolated; a failing candidate reported while the others continue; the test split never read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from support.tiny import build_tiny_model
from tunewise.config import load_config
from tunewise.errors import ConfigError
from tunewise.experiments.bakeoff import bakeoff
from tunewise.experiments.bakeoff_report import recommendation
from tunewise.track.store import sync

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_candidates_and_a_broken_one(write_config, tiny_model_dir: Path, tiny_data, tmp_path: Path):
    second = build_tiny_model(tmp_path / "second-tiny", seed=5)
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    path = write_config(
        model={"trust_remote_code": True},  # the user's own model, reviewed: the other candidates do not inherit it
        train={"epochs": 1, "eval_steps": 50},
        bakeoff={"fractions": [0.25, 0.5], "probe_steps": 0, "resamples": 200, "verify_top": 1},
    )
    console = Console(record=True, width=240)
    models = [str(tiny_model_dir), str(broken), str(second)]
    out = bakeoff(load_config(path), path, console, models=models)

    report = json.loads((out / "bakeoff.json").read_text())
    assert report["split"] == "val" and report["n_val"] == 24 and report["n_train"] == 96
    assert report["subsets"] == [24, 48]
    by_model = {row["model"]: row for row in report["candidates"]}
    assert set(by_model) == set(models)

    failed = by_model[str(broken)]
    assert failed["rank"] is None and failed["failure"].startswith("model.name: ")  # the loader's own words
    assert "has no config.json" in failed["failure"]
    ranked = sorted((row for row in report["candidates"] if row["rank"]), key=lambda r: r["rank"])
    assert [row["model"] for row in ranked] != [] and len(ranked) == 2
    for row in ranked:
        assert set(row["base"]) == {"zero-shot", "few-shot"}
        assert [arm["n_train"] for arm in row["learning_curve"]] == [24, 48]
        extrapolated = row["extrapolated"]
        assert extrapolated["n_target"] == 96
        assert extrapolated["ci_low"] <= extrapolated["metric"] <= extrapolated["ci_high"]
        assert row["estimate"]["model"]["n_params"] > 0
    assert sum(row["probability_best"] for row in ranked) == pytest.approx(1.0)
    first = ranked[0]
    assert first["extrapolated"]["metric"] >= ranked[1]["extrapolated"]["metric"]
    assert report["recommendation"]["model"] == first["model"]

    # verify_top: 1 -> the top candidate's full fine-tune, and its error against the extrapolation
    check = first["verification"]
    assert check["measured"]["n_train"] == 96
    assert check["error"] == pytest.approx(check["measured"]["metric"] - first["extrapolated"]["metric"], abs=1e-5)
    assert ranked[1]["verification"] is None

    # every arm is a normal run, scored on the validation file only; the test file is never read
    runs = [run for run, _ in sync(load_config(path).output.dir)]  # what `tunewise runs list` shows
    assert len(runs) == 2 * (1 + 2) + 1  # per candidate: base eval + 2 subsets; plus the verification
    test_texts = {row["text"] for row in _rows(tiny_data["test"])}
    for run in runs:
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["eval"]["split"] == "val"
        assert config["data"]["test"] == config["data"]["val"]
        sources = {row["source"].rpartition(":")[0] for row in _rows(run / "predictions.jsonl")}
        assert sources == {config["data"]["val"]}
        assert config["model"]["trust_remote_code"] == (config["model"]["name"] == str(tiny_model_dir))
    written = [p for p in out.rglob("*.jsonl") if p.parent.name == "data"]
    assert written and all(not test_texts & {r["text"] for r in _rows(p)} for p in written)

    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["model"]["name"] == first["model"] and "bakeoff" not in best
    assert best["data"]["test"] == str(tiny_data["test"])  # the user's own config, reproducing the whole run
    html = (out / "bakeoff.html").read_text()
    assert "not-a-model" in html and "data:image/png;base64," in html
    text = console.export_text()
    assert "recommended:" in text and "left out" in text


def test_no_candidates_is_a_config_error(write_config):
    path = write_config()
    with pytest.raises(ConfigError, match="--model"):
        bakeoff(load_config(path), path, Console(), models=[])


def test_recommendation_says_how_sure_it_is():
    def row(model: str, rank: int, chance: float, seconds: float = 600) -> dict[str, Any]:
        return {
            "model": model,
            "rank": rank,
            "probability_best": chance,
            "extrapolated": {"metric": 0.7, "ci_low": 0.6, "ci_high": 0.8},
            "estimate": {"train_seconds": seconds},
        }

    assert recommendation([row("a", 1, 0.97), row("b", 2, 0.03)], "macro_f1")["sureness"] == "clear"
    assert recommendation([row("a", 1, 0.8), row("b", 2, 0.2)], "macro_f1")["sureness"] == "likely"
    unsure = recommendation([row("b", 2, 0.45, seconds=120), row("a", 1, 0.55), row("c", 3, 0.0, 10)], "macro_f1")
    assert unsure["model"] == "a" and unsure["sureness"] == "uncertain" and "not separable" in unsure["text"]
    assert (
        "(b, est. 2m00s of training)" in unsure["text"]
    )  # the cheapest contender; c never wins, so it is no contender
    assert recommendation([], "macro_f1") is None


def test_a_candidate_that_does_not_fit_is_reported_and_not_trained(write_config, tiny_model_dir: Path, monkeypatch):
    import tunewise.experiments.bakeoff as bakeoff_module

    # a 1 KiB machine, measured once before the first candidate (so no candidate's leftovers shrink the next's share)
    monkeypatch.setattr(bakeoff_module, "available_memory_bytes", lambda device: 1024)
    path = write_config(train={"epochs": 1}, bakeoff={"fractions": [0.5], "probe_steps": 0, "resamples": 100})
    console = Console(record=True, width=240)
    out = bakeoff(load_config(path), path, console, models=[str(tiny_model_dir)])
    row = json.loads((out / "bakeoff.json").read_text())["candidates"][0]
    assert row["rank"] is None and row["failure"].startswith("does not fit:")
    assert "available" in row["failure"] and row["learning_curve"] == [] and row["base"] == {}
    assert not (out / "runs").exists() or not any((out / "runs").iterdir())  # nothing was trained or scored
    assert not (out / "best.yaml").exists()


def test_a_generation_task_keeps_its_metric_scale_and_budgets_shrink_with_the_data(
    tiny_model_dir: Path, tmp_path: Path
):
    rows = [{"prompt": f"Repeat: w{i} w{i + 1}", "completion": f"w{i} w{i + 1}"} for i in range(60)]
    files = {}
    for split, part in (("train", rows[:40]), ("val", rows[40:50]), ("test", rows[50:])):
        files[split] = tmp_path / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(r) + "\n" for r in part))
    config = {
        "model": {"name": str(tiny_model_dir)},
        "data": {"kind": "completion", **{k: str(v) for k, v in files.items()}},
        "train": {"lr": 1e-2, "batch_size": 4, "max_steps": 6, "eval_steps": 50, "max_length": 48},
        "eval": {"max_new_tokens": 8, "batch_size": 8},
        "output": {"dir": str(tmp_path / "runs")},
        "bakeoff": {"fractions": [0.25, 0.5], "probe_steps": 0, "resamples": 100, "few_shot": 2},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = bakeoff(load_config(path), path, Console(record=True, width=200), models=[str(tiny_model_dir)])
    report = json.loads((out / "bakeoff.json").read_text())
    row = report["candidates"][0]
    assert report["primary_metric"] == "sentence_chrf" and row["rank"] == 1, row["failure"]
    assert [arm["steps"] for arm in row["learning_curve"]] == [2, 3]  # train.max_steps 6 x 10/40 and 20/40
    assert set(row["base"]) == {"zero-shot", "few-shot"}
    curve = [arm["metric"] for arm in row["learning_curve"]]
    extrapolated = row["extrapolated"]
    assert 0 <= extrapolated["ci_low"] <= extrapolated["metric"] <= extrapolated["ci_high"] <= 100
    if max(curve) > 1:  # chrF is on a 0-100 scale: never clipped to a share
        assert extrapolated["metric"] != 1.0
