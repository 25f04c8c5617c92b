"""A run directory's life: opened with run.json and env.json, marked failed or interrupted by an exception inside
`recording_failure`, completed with its headline figures and indexed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from tunewise.config import load_config
from tunewise.pipeline.lifecycle import complete_run, open_run, recording_failure
from tunewise.track.runinfo import read_info


def test_open_then_complete_records_the_headline_figures(write_config, tmp_path: Path) -> None:
    path = write_config()
    config = load_config(path)
    run = open_run(config, path, Console(quiet=True), training=True)

    assert run.run_dir.path.parent == tmp_path / "runs" and not run.resuming
    assert read_info(run.run_dir.path).status == "running"
    env = json.loads((run.run_dir.path / "env.json").read_text())
    assert env["data"]  # the data files' hashes, for resume and comparison
    assert run.callbacks  # the trackers' training callback

    results = {"base": {"macro_f1": 0.4}, "fine-tuned": {"macro_f1": 0.7}}
    complete_run(config, run, results, "macro_f1", 0.31, Console(quiet=True))
    info = read_info(run.run_dir.path)
    assert info.status == "completed" and info.best_metric == 0.7 and info.best_validation == 0.31
    assert info.validation_metric == config.train.metric and info.finished >= info.started
    assert (tmp_path / "runs" / "runs.db").is_file()  # indexed


@pytest.mark.parametrize(("raised", "status"), [(RuntimeError("boom"), "failed"), (KeyboardInterrupt(), "interrupted")])
def test_an_exception_inside_marks_the_run_and_propagates(write_config, raised, status) -> None:
    path = write_config()
    config = load_config(path)
    run = open_run(config, path, Console(quiet=True), training=False)
    with pytest.raises(type(raised)), recording_failure(config, run, Console(quiet=True)):
        raise raised
    info = read_info(run.run_dir.path)
    assert info.status == status and info.error.startswith(type(raised).__name__)
    assert info.validation_metric is None  # not a training run


def test_a_missing_data_file_fails_before_any_run_directory_exists(write_config, tmp_path: Path) -> None:
    path = write_config(data={"val": str(tmp_path / "nowhere.jsonl")})
    with pytest.raises(Exception, match="nowhere.jsonl"):
        open_run(load_config(path), path, Console(quiet=True), training=True)
    assert not (tmp_path / "runs").exists() or not [d for d in (tmp_path / "runs").iterdir() if d.is_dir()]
