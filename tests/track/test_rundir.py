"""Run directories (track/rundir.py): safe names, atomic creation, files written whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tunewise.config import validate_config
from tunewise.data.records import Reject, RejectCategory
from tunewise.errors import TunewiseError
from tunewise.track.rundir import MAX_SLUG, STAGING, create_run_dir, run_name
from tunewise.track.runinfo import read_info


def config(tmp_path: Path, **output: object):
    raw = {"model": {"name": "tiny-model"}, "data": {"kind": "classification", "train": str(tmp_path / "t.jsonl")}}
    return validate_config(raw | {"output": {"dir": str(tmp_path / "runs"), **output}})


@pytest.mark.parametrize(
    ("name", "path", "expected"),
    [
        ("my run/../x", "c.yaml", "my-run-..-x"),  # no '/': the name cannot reach outside output.dir
        (None, "sentiment.yaml", "sentiment"),
        (None, "examples/sentiment/config.yaml", "sentiment"),  # config.yaml: named after its folder
        ("$%^", "c.yaml", "run"),  # nothing usable: the fallback
        ("a" * 300, "c.yaml", "a" * MAX_SLUG),
    ],
)
def test_run_name_keeps_only_safe_characters(tmp_path: Path, name: str | None, path: str, expected: str):
    assert run_name(config(tmp_path, name=name), Path(path)) == expected


def test_a_new_run_directory_holds_its_config_and_a_running_run_json(tmp_path: Path):
    run = create_run_dir(config(tmp_path, name="demo"), tmp_path / "c.yaml")
    assert run.path.parent == tmp_path / "runs" and run.path.name.endswith("-demo")
    time.strptime(run.path.name[:15], "%Y%m%d-%H%M%S")  # starts with its time stamp
    assert sorted(p.name for p in run.path.iterdir()) == ["config.yaml", "run.json"]
    assert yaml.safe_load((run.path / "config.yaml").read_text())["model"]["name"] == "tiny-model"
    info = read_info(run.path)
    assert (info.status, info.task, info.model, info.name) == ("running", "classification", "tiny-model", run.path.name)
    assert not [p for p in (tmp_path / "runs").iterdir() if p.name.startswith(STAGING)]


def test_runs_of_one_name_in_the_same_second_get_their_own_directories(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda *args: "20240101-000000")
    paths = [create_run_dir(config(tmp_path, name="same"), tmp_path / "c.yaml").path.name for _ in range(3)]
    assert paths == ["20240101-000000-same", "20240101-000000-same-2", "20240101-000000-same-3"]


def test_an_output_dir_that_is_a_file_is_one_line(tmp_path: Path):
    (tmp_path / "runs").write_text("not a directory")
    with pytest.raises(TunewiseError, match="is not a directory; point output.dir at a directory"):
        create_run_dir(config(tmp_path), tmp_path / "c.yaml")


def test_staging_left_by_a_killed_process_is_removed_and_a_live_ones_kept(tmp_path: Path):
    workspace = tmp_path / "runs"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale, live = workspace / f"{STAGING}{dead.pid}-abcd", workspace / f"{STAGING}{os.getppid()}-abcd"
    stale.mkdir(parents=True)
    live.mkdir()
    create_run_dir(config(tmp_path), tmp_path / "c.yaml")
    assert not stale.exists() and live.exists()


def test_run_files_are_written_whole_and_rejects_appended(tmp_path: Path):
    run = create_run_dir(config(tmp_path), tmp_path / "c.yaml")
    target = run.write_json("eval.json", {"label": "négatif", "n": 3})
    assert json.loads(target.read_text(encoding="utf-8")) == {"label": "négatif", "n": 3}
    assert "négatif" in target.read_text(encoding="utf-8")  # written as text, not \\u escapes
    run.write_jsonl("metrics.jsonl", [{"step": 1}])
    run.write_jsonl("metrics.jsonl", [{"step": 2}], append=True)
    assert (run.path / "metrics.jsonl").read_text().splitlines() == ['{"step": 1}', '{"step": 2}']
    assert run.write_rejects([]) is None and not (run.path / "rejects.jsonl").exists()
    reject = Reject("in.jsonl", 3, "text", "empty text", category=RejectCategory.EMPTY_FIELD)
    run.write_rejects([reject])
    run.write_rejects([reject])
    rows = [json.loads(line) for line in (run.path / "rejects.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["category"] == "format:empty_field" and rows[0]["line"] == 3
