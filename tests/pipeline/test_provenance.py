"""What a run records and reads: the config as written, the user's eval files as given (with their hashes),
curated files apart, curation's text normalization applied to evaluation inputs, and calibrated rows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from support.tiny import make_classification_rows, write_jsonl
from tunewise.cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MOJIBAKE = "cafÃ© "  # "café" decoded as latin-1: what normalize's mojibake repair fixes


@pytest.fixture(scope="module")
def curated_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """One run that curates (normalize + exact_dedup) raw files with renamed columns, evaluated on the user's
    own test file whose texts carry mojibake and trailing spaces, calibrated on validation."""
    tmp = tmp_path_factory.mktemp("provenance")
    rows = [{"tweet": r["text"], "sentiment": r["label"]} for r in make_classification_rows(150, seed=1)]
    test_rows = [{**r, "tweet": MOJIBAKE + r["tweet"] + "  "} if i % 4 == 0 else r for i, r in enumerate(rows[120:])]
    files = {
        "train": write_jsonl(tmp / "raw" / "train.jsonl", rows[:96]),
        "val": write_jsonl(tmp / "raw" / "val.jsonl", rows[96:120]),
        "test": write_jsonl(tmp / "raw" / "test.jsonl", test_rows),
    }
    config = {
        "model": {"name": str(tiny_model_dir)},
        "data": {
            "kind": "classification",
            **{k: str(v) for k, v in files.items()},
            "fields": {"text": "tweet", "label": "sentiment"},
        },
        "curate": {"output": str(tmp / "curated"), "steps": [{"step": "normalize"}, {"step": "exact_dedup"}]},
        "train": {"lr": 2e-2, "batch_size": 8, "epochs": 1, "eval_steps": 6, "max_length": 64, "patience": 0},
        "eval": {"batch_size": 8, "calibrate": True},
        "output": {"dir": str(tmp / "runs"), "name": "provenance"},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(path), "train.seed=7"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run,) = [p for p in (tmp / "runs").iterdir() if p.is_dir()]
    return run, files


def test_the_run_keeps_the_config_as_written_with_overrides_and_curation(curated_run) -> None:
    run, files = curated_run
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["train"] == str(files["train"])  # the raw file, not the curated copy
    assert saved["data"]["fields"] == {"text": "tweet", "label": "sentiment"}
    assert [s["step"] for s in saved["curate"]["steps"]] == ["normalize", "exact_dedup"]
    assert saved["train"]["seed"] == 7  # the command-line override, resolved


def test_user_files_and_curated_files_are_recorded_with_their_hashes(curated_run) -> None:
    run, files = curated_run
    data = json.loads((run / "env.json").read_text())["data"]
    for split, path in files.items():
        assert data[split]["path"] == str(path)
        assert data[split]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    curated = Path(data["curated train"]["path"])
    assert curated.name == "train.jsonl" and curated.parent.name == "curated"
    assert data["curated train"]["sha256"] == hashlib.sha256(curated.read_bytes()).hexdigest()


def test_the_users_test_file_is_evaluated_as_given_and_normalized_like_training_text(curated_run) -> None:
    run, files = curated_run
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    base = [r for r in rows if r["model"] == "base"]
    assert {r["source"].rsplit(":", 1)[0] for r in base} == {str(files["test"])}  # the user's file, by line
    evaluation = json.loads((run / "eval.json").read_text())
    applied = evaluation["input_normalization"]
    assert applied["fix_mojibake"] and applied["changed"] == {"val": 0, "test": 8}


def test_calibrated_rows_stand_beside_the_uncalibrated_ones(curated_run) -> None:
    run, _ = curated_run
    evaluation = json.loads((run / "eval.json").read_text())
    assert {"base", "fine-tuned", "base · calibrated", "fine-tuned · calibrated"} <= set(evaluation["models"])
    fitted = evaluation["calibration"]["fine-tuned"]
    assert fitted["fitted_on"] == 24 and fitted["val_macro_f1_after"] >= fitted["val_macro_f1_before"]
    matrix = json.loads((run / "eval_matrix.json").read_text())
    assert matrix["cells"]["fine-tuned · calibrated"]["vs_reference"] is not None  # with a CI against base
