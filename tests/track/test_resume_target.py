"""Which run `--resume` / the automatic choice continues (track/resume_target.py), on run directories made here."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from tunewise.config import dump_config, validate_config
from tunewise.errors import TunewiseError
from tunewise.track.env import file_digest
from tunewise.track.resume_target import ResumeRequest, select_run_dir, unfinished_runs, why_not_resumable
from tunewise.track.runinfo import RunInfo, write_info


@pytest.fixture
def setup(tmp_path: Path):
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "a", "label": "x"}\n')
    raw = {"model": {"name": "m"}, "data": {"kind": "classification", "train": str(train)}}
    config = validate_config(raw | {"output": {"dir": str(tmp_path / "runs"), "name": "job"}})
    return config, tmp_path / "job.yaml"


def make_run(config, stamp: str, *, status: str = "interrupted", started: float = 100.0, **fields) -> Path:
    """A run directory as an interrupted `tunewise run` leaves it: config, run.json, env.json with data hashes."""
    path = config.output.dir / f"{stamp}-job"
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(dump_config(config))
    info = {"status": status, "started": started, "pid": -1, "validation_metric": "eval_loss"} | fields
    write_info(path, RunInfo(name=path.name, **info))
    (path / "env.json").write_text(json.dumps({"data": {"train": file_digest(config.data.train)}}))
    return path


def select(config, config_path: Path, mode: str = "auto", run_dir: Path | None = None) -> tuple[Path | None, str]:
    out = io.StringIO()
    chosen = select_run_dir(config, config_path, ResumeRequest(mode, run_dir), Console(file=out, width=300))
    return chosen, out.getvalue()


def test_fresh_never_resumes_and_auto_picks_the_newest_unfinished_run(setup):
    config, path = setup
    make_run(config, "20240101-000000", started=100.0)
    newest = make_run(config, "20240102-000000", started=200.0)
    make_run(config, "20240103-000000", started=300.0, status="completed")
    assert select(config, path, "fresh") == (None, "")
    chosen, said = select(config, path)
    assert chosen == newest and f"resuming the unfinished run {newest}" in said and "--fresh" in said
    assert select(config, path, "resume")[0] == newest


def test_with_nothing_to_continue_auto_starts_anew_and_resume_says_why(setup):
    config, path = setup
    assert select(config, path) == (None, "")
    with pytest.raises(TunewiseError, match="--resume: no unfinished run 'job' with this config and data under"):
        select(config, path, "resume")


def test_unfinished_runs_are_this_names_training_runs_newest_first(setup):
    config, _ = setup
    old, new = make_run(config, "20240101-000000", started=1.0), make_run(config, "20240101-000001", started=2.0)
    suffixed = config.output.dir / "20240101-000000-job-2"
    suffixed.mkdir()
    write_info(suffixed, RunInfo(name=suffixed.name, status="failed", started=3.0, pid=-1, validation_metric="f1"))
    evaluation_only = make_run(config, "20240101-000002", started=4.0, validation_metric=None)
    other = config.output.dir / "20240101-000000-jobless"
    other.mkdir()
    write_info(other, RunInfo(name=other.name, status="failed", started=5.0, pid=-1, validation_metric="f1"))
    assert unfinished_runs(config.output.dir, "job") == [suffixed, new, old]
    assert evaluation_only not in unfinished_runs(config.output.dir, "job")
    assert unfinished_runs(config.output.dir / "missing", "job") == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("completed", "this run completed; start a new one with --fresh"),
        ("config", "its config differs in train.lr; use --fresh"),
        ("data", "the train data changed since it started (SHA-256); use --fresh"),
        ("damaged", "run.json is damaged"),
        ("not a run", "not a tunewise run directory (no run.json or config.yaml)"),
    ],
)
def test_an_explicit_resume_of_a_run_that_cannot_continue_says_why(setup, change: str, reason: str):
    config, path = setup
    run = make_run(config, "20240101-000000", status="completed" if change == "completed" else "interrupted")
    if change == "config":
        changed = config.model_copy(update={"train": config.train.model_copy(update={"lr": 0.5})})
        (run / "config.yaml").write_text(dump_config(changed))
    elif change == "data":
        config.data.train.write_text('{"text": "b", "label": "y"}\n')
    elif change == "damaged":
        (run / "run.json").write_text("[]")
    elif change == "not a run":
        run.rename(config.output.dir / "elsewhere")
        run = config.output.dir / "empty"
        run.mkdir()
    assert reason in why_not_resumable(run, config)
    with pytest.raises(TunewiseError, match=f"--resume {run}: "):
        select(config, path, "resume", run)
    assert select(config, path)[0] is None  # the automatic choice passes it over


def test_a_run_still_written_by_a_live_process_is_not_taken_over(setup):
    config, path = setup
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = make_run(config, "20240101-000000", status="running", pid=sleeper.pid)
        assert why_not_resumable(run, config) == f"this run is still running (pid {sleeper.pid})"
        assert select(config, path)[0] is None
    finally:
        sleeper.kill()
        sleeper.wait()
    assert select(config, path)[0] == run  # its process is gone: the run was killed and can continue


def test_the_current_process_may_continue_its_own_run(setup):
    config, path = setup
    run = make_run(config, "20240101-000000", status="running", pid=os.getpid())
    assert why_not_resumable(run, config) is None and select(config, path, "resume", run)[0] == run
