"""Exact resume and determinism on CPU: a run stopped mid-epoch and resumed logs the same floats and saves the same
adapter bytes as an uninterrupted one; the same seed gives the same adapter, another seed another one."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from support.resume import (
    adapter_sha,
    comparable,
    invoke,
    metrics,
    no_stop,
    runs_in,
    stop_at,
    the_run,
    write_data,
    write_train_config,
)
from tunewise.config import load_config
from tunewise.errors import TunewiseError
from tunewise.track.rundir import create_run_dir
from tunewise.track.store import RunInfo, read_info, write_info

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _reference(tmp_path_factory: pytest.TempPathFactory, model: Path, command: str, **train: object) -> Path:
    directory = tmp_path_factory.mktemp(f"reference-{command}")
    result = invoke(command, write_train_config(directory, model, write_data(directory / "data"), **train))
    assert result.exit_code == 0, result.output
    return the_run(directory)


@pytest.fixture(scope="module")
def reference_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _reference(tmp_path_factory, tiny_model_dir, "run")


@pytest.fixture(scope="module")
def reference_train_padded(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _reference(tmp_path_factory, tiny_model_dir, "train", packing=False)


@pytest.mark.parametrize(("command", "packing"), [("run", True), ("train", False)])
def test_a_run_stopped_mid_epoch_resumes_to_the_same_losses_and_adapter(
    command: str, packing: bool, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request
) -> None:
    reference = request.getfixturevalue("reference_run" if packing else "reference_train_padded")
    config = write_train_config(tmp_path, tiny_model_dir, write_data(tmp_path / "data"), packing=packing)
    stop_at(monkeypatch, 23)  # epoch 2 of 3, 11 of its 12 steps done; the last checkpoint is at step 20
    stopped = invoke(command, config)
    assert stopped.exit_code == 130
    run = the_run(tmp_path)
    assert read_info(run).status == "interrupted"
    assert max(row["step"] for row in metrics(run)) == 21  # logged after the checkpoint: must not count twice

    no_stop(monkeypatch)
    resumed = invoke(command, config)  # no flag: the unfinished run of this config is continued

    assert resumed.exit_code == 0, resumed.output
    assert "resuming the unfinished run" in resumed.output and "--fresh" in resumed.output
    assert "resuming training from" in resumed.output and "checkpoint-20 (step 20)" in resumed.output
    assert runs_in(tmp_path) == [run]
    assert comparable(run) == comparable(reference)  # every loss, grad norm, lr and eval loss, bit for bit
    assert adapter_sha(run) == adapter_sha(reference)
    logged = Counter(row["step"] for row in metrics(run) if "loss" in row)
    assert len(logged) >= 12 and max(logged.values()) == 1  # no step logged twice
    assert [row["step"] for row in metrics(run) if row.get("event") == "resume"] == [20]
    info = read_info(run)
    assert info.status == "completed" and info.resumes == 1
    if command == "run":
        assert "base model: results of the interrupted run reused" in resumed.output
        evaluation, expected = (json.loads((r / "eval.json").read_text()) for r in (run, reference))
        assert evaluation["models"] == expected["models"] and evaluation["differences"] == expected["differences"]
        assert evaluation["train"]["resumed_from_step"] == 20
        predicted, expected_rows = (
            [_no_source(line) for line in (r / "predictions.jsonl").open()] for r in (run, reference)
        )
        assert predicted == expected_rows
        assert not (run / "base_eval.json").exists()


def _no_source(line: str) -> dict:
    row = json.loads(line)
    row.pop("source")  # the data file's path: another directory here
    return row


STALLED = {"lr": 1e-9, "eval_steps": 2, "patience": 2, "min_delta": 0.01}  # evaluations at 2, 4, 6; stops at 6


@pytest.fixture(scope="module")
def stalled_reference(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = _reference(tmp_path_factory, tiny_model_dir, "train", **STALLED)
    end = next(row for row in metrics(run) if row.get("event") == "train_end")
    assert end["stopped_early"] and end["step"] == 6
    return run


@pytest.mark.parametrize(
    ("step", "event"),
    [
        (6, "on_save"),  # right after the checkpoint at which early stopping fired: transformers would train on
        (5, "on_step_end"),  # from checkpoint 4, one evaluation without gain: the patience count must come back
    ],
)
def test_early_stopping_ends_a_resumed_run_where_it_ended_the_uninterrupted_one(
    step: int,
    event: str,
    stalled_reference: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_train_config(tmp_path, tiny_model_dir, write_data(tmp_path / "data"), **STALLED)
    stop_at(monkeypatch, step, event)
    assert invoke("train", config).exit_code == 130
    no_stop(monkeypatch)
    assert invoke("train", config).exit_code == 0

    run = the_run(tmp_path)
    assert comparable(run) == comparable(stalled_reference)
    assert max(row["step"] for row in metrics(run)) == 6


def test_the_divergence_monitor_state_survives_a_resume() -> None:
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from tunewise.train.callbacks import DivergenceMonitor, MetricsLogger

    def feed(monitor: DivergenceMonitor, steps: range) -> None:
        for step in steps:  # training loss falls, validation loss rises
            state = SimpleNamespace(global_step=step)
            monitor.on_log(None, state, None, logs={"loss": 10.0 - step})
            monitor.on_evaluate(None, state, None, metrics={"eval_loss": float(step)})

    logger = MetricsLogger(Path(os.devnull))
    uninterrupted = DivergenceMonitor(3, logger, Console(file=io.StringIO()))
    feed(uninterrupted, range(1, 7))
    first = DivergenceMonitor(3, logger, Console(file=io.StringIO()))
    feed(first, range(1, 3))
    resumed = DivergenceMonitor(3, logger, Console(file=io.StringIO()))
    resumed.load_state(json.loads(json.dumps(first.export_state())))  # as tunewise_state.json carries it
    feed(resumed, range(3, 7))
    assert resumed.warned_at == uninterrupted.warned_at == [4]


def _adapter_after(tmp_path: Path, model: Path, name: str, seed: int) -> str:
    config = write_train_config(tmp_path / name, model, write_data(tmp_path / "data"), max_steps=6, seed=seed)
    result = invoke("train", config)
    assert result.exit_code == 0, result.output
    return adapter_sha(the_run(tmp_path / name))


def test_the_same_seed_gives_the_same_adapter_and_another_seed_another(tiny_model_dir: Path, tmp_path: Path) -> None:
    first = _adapter_after(tmp_path, tiny_model_dir, "a", seed=42)
    assert _adapter_after(tmp_path, tiny_model_dir, "b", seed=42) == first
    assert _adapter_after(tmp_path, tiny_model_dir, "c", seed=7) != first


def test_the_seed_reaches_the_lora_initialisation(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from tunewise.train.trainer import add_lora

    def lora_a(seed: int) -> bytes:
        config = load_config(write_train_config(tmp_path, tiny_model_dir, write_data(tmp_path / "data"), seed=seed))
        model = add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
        tensors = [p.detach().numpy().tobytes() for n, p in sorted(model.named_parameters()) if "lora_A" in n]
        assert tensors and any(t.strip(b"\0") for t in tensors)
        return hashlib.sha256(b"".join(tensors)).digest()

    assert lora_a(1) == lora_a(1) != lora_a(2)


# --- which run a command continues ------------------------------------------------------------------------------


def _fake_run(config_path: Path, status: str, pid: int | None = None) -> Path:
    """A run directory as `tunewise` leaves it, without the training."""
    config = load_config(config_path)
    run = create_run_dir(config, config_path).path
    info = RunInfo(run.name, status=status, validation_metric="eval_loss")
    if pid is not None:
        info.pid = pid
    write_info(run, info)
    return run


def _dead_pid() -> int:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _choose(config_path: Path, mode: str = "auto", run_dir: Path | None = None) -> Path | None:
    import io

    from rich.console import Console

    from tunewise.track.resume_target import ResumeRequest, select_run_dir

    config = load_config(config_path)
    return select_run_dir(config, config_path, ResumeRequest(mode, run_dir), Console(file=io.StringIO()))  # type: ignore[arg-type]


def test_the_newest_unfinished_run_of_the_same_config_and_data_is_chosen(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    config = write_train_config(tmp_path, tiny_model_dir, data)
    dead = _dead_pid()
    crashed = _fake_run(config, "running", pid=dead)
    assert _choose(config) == crashed
    os.utime(crashed / "run.json")
    failed = _fake_run(config, "failed")
    info = read_info(failed)
    info.started += 10
    write_info(failed, info)
    assert _choose(config) == failed  # newest first
    _fake_run(config, "running", pid=os.getppid())  # a live process is writing it: never taken over
    assert _choose(config) == failed
    evaluation = _fake_run(config, "failed")
    info = read_info(evaluation)
    info.validation_metric, info.started = None, info.started + 20  # `tunewise eval`: not a training run
    write_info(evaluation, info)
    assert _choose(config) == failed
    assert _choose(config, "fresh") is None
    for run in (crashed, failed):
        info = read_info(run)
        info.status = "completed"
        write_info(run, info)
    assert _choose(config) is None
    with pytest.raises(TunewiseError, match="no unfinished run 'resume' with this config and data"):
        _choose(config, "resume")


def test_a_changed_config_or_changed_data_is_not_resumed(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    config = write_train_config(tmp_path, tiny_model_dir, data)
    run = _fake_run(config, "failed")
    (run / "env.json").write_text(json.dumps({"data": {"train": {"sha256": "0" * 64}}}))
    assert _choose(config) is None
    with pytest.raises(TunewiseError, match=r"the train data changed since it started \(SHA-256\); use --fresh"):
        _choose(config, "resume", run)
    (run / "env.json").unlink()
    assert _choose(config) == run
    changed = write_train_config(tmp_path, tiny_model_dir, data, lr=1e-3)
    assert _choose(changed) is None
    with pytest.raises(TunewiseError, match=r"its config differs in train\.lr; use --fresh"):
        _choose(changed, "resume", run)


def test_resume_flags_on_the_command_line(write_config, tmp_path: Path) -> None:
    config = write_config()
    for args, message in (
        (["--resume", "--fresh"], "--resume and --fresh contradict each other"),
        (["--resume", tmp_path / "nope"], "no such run directory"),
        ([tmp_path], "expected KEY=VALUE"),
        (["--resume", tmp_path / "a", tmp_path / "b"], "--resume takes one run directory"),
        (["--resume"], "no unfinished run"),
    ):
        (tmp_path / "a").mkdir(exist_ok=True)
        (tmp_path / "b").mkdir(exist_ok=True)
        result = invoke("train", config, *args)
        assert result.exit_code == 2 and message in result.output, result.output
