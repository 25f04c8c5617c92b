"""Tracker adapters (track/integrations.py) driven directly: MLflow and TensorBoard for real, in a tmp dir."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tunewise.config import validate_config
from tunewise.errors import ConfigError
from tunewise.track import integrations
from tunewise.track.integrations import Trackers, check_installed, eval_metrics


def config(tmp_path: Path, *report_to: str, **track: Any):
    raw = {"model": {"name": "m"}, "data": {"kind": "classification", "train": str(tmp_path / "t.jsonl")}}
    raw |= {"output": {"dir": str(tmp_path / "runs"), "name": "demo"}}
    return validate_config(raw | {"track": {"report_to": list(report_to), **track}})


def run_dir(tmp_path: Path, name: str = "20240101-000000-demo") -> Path:
    path = tmp_path / "runs" / name
    path.mkdir(parents=True)
    (path / "eval.json").write_text('{"task": "classification"}')
    (path / "config.yaml").write_text("model: {name: m}\n")
    return path


class Recorder:
    """A tracker that records the calls it receives; `fail_on` names a method that raises."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_on = fail_on

    def _record(self, name: str, value: Any) -> None:
        self.calls.append((name, value))
        if name == self.fail_on:
            raise RuntimeError(f"{name} failed")

    def log_params(self, params: dict[str, Any]) -> None:
        self._record("params", params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._record("metrics", (metrics, step))

    def log_artifacts(self, paths: list[Path]) -> None:
        self._record("artifacts", [p.name for p in paths])

    def close(self, status: str) -> None:
        self._record("close", status)


def test_with_no_config_every_call_is_a_no_op(tmp_path: Path):
    trackers = Trackers(None, tmp_path)
    trackers.log_params({"a": 1})
    trackers.log_metrics({"loss": 1.0}, 1)
    trackers.finish("completed", {"x": 1.0}, 2)
    assert trackers.active == []


def test_only_finite_numbers_are_sent_and_finish_sends_files_then_closes(tmp_path: Path):
    trackers, recorder = Trackers(None, run_dir(tmp_path)), Recorder()
    trackers.active = [recorder]
    trackers.log_metrics({"loss": 1, "lr": 2e-5, "flag": True, "note": "x", "bad": float("nan")}, 3)
    trackers.log_metrics({"note": "only text"}, 4)  # nothing numeric: no call at all
    trackers.finish("failed", {"test/acc": 0.5}, 5)
    assert recorder.calls == [
        ("metrics", ({"loss": 1.0, "lr": 2e-5}, 3)),
        ("metrics", ({"test/acc": 0.5}, 5)),
        ("artifacts", ["config.yaml", "eval.json"]),  # the run files that exist, in ARTIFACTS order
        ("close", "failed"),
    ]
    assert trackers.active == []


def test_every_tracker_is_closed_even_when_one_fails(tmp_path: Path):
    trackers, failing, other = Trackers(None, run_dir(tmp_path)), Recorder(fail_on="artifacts"), Recorder()
    trackers.active = [failing, other]
    with pytest.raises(RuntimeError, match="artifacts failed"):
        trackers.finish("completed", {}, 1)
    assert ("close", "completed") in failing.calls and ("close", "completed") in other.calls


def test_a_tracker_failing_to_start_closes_the_ones_already_started(tmp_path: Path, monkeypatch):
    started = Recorder()
    monkeypatch.setitem(integrations.TRACKERS, "mlflow", lambda *args: started)

    def broken(*args: Any) -> None:
        raise ValueError("bad tracker setup")

    monkeypatch.setitem(integrations.TRACKERS, "tensorboard", broken)
    with pytest.raises(ValueError, match="bad tracker setup"):
        Trackers(config(tmp_path, "mlflow", "tensorboard"), tmp_path)
    assert started.calls == [("close", "failed")]


def test_a_missing_library_is_a_config_error_with_the_install_hint(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError, installed or not
    with pytest.raises(ConfigError, match=r"wandb is not installed; pip install 'tunewise\[wandb\]'"):
        check_installed(config(tmp_path, "wandb"))
    with pytest.raises(ConfigError, match="wandb is not installed"):
        Trackers(config(tmp_path, "wandb"), tmp_path)


def test_eval_metrics_flattens_cells_into_tracker_keys():
    results = {
        "fine-tuned · terse": {"macro_f1": 0.5, "per_class": {"pos": {"f1": 0.4}}, "n": 20},
        "base": {"accuracy": 0.25, "confusion_matrix": {"rows_gold_cols_pred": [[1]]}, "note": "x"},
    }
    assert eval_metrics(results, "test") == {
        "test/fine-tuned/terse/macro_f1": 0.5,
        "test/fine-tuned/terse/per_class.pos.f1": 0.4,
        "test/fine-tuned/terse/n": 20.0,
        "test/base/accuracy": 0.25,
    }


def test_the_training_callback_names_train_and_validation_metrics(tmp_path: Path):
    trackers, recorder = Trackers(None, tmp_path), Recorder()
    trackers.active = [recorder]
    trackers.callback().on_log(None, SimpleNamespace(global_step=7), None, logs={"loss": 0.5, "eval_macro_f1": 0.6})
    assert recorder.calls == [("metrics", ({"train/loss": 0.5, "val/macro_f1": 0.6}, 7))]


def test_mlflow_and_tensorboard_receive_params_metrics_files_and_the_outcome(tmp_path: Path):
    mlflow = pytest.importorskip("mlflow", reason="the mlflow extra: pip install 'tunewise[mlflow]'")
    pytest.importorskip("tensorboard", reason="the tensorboard extra: pip install 'tunewise[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = run_dir(tmp_path)
    trackers = Trackers(config(tmp_path, "mlflow", "tensorboard", experiment="exp"), path)
    trackers.log_params({"train.lr": 0.001, "prompt.system": "a | b" * 2000})
    trackers.callback().on_log(None, SimpleNamespace(global_step=2), None, logs={"loss": 1.5, "eval_macro_f1": 0.4})
    trackers.finish("completed", {"test/base/macro f1 (%)": 0.7}, 4)

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    (logged,) = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert logged.info.run_name == path.name and logged.info.status == "FINISHED"
    assert logged.data.params["train.lr"] == "0.001" and len(logged.data.params["prompt.system"]) == 6000
    assert logged.data.metrics["train/loss"] == 1.5 and logged.data.metrics["val/macro_f1"] == 0.4
    assert logged.data.metrics["test/base/macro f1 ___"] == 0.7  # characters MLflow refuses are replaced
    assert {a.path for a in client.list_artifacts(logged.info.run_id)} == {"eval.json", "config.yaml"}
    assert (tmp_path / "runs" / "mlartifacts").is_dir()

    events = EventAccumulator(str(path / "tensorboard"))
    events.Reload()
    assert {"train/loss", "val/macro_f1", "test/base/macro f1 (%)"} <= set(events.Tags()["scalars"])
    assert events.Scalars("train/loss")[0].step == 2 and events.Tags()["tensors"]  # the config table as text

    failed = Trackers(config(tmp_path, "mlflow", experiment="exp"), run_dir(tmp_path, "20240101-000001-demo"))
    failed.finish("failed", {}, 0)
    statuses = {r.info.run_name: r.info.status for r in client.search_runs([logged.info.experiment_id])}
    assert statuses == {path.name: "FINISHED", "20240101-000001-demo": "FAILED"}  # one experiment, two runs
