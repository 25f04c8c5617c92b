"""The run store against damaged and hostile run directories, a corrupt or newer index, and a full disk.

One bad run shows as `damaged` (with the reason in `runs show`) and never breaks listing, showing, comparing or
starting the others; a full disk outside checkpoints is one line naming the path, "no space left on device", the
free space and what to do; the index is a cache: corrupt is rebuilt, unwritable is a warning.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tunewise.cli import app
from tunewise.config import load_config
from tunewise.core.safeio import append_text, describe_failure, replace_text, write_failure
from tunewise.errors import TunewiseError
from tunewise.track import index as index_module
from tunewise.track import rundir as rundir_module
from tunewise.track.resume_target import ResumeRequest, select_run_dir, unfinished_runs
from tunewise.track.rundir import create_run_dir
from tunewise.track.store import RunInfo, index_run, read_info, read_metrics, remove_run, sync, write_info
from tunewise.train.callbacks import MetricsLogger

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    import tunewise.cli

    monkeypatch.setattr(tunewise.cli.console, "width", 250)  # whole table rows in the output


def _cli(*args: object, code: int = 0) -> str:
    """A CLI command's output, asserting its exit code and that it ended without a traceback."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result.output


def _within(seconds: float, action: Callable[[], Any]) -> Any:
    """Runs `action`, failing (not hanging the suite) if it blocks, e.g. on a FIFO."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = action()
        except BaseException as exc:  # re-raised in the test's thread
            box["error"] = exc

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"blocked for more than {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _run(workspace: Path, name: str, **fields: Any) -> Path:
    path = workspace / name
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("train:\n  lr: 0.1\n")
    write_info(path, RunInfo(name, status="completed", pid=-1, started=1.7e9, finished=1.7e9 + 65, **fields))
    return path


def _config(tmp_path: Path, name: str = "same", workspace: Path | None = None) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "a", "label": "x"}\n')
    config = {
        "model": {"name": "tiny"},
        "data": {"kind": "classification", "train": str(data)},
        "output": {"dir": str(workspace or tmp_path / "runs"), "name": name},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# --- run.json of the wrong shape ---------------------------------------------------------------------------------

GOOD = {"name": "x", "status": "failed", "started": 1.7e9, "validation_metric": "eval_loss", "pid": -1}
BAD_RUN_JSON: dict[str, bytes] = {
    "a list": b"[1, 2, 3]",
    "a string started": b'{"started": "yesterday"}',
    "a string pid": json.dumps({**GOOD, "pid": "abc"}).encode(),
    "a string best_metric": json.dumps({**GOOD, "best_metric": "x"}).encode(),
    "a nested status": json.dumps({**GOOD, "status": {"nested": ["x"]}}).encode(),
    "a nested task": json.dumps({**GOOD, "task": {"a": 1}}).encode(),
    "markup as status": json.dumps({**GOOD, "status": "[bold]x[/]"}).encode(),
    "an infinite start": json.dumps({**GOOD, "started": 1e400}).replace("Infinity", "1e400").encode(),
    "a 400-digit start": json.dumps(GOOD).replace("1700000000.0", "1" + "0" * 400).encode(),
    "a 400-digit pid": json.dumps(GOOD).replace('"pid": -1', '"pid": ' + "9" * 400).encode(),
    "a NaN start": json.dumps(GOOD).replace("1700000000.0", "NaN").encode(),
    "a bool pid": json.dumps({**GOOD, "pid": True}).encode(),
    "negative resumes": json.dumps({**GOOD, "resumes": -1}).encode(),
    "null everywhere": json.dumps(dict.fromkeys(RunInfo.__dataclass_fields__)).encode(),
    "null": b"null",
    "empty": b"",
    "not JSON": b'{"status": ',
    "not UTF-8": b'{"status": "\xff\xfe"}',
    "nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
    "2 MB": b'{"error": "' + b"x" * (2 << 20) + b'"}',
}


def _plant(run: Path, kind: str) -> None:
    target = run / "run.json"
    if kind == "a directory":
        target.mkdir()
    elif kind == "a FIFO":
        os.mkfifo(target)
    elif kind == "a link to /dev/zero":
        target.symlink_to("/dev/zero")
    else:
        target.write_bytes(BAD_RUN_JSON[kind])


@pytest.mark.parametrize("kind", [*BAD_RUN_JSON, "a directory", "a FIFO", "a link to /dev/zero"])
def test_a_damaged_run_json_shows_as_damaged_and_the_other_runs_still_list(tmp_path: Path, kind: str) -> None:
    workspace = tmp_path / "runs"
    good = _run(workspace, "20260101-000000-good", task="classification")
    bad = workspace / "20260102-000000-same"
    bad.mkdir()
    (bad / "config.yaml").write_text("{}\n")
    _plant(bad, kind)

    info = _within(10, lambda: read_info(bad))
    assert info.status == "damaged" and info.shown_status == "damaged", info
    assert info.error.startswith("run.json is damaged: ") and "tunewise runs rm" in info.error
    runs = dict(_within(10, lambda: sync(workspace)))
    assert runs[good].status == "completed" and runs[bad].status == "damaged"

    listed = _cli("runs", "list", "--dir", workspace)
    assert "good" in listed and "damaged" in listed and "completed" in listed
    shown = _cli("runs", "show", "same", "--dir", workspace)
    assert "status damaged" in shown and "run.json is damaged" in shown
    _cli("runs", "compare", "same", "good", "--dir", workspace)
    # `tunewise train` of that run name: the damaged run is passed over, an explicit --resume says why
    config = load_config(_config(tmp_path))
    assert unfinished_runs(workspace, "same") == []
    assert select_run_dir(config, tmp_path / "config.yaml", ResumeRequest("auto"), _console()) is None
    with pytest.raises(TunewiseError, match="run.json is damaged"):
        select_run_dir(config, tmp_path / "config.yaml", ResumeRequest("resume", bad), _console())
    _cli("runs", "rm", bad.name, "--yes", "--dir", workspace)  # a damaged run can be removed
    assert not bad.exists() and good.exists()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"[1, 2, 3]", "run.json holds a JSON list, not an object"),
        (b'{"started": "yesterday"}', "'started' is 'yesterday', expected a time in seconds since 1970"),
        (json.dumps({**GOOD, "pid": "abc"}).encode(), "'pid' is 'abc', expected a process id"),
        (json.dumps({**GOOD, "best_metric": "x"}).encode(), "'best_metric' is 'x', expected a number or null"),
        (b'{"status": ', "run.json is not valid JSON (line 1, column 12)"),
        (b"\xff", "run.json is not UTF-8 text"),
    ],
)
def test_the_reason_names_the_field_and_what_was_expected(tmp_path: Path, content: bytes, reason: str) -> None:
    (tmp_path / "run.json").write_bytes(content)
    assert reason in read_info(tmp_path).error


def test_valid_oddities_are_kept_not_called_damage(tmp_path: Path) -> None:
    raw = {**GOOD, "task": "[/]\x1b[2J\ud800", "future_field": {"x": 1}, "best_metric": float("nan")}
    (tmp_path / "20260101-000000-odd").mkdir()
    (tmp_path / "20260101-000000-odd" / "run.json").write_text(json.dumps(raw))
    info = read_info(tmp_path / "20260101-000000-odd")
    assert info.status == "failed" and info.task == "[/]\x1b[2J?" and info.pid == -1  # unknown keys: a newer tunewise
    listed = _cli("runs", "list", "--dir", tmp_path)
    assert "\x1b" not in listed and "[/]" in listed  # markup shown, the escape sequence defused
    (tmp_path / "20260101-000000-odd" / "run.json").write_text(json.dumps({"status": "completed", "started": 1}))
    assert read_info(tmp_path / "20260101-000000-odd").pid == -1  # no pid: never taken for this live process


# --- the other files of a run -----------------------------------------------------------------------------------


def test_damaged_metrics_config_env_and_eval_files_never_break_show_or_compare(tmp_path: Path) -> None:
    first, second = _run(tmp_path, "20260101-000000-a"), _run(tmp_path, "20260101-000000-b")
    (first / "metrics.jsonl").write_bytes(
        b'{"step": 1, "loss": 2.0}\n\x00\xff garbage\n[1]\n{"step": "abc"}\n{"step": Infinity}\n'
        + b'{"step": 2, "event": "train_end"}\n{"step": 3, "lo'
        + b"x" * (3 << 20)  # an overlong line without a newline
        + b'\n{"step": 4, "loss": NaN}\n'
    )
    assert [row["step"] for row in read_metrics(first / "metrics.jsonl")] == [1, 2, 4]
    (first / "config.yaml").write_text("when: 2024-01-01\ndeep: " + "{a: " * 200 + "1" + "}" * 200 + "\n")
    (second / "config.yaml").write_text("[unclosed\n")
    (first / "env.json").write_text(json.dumps({"libraries": [1], "data": {"train": "x", "val": {"sha256": 5}}}))
    (second / "env.json").write_text(json.dumps({"data": [1]}))
    (first / "eval.json").write_text(json.dumps({"primary_metric": ["f1"], "models": {"base": 3, "ft": {"f1": 1}}}))
    (second / "eval.json").write_text(
        json.dumps({"primary_metric": "f1", "task": "t", "models": {"b": {"f1": "x"}}, "differences": {"f1": 1}})
    )
    for run in (first, second):
        assert "status completed" in _cli("runs", "show", run, "--dir", tmp_path)
    compared = _cli("runs", "compare", first, second, "--dir", tmp_path)
    assert "when" in compared and "2024-01-01" in compared
    os.mkfifo(second / "metrics.jsonl")
    (second / "config.yaml").unlink()
    os.mkfifo(second / "config.yaml")
    assert _within(10, lambda: read_metrics(second / "metrics.jsonl")) == []
    _within(30, lambda: _cli("runs", "compare", first, second, "--dir", tmp_path))


def test_the_html_report_of_a_damaged_run_says_so(tmp_path: Path) -> None:
    run = tmp_path / "20260101-000000-a"
    run.mkdir()
    (run / "run.json").write_text("[1, 2]")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.0, "eval_loss": "x"}\n')
    (run / "eval.json").write_text(json.dumps({"primary_metric": ["f1"], "models": [1], "differences": 2}))
    (run / "eval_matrix.json").write_text(json.dumps({"reference": 1, "cells": [1]}))
    (run / "config.yaml").write_text("data: [1]\noutput: 3\n")
    _cli("report", run)
    assert "run.json is damaged: run.json holds a JSON list" in (run / "report.html").read_text()


def test_a_run_without_run_json_and_a_damaged_eval_json_is_listed(tmp_path: Path) -> None:
    old = tmp_path / "20250101-000000-old"
    old.mkdir()
    (old / "config.yaml").write_text("{}\n")
    (old / "eval.json").write_text(json.dumps({"primary_metric": ["x"], "task": 3, "models": [1, 2]}))
    ((_path, info),) = sync(tmp_path)
    assert info.status == "completed" and info.task is None and info.best_metric is None


# --- the index --------------------------------------------------------------------------------------------------


def _indexed(workspace: Path) -> list[str]:
    with sqlite3.connect(workspace / "runs.db") as conn:
        return sorted(row[0] for row in conn.execute("SELECT status FROM runs"))


@pytest.mark.parametrize("damage", ["garbage", "journal", "no table", "half"])
def test_a_corrupt_index_is_rebuilt_from_the_run_directories(tmp_path: Path, damage: str) -> None:
    _run(tmp_path, "20260101-000000-a")
    _run(tmp_path, "20260101-000000-b")
    db = tmp_path / "runs.db"
    if damage == "no table":  # the version says migrated, the table is gone
        sync(tmp_path)
        with sqlite3.connect(db) as conn:
            conn.execute("DROP TABLE runs")
    elif damage == "half":
        sync(tmp_path)
        db.write_bytes(db.read_bytes()[:1500])
    else:
        db.write_bytes(os.urandom(8192))
        if damage == "journal":
            (tmp_path / "runs.db-journal").write_bytes(os.urandom(4096))
    listed = _cli("runs", "list", "--dir", tmp_path)
    assert "warning: the run index" in listed and "was corrupt" in listed and "runs.db.corrupt" in listed
    assert _indexed(tmp_path) == ["completed", "completed"] and (tmp_path / "runs.db.corrupt").is_file()
    assert "warning" not in _cli("runs", "list", "--dir", tmp_path)  # rebuilt: quiet again


def test_an_index_of_a_newer_tunewise_is_left_alone_and_the_runs_still_list(tmp_path: Path) -> None:
    _run(tmp_path, "20260101-000000-a")
    with sqlite3.connect(tmp_path / "runs.db") as conn:
        conn.execute("PRAGMA user_version = 99")
    listed = _cli("runs", "list", "--dir", tmp_path)
    assert "20260101-000000-a" in listed and "newer tunewise (schema 99" in listed and "upgrade tunewise" in listed
    with sqlite3.connect(tmp_path / "runs.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 99
    assert index_run(tmp_path, tmp_path / "20260101-000000-a", warn=lambda m: None) is False


@pytest.mark.parametrize("kind", ["a directory", "a FIFO"])
def test_an_index_that_is_not_a_file_is_a_warning_not_a_hang(tmp_path: Path, kind: str) -> None:
    _run(tmp_path, "20260101-000000-a")
    (tmp_path / "runs.db").mkdir() if kind == "a directory" else os.mkfifo(tmp_path / "runs.db")
    listed = _within(60, lambda: _cli("runs", "list", "--dir", tmp_path))
    assert "20260101-000000-a" in listed and "warning: " in listed


def test_a_missing_workspace_lists_nothing_and_a_file_is_one_line(tmp_path: Path) -> None:
    assert "(0)" in _cli("runs", "list", "--dir", tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()
    (tmp_path / "file").write_text("x")
    assert "is not a directory" in _cli("runs", "list", "--dir", tmp_path / "file", code=2)


# --- a full disk ------------------------------------------------------------------------------------------------


def _console():
    import io

    from rich.console import Console

    return Console(file=io.StringIO())


def _full_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """The index's disk is full: SQLite's own SQLITE_FULL, from a page limit on the connection."""
    connect = index_module.connect

    def capped(db: Path) -> sqlite3.Connection:
        conn = connect(db)
        conn.execute("PRAGMA max_page_count = 1")
        return conn

    monkeypatch.setattr(index_module, "connect", capped)


def test_a_full_disk_under_the_index_still_lists_the_runs_with_a_warning(tmp_path: Path, monkeypatch) -> None:
    _run(tmp_path, "20260101-000000-a")
    _full_index(monkeypatch)  # no runs.db yet: the first CREATE TABLE fails
    listed = _cli("runs", "list", "--dir", tmp_path)
    assert "20260101-000000-a" in listed and "cannot rollback" not in listed
    assert f"the run index {tmp_path / 'runs.db'} was not updated: no space left on device" in listed
    assert "database or disk is full" in listed and "free there" in listed and "`tunewise runs list`" in listed
    warnings: list[str] = []
    assert index_run(tmp_path, tmp_path / "20260101-000000-a", warn=warnings.append) is False
    assert "no space left on device" in warnings[0]


def _no_space(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_when_a_run_starts_is_one_line_and_leaves_no_directory(tmp_path: Path, monkeypatch) -> None:
    config_path = _config(tmp_path)
    monkeypatch.setattr(rundir_module, "_write_durably", _no_space)
    with pytest.raises(TunewiseError) as caught:
        create_run_dir(load_config(config_path), config_path)
    message = str(caught.value)
    assert message.startswith(f"cannot write {tmp_path / 'runs'}/2") and "-same: no space left on device" in message
    assert "free there; free some space (or point output.dir at another disk)" in message
    assert list((tmp_path / "runs").iterdir()) == []  # nothing listed as `unknown`, no staging left
    output = _cli("train", config_path, code=2)  # through the CLI: the same line, no traceback
    assert "error: cannot write" in output and "no space left on device" in output
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_full_disk_while_logging_metrics_or_writing_run_json_is_one_line(tmp_path: Path, monkeypatch) -> None:
    logger = MetricsLogger(tmp_path / "metrics.jsonl")
    logger.write({"step": 1})
    monkeypatch.setattr(Path, "open", _no_space)
    with pytest.raises(TunewiseError, match="metrics.jsonl: no space left on device .* continues from the newest"):
        logger.write({"step": 2})
    monkeypatch.undo()
    monkeypatch.setattr(os, "fsync", _no_space)
    with pytest.raises(TunewiseError, match=r"cannot write .*run\.json: no space left on device \(errno 28\)"):
        write_info(tmp_path, RunInfo("x"))
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temporary file left


def test_a_full_disk_while_training_stops_the_run_with_one_line(write_config, tmp_path: Path, monkeypatch) -> None:
    import tunewise.train.callbacks as callbacks

    calls = []

    def append(path: Path, text: str, hint: str | None = None) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise write_failure(OSError(errno.ENOSPC, "No space left on device"), path, hint)
        append_text(path, text, hint)

    monkeypatch.setattr(callbacks, "append_text", append)
    output = _cli("train", write_config(train={"max_steps": 8}), code=2)
    errors = [line for line in output.splitlines() if "error:" in line]
    assert len(errors) == 1 and "metrics.jsonl: no space left on device (errno 28)" in errors[0], output
    assert "run the same command again: it continues from the newest checkpoint" in errors[0]
    (run,) = (tmp_path / "runs").glob("2*")
    assert read_info(run).status == "failed" and "no space left on device" in read_info(run).error


def test_other_write_failures_and_errors_without_an_errno_are_named(tmp_path: Path, monkeypatch) -> None:
    quota = write_failure(OSError(errno.EDQUOT, "Disk quota exceeded"), tmp_path / "f")
    assert "disk quota exceeded (errno 122)" in str(quota) and "within your quota" in str(quota)
    denied = write_failure(PermissionError(errno.EACCES, "Permission denied"), tmp_path / "f")
    assert "permission denied" in str(denied) and "permissions" in str(denied)
    torch_style = RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    assert "free there" in describe_failure(torch_style, tmp_path) and "no space" not in describe_failure(
        torch_style, tmp_path
    )
    monkeypatch.setattr("tunewise.core.safeio.free_space", lambda where: 0)  # the disk is full: say so
    assert describe_failure(torch_style, tmp_path).startswith("no space left on device (errno 28) (RuntimeError")
    from tunewise.train.checkpoint import describe_failure as checkpoint_reason

    assert "no space left on device" in checkpoint_reason(torch_style, tmp_path) and "0 bytes free" in (
        checkpoint_reason(torch_style, tmp_path)
    )


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A real 256 KB file system (tmpfs), where root may mount one; skipped elsewhere."""
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    except OSError:
        pytest.skip("no mount command")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave: int = 0) -> None:
    """Fill the disk to the last block, then free `leave` bytes again."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            try:
                os.write(fd, b"\0" * 4096)
            except OSError:
                break
    finally:
        os.close(fd)
    if leave:
        os.truncate(disk / "filler", (disk / "filler").stat().st_size - leave)


def test_a_really_full_disk(tiny_disk: Path, tmp_path: Path) -> None:
    workspace = tiny_disk / "runs"
    run = _run(workspace, "20260101-000000-a")
    logger = MetricsLogger(run / "metrics.jsonl")
    logger.write({"step": 1})
    before = (run / "metrics.jsonl").read_bytes()
    _fill(tiny_disk, leave=4096)
    with pytest.raises(TunewiseError, match="no space left on device"):
        logger.write({"step": 2, "text": "x" * 100_000})  # a part fits, the rest does not: the part is cut off
    assert (run / "metrics.jsonl").read_bytes() == before
    _fill(tiny_disk)
    listed = _cli("runs", "list", "--dir", workspace)  # real SQLITE_FULL: still listed
    assert "20260101-000000-a" in listed and "no space left on device" in listed
    with pytest.raises(TunewiseError, match=r"run\.json: no space left on device .* 0 bytes free there"):
        write_info(run, RunInfo("a", status="failed"))
    assert read_info(run).status == "completed"  # the previous run.json is intact
    config_path = _config(tmp_path, workspace=workspace)
    with pytest.raises(TunewiseError, match="no space left on device"):
        create_run_dir(load_config(config_path), config_path)
    assert sorted(p.name for p in workspace.iterdir() if p.name != "runs.db") == ["20260101-000000-a"]


# --- hostile layouts and load ------------------------------------------------------------------------------------


def test_symlinks_out_of_the_workspace_or_in_a_loop_are_not_followed(tmp_path: Path) -> None:
    workspace, outside = tmp_path / "runs", tmp_path / "elsewhere"
    real = _run(workspace, "20260101-000000-a")
    _run(outside, "20260101-000000-foreign")
    (workspace / "link-out").symlink_to(outside / "20260101-000000-foreign")
    (workspace / "root").symlink_to("/")  # never walked
    (workspace / "loop").symlink_to(workspace)
    (workspace / "alias").symlink_to(real)
    (workspace / "dangling").symlink_to(tmp_path / "gone")
    runs = _within(30, lambda: sync(workspace))
    assert [path.name for path, _ in runs] in (["20260101-000000-a"], ["alias"])
    assert "foreign" not in _cli("runs", "list", "--dir", workspace)
    refused = _cli("runs", "rm", workspace / "link-out", "--yes", "--dir", workspace, code=2)
    assert "not inside the workspace" in refused and (outside / "20260101-000000-foreign").is_dir()


@pytest.mark.parametrize("name", ["../../escape", "..", "a/b\\c", "x" * 300, "\x1b[2J", "-"])
def test_a_run_name_never_leaves_the_workspace_or_overflows_a_file_name(tmp_path: Path, name: str) -> None:
    config_path = _config(tmp_path, name)
    run = create_run_dir(load_config(config_path), config_path).path
    assert run.parent == tmp_path / "runs" and len(run.name) < 120 and "/" not in run.name
    assert read_info(run).status == "running" and (run / "config.yaml").is_file()


def test_weird_references_to_a_run_are_one_line(tmp_path: Path) -> None:
    _run(tmp_path, "20260101-000000-a")
    for ref in ("a\x00b", "y" * 5000, "../.."):
        assert "no run" in _cli("runs", "show", ref, "--dir", tmp_path, code=2)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(TunewiseError, match="nothing removed"):
        remove_run(tmp_path, loop)


def test_runs_started_at_once_get_their_own_directories(tmp_path: Path) -> None:
    config_path = _config(tmp_path)
    config = load_config(config_path)
    made: list[Path] = []
    threads = [
        threading.Thread(target=lambda: made.append(create_run_dir(config, config_path).path)) for _ in range(12)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 12 and all(read_info(p).status == "running" for p in made)
    assert not list((tmp_path / "runs").glob(".tmp-*"))
    stale = tmp_path / "runs" / ".tmp-run-999999999-x"  # a process killed while creating one
    stale.mkdir()
    create_run_dir(config, config_path)
    assert not stale.exists()


def test_concurrent_writers_never_show_a_half_written_run_json(tmp_path: Path) -> None:
    stop = time.monotonic() + 2
    seen: list[str] = []

    def write(n: int) -> None:
        while time.monotonic() < stop:
            write_info(tmp_path, RunInfo("x", status="running", error="e" * 5000 * n, pid=-1))

    writers = [threading.Thread(target=write, args=(n,)) for n in (1, 2)]
    for writer in writers:
        writer.start()
    while time.monotonic() < stop:
        info = read_info(tmp_path)
        seen.append(info.status if info else "none")
    for writer in writers:
        writer.join()
    assert set(seen) <= {"running", "none"} and "running" in seen


def test_concurrent_listing_and_indexing_processes_agree(tmp_path: Path) -> None:
    for n in range(20):
        _run(tmp_path, f"20260101-0000{n:02d}-r")
    script = (
        "import sys; from pathlib import Path; from tunewise.track.store import sync, index_run\n"
        "w = Path(sys.argv[1]); problems = []\n"
        "for i in range(8):\n"
        "    sync(w, warn=problems.append); index_run(w, w / '20260101-000003-r', warn=problems.append)\n"
        "assert not problems, problems\n"
    )
    import sys

    workers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)]) for _ in range(4)]
    assert [w.wait(timeout=120) for w in workers] == [0, 0, 0, 0]
    assert len(_indexed(tmp_path)) == 20


def test_thousands_of_runs_list_in_seconds(tmp_path: Path) -> None:
    for n in range(3000):
        run = tmp_path / f"20260101-{n:06d}-r"
        run.mkdir()
        (run / "run.json").write_text(json.dumps({**GOOD, "status": "completed", "started": 1.7e9 + n}))
    (tmp_path / "20260101-000007-r" / "run.json").write_text("[]")
    start = time.monotonic()
    runs = sync(tmp_path)
    assert len(runs) == 3000 and len(_indexed(tmp_path)) == 3000
    assert next(path.name for path, info in runs if not info.damaged) == "20260101-002999-r"  # newest first
    assert time.monotonic() - start < 30
    assert _indexed(tmp_path).count("damaged") == 1


def test_run_files_keep_the_usual_permissions_and_leave_no_temporary_files(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        replace_text(tmp_path / "a.json", "{}")
        append_text(tmp_path / "b.jsonl", "{}\n")
        config_path = _config(tmp_path / "c")
        run = create_run_dir(load_config(config_path), config_path).path
    finally:
        os.umask(umask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.jsonl", "c"]
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644  # readable by a team, as before
    assert run.stat().st_mode & 0o777 == 0o755 and (run / "run.json").stat().st_mode & 0o777 == 0o644


def test_output_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "runs").write_text("x")
    config_path = _config(tmp_path)
    with pytest.raises(TunewiseError, match="output.dir .*runs is not a directory"):
        create_run_dir(load_config(config_path), config_path)
