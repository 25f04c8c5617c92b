"""pipeline.launch: `--nproc N` starts the command in N processes under torch.distributed's elastic agent (real
launches of light commands here; training in tests/system/test_ddp.py), and a failed process becomes one line."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tunewise.config import Config
from tunewise.errors import ConfigError, TunewiseError
from tunewise.pipeline.launch import check_launch, failure_code, launch


def _config(tmp_path: Path, **model: str) -> Config:
    return Config(data={"train": str(tmp_path / "train.jsonl")}, model={"name": "tiny", **model})


def test_each_process_runs_the_command_with_its_rank_and_the_launcher_is_left_as_it_was(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = {name: signal.getsignal(getattr(signal, name)) for name in ("SIGINT", "SIGTERM")}
    assert launch(["--version"], 2, _config(tmp_path, device="cpu")) == 0
    assert capfd.readouterr().out.count("tunewise ") == 2
    assert {name: signal.getsignal(getattr(signal, name)) for name in before} == before
    assert "OMP_NUM_THREADS" not in os.environ


def test_a_process_that_reports_its_own_error_gives_its_exit_code(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code = launch(["runs", "show", "nothing-here", "--dir", str(tmp_path)], 2, _config(tmp_path, device="cpu"))
    assert code == 2
    err = capfd.readouterr().err
    assert "error: (training process 1) " in err and err.count("error:") == 2  # each said why, once


def test_a_process_that_died_without_a_word_is_named() -> None:
    assert failure_code(1, 2, "<N/A>", 2) == 2 and failure_code(0, 130, "<N/A>", 2) == 130
    with pytest.raises(TunewiseError, match=r"training process 1 of 2 was killed by SIGKILL \(out of memory\?\)"):
        failure_code(1, -9, "SIGKILL", 2)
    with pytest.raises(TunewiseError, match=r"training process 0 of 4 failed \(exit code 1, its error is above\)"):
        failure_code(0, 1, "<N/A>", 4)


def test_a_launch_inside_a_launch_or_on_mps_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tunewise.pipeline.launch as launch_module

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="--nproc 4 inside a launch of 2 processes"):
        check_launch(_config(tmp_path, device="cpu"), 4)
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setattr(launch_module, "resolve_device", lambda setting: __import__("torch").device("mps"))
    with pytest.raises(ConfigError, match="not MPS"):
        check_launch(_config(tmp_path), 2)
