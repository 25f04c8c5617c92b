"""`tunewise eval` and `tunewise predict` take an exported model as model.name (the merged directory or the
GGUF), with the run's prompt, and score it as the export measured it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from support.cli import invoke
from tunewise.config import ExportConfig
from tunewise.export import verify
from tunewise.export.job import export_run


@pytest.fixture
def exported(run_copy: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setattr(verify, "llama_cpp_installed", lambda: False)  # transformers reads both, like eval
    result = export_run(run_copy, ExportConfig(formats=["merged", "gguf"]), Console(quiet=True))
    report = json.loads((result.out_dir / "export.json").read_text())
    return {"run": run_copy, "artifacts": result.artifacts, "report": report}


def _config_for(exported: dict, model_name: Path, tmp_path: Path) -> Path:
    config = yaml.safe_load((exported["run"] / "config.yaml").read_text())
    config["model"]["name"] = str(model_name)
    config["output"]["dir"] = str(tmp_path / "eval-runs")
    path = tmp_path / f"eval-{model_name.name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.parametrize("artifact", ["merged", "gguf"])
def test_eval_scores_the_exported_model_as_the_export_did(exported: dict, artifact: str, tmp_path: Path):
    config = _config_for(exported, exported["artifacts"][artifact], tmp_path)
    result = invoke("eval", config, "eval.base=true")
    assert result.exit_code == 0, result.output
    (run,) = [d for d in (tmp_path / "eval-runs").iterdir() if d.is_dir()]
    scored = json.loads((run / "eval.json").read_text())["models"]["base"]["macro_f1"]
    check = next(c for c in exported["report"]["checks"] if c["artifact"].startswith(artifact))
    assert scored == pytest.approx(check["metrics"]["macro_f1"])


def test_predict_with_the_merged_model_writes_labels(exported: dict, tmp_path: Path):
    config = _config_for(exported, exported["artifacts"]["merged"], tmp_path)
    rows = tmp_path / "new.jsonl"
    rows.write_text('{"text": "love this great ride"}\n{"text": "awful broken car"}\n', encoding="utf-8")
    result = invoke("predict", config, "--input", rows, "data.labels=[negative,neutral,positive]")
    assert result.exit_code == 0, result.output
    predictions = [json.loads(line) for line in (tmp_path / "new.predictions.jsonl").read_text().splitlines()]
    assert [p["pred"] in {"negative", "neutral", "positive"} for p in predictions] == [True, True]
