"""The run store: run.json + env.json per run, the SQLite index with migrations, `tunewise runs ...`."""

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunewise.cli import app
from tunewise.errors import TunewiseError
from tunewise.track.store import MIGRATIONS, RunInfo, open_index, read_metrics, sync, write_info

runner = CliRunner()


def _invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_index_migrates_old_schemas_in_order_and_keeps_rows(tmp_path: Path):
    db = tmp_path / "runs.db"
    with sqlite3.connect(db) as conn:  # an index written by the first schema version
        conn.execute(MIGRATIONS[0])
        conn.execute("PRAGMA user_version = 1")
        conn.execute("INSERT INTO runs (name, path, status) VALUES ('old', '/x', 'completed')")
    conn = open_index(tmp_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    row = conn.execute("SELECT name, status, best_validation FROM runs").fetchone()
    assert tuple(row) == ("old", "completed", None)  # a column added by a later migration
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(TunewiseError, match="newer tunewise"):
        open_index(tmp_path)


def test_truncated_last_metrics_line_is_ignored(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo', encoding="utf-8")
    assert [m["step"] for m in read_metrics(path)] == [1, 2]
    assert read_metrics(tmp_path / "absent.jsonl") == []


def test_a_killed_run_shows_as_crashed(tmp_path: Path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "20260101-000000-killed"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    write_info(run, RunInfo(run.name, pid=dead.pid))
    ((_path, info),) = sync(tmp_path)
    assert info.shown_status == "crashed"


def test_runs_are_recorded_listed_shown_compared_and_removed(write_config, tiny_data, tmp_path: Path, monkeypatch):
    import tunewise.cli

    monkeypatch.setattr(tunewise.cli.console, "width", 220)  # a wide terminal: whole tables in the output
    workspace = tmp_path / "runs"
    assert _invoke("run", write_config(train={"max_steps": 4})).exit_code == 0
    assert _invoke("train", write_config(train={"max_steps": 4, "lr": 1e-3, "seed": 7})).exit_code == 0
    first, second = sorted(workspace.glob("2*"))

    info = json.loads((first / "run.json").read_text())
    assert info["status"] == "completed" and info["task"] == "classification"
    assert info["primary_metric"] == "macro_f1" and 0 <= info["best_metric"] <= 1
    assert info["finished"] >= info["started"] and info["best_validation"] is not None
    env = json.loads((first / "env.json").read_text())
    assert env["data"]["train"]["sha256"] == hashlib.sha256(tiny_data["train"].read_bytes()).hexdigest()
    assert env["libraries"]["transformers"] and env["seed"] == 42

    listed = _invoke("runs", "list", "--dir", workspace)
    assert listed.exit_code == 0 and first.name in listed.output and second.name in listed.output
    assert listed.output.count("completed") == 2
    with sqlite3.connect(workspace / "runs.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs WHERE status = 'completed'").fetchone()[0] == 2

    shown = _invoke("runs", "show", first.name, "--dir", workspace)
    assert shown.exit_code == 0 and "95% CI" in shown.output and "sha256" in shown.output

    compared = _invoke("runs", "compare", first.name, second.name, "--dir", workspace)
    assert compared.exit_code == 0, compared.output
    for key in ("train.lr", "train.seed"):
        assert key in compared.output
    assert "train.batch_size" not in compared.output  # equal keys are not a difference

    ambiguous = runner.invoke(app, ["runs", "show", "2", "--dir", str(workspace)])
    assert ambiguous.exit_code == 2 and "matches 2 runs" in ambiguous.output

    assert (first / "report.html").is_file()  # every completed run renders its report
    (first / "report.html").unlink()
    page = _invoke("report", first)
    assert page.exit_code == 0 and (first / "report.html").is_file() and (first / "plots" / "loss.png").is_file()
    both = _invoke("report", first, second, "--out", tmp_path / "cmp" / "comparison.html")
    assert both.exit_code == 0 and "train.lr" in (tmp_path / "cmp" / "comparison.html").read_text()
    bad = runner.invoke(app, ["report", str(tmp_path / "nothing-here")])
    assert bad.exit_code == 2 and "error:" in bad.output

    fragment = runner.invoke(app, ["runs", "rm", second.name[:-3], "--yes", "--dir", str(workspace)])
    assert fragment.exit_code == 2 and second.exists()  # deleting needs the whole name
    outside = tmp_path / "project"
    (outside / "sub").mkdir(parents=True)
    (outside / "config.yaml").write_text("{}\n")
    refused = runner.invoke(app, ["runs", "rm", str(outside), "--yes", "--dir", str(workspace)])
    assert refused.exit_code == 2 and "not inside the workspace" in refused.output and outside.exists()

    removed = _invoke("runs", "rm", second.name, "--yes", "--dir", workspace)
    assert removed.exit_code == 0 and not second.exists()
    with sqlite3.connect(workspace / "runs.db") as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM runs")] == [first.name]


def test_rich_markup_in_configs_and_errors_is_shown_not_parsed(write_config, tmp_path: Path, monkeypatch):
    import tunewise.cli

    monkeypatch.setattr(tunewise.cli.console, "width", 220)
    llama2 = "[INST] {{ text }} [/INST]"
    assert _invoke("train", write_config(train={"max_steps": 2}, prompt={"template": llama2})).exit_code == 0
    assert _invoke("train", write_config(train={"max_steps": 2})).exit_code == 0
    first, second = sorted((tmp_path / "runs").glob("2*"))
    compared = _invoke("runs", "compare", first, second, "--dir", tmp_path / "runs")
    assert compared.exit_code == 0 and "[/INST]" in compared.output


def test_runs_in_sweeps_and_ablations_are_listed_under_their_path(tmp_path: Path):
    nested = tmp_path / "sweeps" / "s" / "trials" / "20260101-000000-trial-0"
    nested.mkdir(parents=True)
    write_info(nested, RunInfo(nested.name, status="pruned", pid=-1))
    ((path, info),) = sync(tmp_path)
    assert path == nested and info.status == "pruned"
    with sqlite3.connect(tmp_path / "runs.db") as conn:
        assert conn.execute("SELECT name FROM runs").fetchone()[0] == "sweeps/s/trials/20260101-000000-trial-0"


def test_a_failed_run_records_why(write_config, tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "positive"}\n' * 20 + '{"text": "odd", "label": "weird"}\n')
    result = runner.invoke(app, ["run", str(write_config(data={"train": str(bad), "val": None, "test": None}))])
    assert result.exit_code == 2
    (run,) = (tmp_path / "runs").glob("2*")
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed" and "too few records" in info["error"] and info["finished"]


def test_a_run_failing_after_trackers_started_closes_them_as_failed(write_config, tmp_path: Path):
    mlflow = pytest.importorskip("mlflow", reason="the mlflow extra: pip install 'tunewise[mlflow]'")
    config = write_config(train={"max_length": 9}, track={"report_to": ["mlflow"], "experiment": "f"})
    result = runner.invoke(app, ["train", str(config)])  # every answer is cut by max_length: fails in training
    assert result.exit_code == 2 and "max_length" in result.output
    (run,) = (tmp_path / "runs").glob("2*")
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed" and "max_length" in info["error"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    (logged,) = client.search_runs([client.get_experiment_by_name("f").experiment_id])
    assert logged.info.status == "FAILED" and logged.data.params["train.max_length"] == "9"
