"""track.report_to: MLflow and TensorBoard for real (local stores), and the hint for a missing extra."""

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunewise.cli import app

runner = CliRunner()


def test_mlflow_and_tensorboard_receive_params_metrics_and_artifacts(write_config, tmp_path: Path):
    mlflow = pytest.importorskip("mlflow", reason="the mlflow extra: pip install 'tunewise[mlflow]'")
    pytest.importorskip("tensorboard", reason="the tensorboard extra: pip install 'tunewise[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = write_config(train={"max_steps": 4}, track={"report_to": ["mlflow", "tensorboard"], "experiment": "t"})
    result = runner.invoke(app, ["run", str(config)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").glob("2*")
    evaluation = json.loads((run / "eval.json").read_text())

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    (logged,) = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert logged.info.run_name == run.name and logged.info.status == "FINISHED"
    assert logged.data.params["train.max_steps"] == "4" and logged.data.params["lora.r"] == "16"
    assert logged.data.metrics["test/fine-tuned/macro_f1"] == pytest.approx(
        evaluation["models"]["fine-tuned"]["macro_f1"]
    )
    losses = client.get_metric_history(logged.info.run_id, "train/loss")
    assert len(losses) >= 2 and all(m.step >= 0 for m in losses)
    assert client.get_metric_history(logged.info.run_id, "val/loss")
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert {"eval.json", "config.yaml", "metrics.jsonl", "env.json", "report.html"} <= artifacts
    assert (tmp_path / "runs" / "mlartifacts").is_dir() and not Path("mlruns").exists()  # nothing in the cwd

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "val/loss", "test/base/macro_f1", "test/fine-tuned/macro_f1"} <= scalars
    assert events.Scalars("test/base/macro_f1")[0].value == pytest.approx(evaluation["models"]["base"]["macro_f1"])


def test_a_missing_tracker_library_gives_a_one_line_install_hint(write_config, monkeypatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError, installed or not
    result = runner.invoke(app, ["run", str(write_config(track={"report_to": ["wandb"]}))])
    assert result.exit_code == 2
    assert "wandb is not installed" in result.output and "pip install 'tunewise[wandb]'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()  # nothing started
