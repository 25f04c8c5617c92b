"""run.json (track/runinfo.py): written whole, read back checked field by field, damage named and salvaged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from tunewise.track import runinfo
from tunewise.track.runinfo import RUN_JSON, RunInfo, parse_info, process_alive, read_info, write_info


def test_a_run_json_round_trips(tmp_path: Path):
    info = RunInfo(name="r", status="completed", task="classification", started=100.0, finished=160.5, pid=-1)
    info.best_metric, info.resumes = float("nan"), 2  # a diverged run really ends with NaN
    write_info(tmp_path, info)
    back = read_info(tmp_path)
    assert asdict(back) | {"best_metric": None} == asdict(info) | {"best_metric": None}
    assert back.best_metric != back.best_metric and back.duration == 60.5 and not back.damaged


def test_no_run_json_is_none_and_a_missing_name_is_the_directory(tmp_path: Path):
    assert read_info(tmp_path) is None
    (tmp_path / RUN_JSON).write_text(json.dumps({"status": "failed", "started": 5}))
    info = read_info(tmp_path)
    assert info.name == tmp_path.name and info.pid == -1 and info.started == 5.0 and info.status == "failed"


def test_duration_needs_a_finish_after_the_start():
    assert RunInfo(name="r", started=100.0, finished=None).duration is None
    assert RunInfo(name="r", started=100.0, finished=90.0).duration is None  # a clock set back
    assert RunInfo(name="r", started=100.0, finished=100.0).duration == 0.0


def test_a_running_run_whose_process_is_gone_shows_as_crashed():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid is free
    assert RunInfo(name="r", status="running", pid=dead.pid).shown_status == "crashed"
    assert RunInfo(name="r", status="running", pid=os.getpid()).shown_status == "running"
    assert RunInfo(name="r", status="completed", pid=dead.pid).shown_status == "completed"


@pytest.mark.parametrize("pid", [0, -1, 2**40])
def test_no_process_has_an_impossible_pid(pid: int):
    assert not process_alive(pid)


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        ([1, 2], "run.json holds a JSON list, not an object"),
        (None, "run.json holds a JSON null, not an object"),
        ({"started": 1.0}, "'status' is missing"),
        ({"status": "done", "started": 1.0}, "'status' is 'done', expected one of running, completed"),
        ({"status": "running", "started": -5}, "'started' is -5, expected a time in seconds since 1970"),
        ({"status": "running", "started": 1.0, "finished": "later"}, "expected a time in seconds since 1970 or null"),
        ({"status": "running", "started": 1.0, "best_metric": "high"}, "'best_metric' is 'high', expected a number"),
        ({"status": "running", "started": 1.0, "pid": 2**40}, "expected a process id"),
        ({"status": "running", "started": 1.0, "resumes": -1}, "expected a count (0 or more)"),
        ({"status": "running", "started": 1.0, "name": ""}, "'name' is '', expected a string"),
    ],
)
def test_a_damaged_run_json_says_which_field_and_what_was_expected(raw: object, said: str, tmp_path: Path):
    info = parse_info(raw, tmp_path)
    assert info.damaged and info.status == "damaged" and said in info.error
    assert "tunewise runs rm" in info.error and info.pid == -1


def test_a_damaged_run_json_keeps_what_it_can_for_the_listing(tmp_path: Path):
    run = tmp_path / "20240102-030405-demo"
    run.mkdir()
    raw = {"status": "bogus", "task": "classification", "model": "m", "best_metric": "x", "pid": "p", "resumes": []}
    (run / RUN_JSON).write_text(json.dumps(raw))
    info = read_info(run)
    assert info.damaged and (info.task, info.model) == ("classification", "m")
    assert info.started == time.mktime(time.strptime("20240102-030405", "%Y%m%d-%H%M%S"))  # from the name
    assert "and 2 more" in info.error  # five problems (started is missing too): three named, the rest counted


def test_a_run_json_that_is_not_json_or_not_a_file_is_damaged_not_fatal(tmp_path: Path):
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / RUN_JSON).write_bytes(b"\xff{not json")
    assert read_info(tmp_path / "garbage").damaged
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / RUN_JSON).mkdir()
    assert read_info(tmp_path / "dir").damaged


def test_a_lone_surrogate_in_text_is_replaced_so_it_can_be_printed(tmp_path: Path):
    (tmp_path / RUN_JSON).write_text('{"status": "failed", "started": 1, "error": "bad \\ud800 byte"}')
    info = read_info(tmp_path)
    assert not info.damaged and info.error == "bad ? byte"
    info.error.encode("utf-8")  # would raise on a surrogate


def test_a_huge_run_json_is_refused_as_damage(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(runinfo, "MAX_RUN_JSON", 64)
    (tmp_path / RUN_JSON).write_text(json.dumps({"status": "failed", "started": 1, "error": "x" * 200}))
    assert read_info(tmp_path).damaged
