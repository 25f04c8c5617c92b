"""Data-parallel training in 2 CPU processes (gloo), launched by `--nproc 2`: the same per-step losses as one process
with the same global batch, one run directory and one store entry written by rank 0, and a run whose rank 1 is
killed mid-training resumed with `--resume --nproc 2` to the losses of the uninterrupted run.

The labels tokenize to 3, 2 and 3 tokens, so the two ranks' micro-batches of a step hold unequal numbers of trained
tokens: the loss of each rank is divided by the tokens of the whole global batch (average_tokens_across_devices)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from support.resume import comparable, invoke, metrics, the_run, write_data, write_train_config
from tunewise.track.store import read_info

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 3 epochs of 12 optimizer steps over 96 examples, a global batch of 8: 4 x 2 accumulated in one process, 4 x 1 on
# each of 2 ranks. No LoRA dropout: each rank would draw its own masks, one process draws them in sequence.
SAME_BATCH = {"batch_size": 4, "sections": {"lora": {"dropout": 0.0}}}
KILL_HOOK = """
import os

if "TUNEWISE_TEST_KILL_RANK" in os.environ and os.environ.get("RANK") == os.environ["TUNEWISE_TEST_KILL_RANK"]:
    import signal

    from tunewise.train import callbacks

    def _kill(self, args, state, control, **kw):
        if state.global_step == int(os.environ["TUNEWISE_TEST_KILL_AT_STEP"]):
            os.kill(os.getpid(), signal.SIGKILL)

    callbacks.MetricsLogger.on_step_end = _kill
"""


def _losses(run: Path) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in metrics(run) if "loss" in row}


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "adapter" / "adapter_model.safetensors")


def _store_rows(directory: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(directory / "runs" / "runs.db") as conn:
        return conn.execute("SELECT name, status FROM runs").fetchall()


@pytest.fixture(scope="module")
def one_process(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("one-process")
    config = write_train_config(directory, tiny_model_dir, write_data(directory / "data"), grad_accum=2, **SAME_BATCH)
    result = invoke("train", config)
    assert result.exit_code == 0, result.output
    return the_run(directory)


@pytest.fixture(scope="module")
def two_processes(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("two-processes")
    config = write_train_config(directory, tiny_model_dir, write_data(directory / "data"), grad_accum=1, **SAME_BATCH)
    result = invoke("run", config, "--nproc", 2)
    assert result.exit_code == 0, result.output
    return directory


def test_two_processes_train_as_one_with_the_same_global_batch(one_process: Path, two_processes: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(read_info(one_process).model)
    assert len({len(tokenizer(label)["input_ids"]) for label in ("negative", "neutral", "positive")}) > 1

    run = the_run(two_processes)  # rank 0 alone made the run directory, and indexed it once
    assert _store_rows(two_processes) == [(run.name, "completed")]
    single, parallel = _losses(one_process), _losses(run)
    assert sorted(parallel) == sorted(single) and len(single) == 13  # steps 1, 3, 6, ..., 36
    assert all(abs(parallel[step] - single[step]) < 1e-5 for step in single), (parallel, single)
    evals = [(r["step"], r["eval_loss"]) for r in metrics(run) if "eval_loss" in r]
    expected = [(r["step"], r["eval_loss"]) for r in metrics(one_process) if "eval_loss" in r]
    assert [s for s, _ in evals] == [s for s, _ in expected]
    assert all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(evals, expected, strict=True))
    ours, reference = _adapter(run), _adapter(one_process)
    assert ours.keys() == reference.keys()
    assert all(torch.allclose(ours[k], reference[k], atol=1e-5) for k in ours)
    # rank 0 scored the base and the fine-tuned model, and wrote every row once
    evaluation = json.loads((run / "eval.json").read_text())
    assert {"base", "fine-tuned"} <= set(evaluation["models"])
    assert sum(row.get("event") == "train_end" for row in metrics(run)) == 1
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"checkpoint-35", "checkpoint-36"}
    manifest = json.loads((run / "checkpoints" / "checkpoint-36" / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and {"rng_state_0.pth", "rng_state_1.pth"} <= set(manifest["files"])


def test_a_killed_rank_fails_the_launch_cleanly_and_resume_finishes_as_uninterrupted(
    two_processes: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_HOOK, encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(hook))
    monkeypatch.setenv("TUNEWISE_TEST_KILL_RANK", "1")
    monkeypatch.setenv("TUNEWISE_TEST_KILL_AT_STEP", "23")  # checkpoint 20 written, the loss of step 21 logged
    config = write_train_config(tmp_path, tiny_model_dir, write_data(tmp_path / "data"), grad_accum=1, **SAME_BATCH)

    killed = invoke("train", config, "--nproc", 2)

    assert killed.exit_code == 2
    assert "error: training process 1 of 2 was killed by SIGKILL" in killed.output
    assert "run the same command with --resume" in killed.output
    run = the_run(tmp_path)
    assert read_info(run).status in ("failed", "interrupted")  # rank 0 recorded how it ended
    assert max(row["step"] for row in metrics(run)) < 24

    monkeypatch.delenv("TUNEWISE_TEST_KILL_RANK")
    resumed = invoke("train", config, "--resume", "--nproc", 2)

    assert resumed.exit_code == 0, resumed.output
    assert the_run(tmp_path) == run and read_info(run).status == "completed" and read_info(run).resumes == 1
    assert [row["step"] for row in metrics(run) if row.get("event") == "resume"] == [20]
    assert comparable(run) == comparable(the_run(two_processes))  # every loss, grad norm and eval loss, bit for bit
    assert _adapter(run).keys() == _adapter(the_run(two_processes)).keys()
    assert all(torch.equal(_adapter(run)[k], _adapter(the_run(two_processes))[k]) for k in _adapter(run))


def test_a_failure_of_rank_0_before_training_stops_the_others_with_one_error(
    tiny_model_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    data = write_data(tmp_path / "data")
    with data["train"].open("a", encoding="utf-8") as fh:
        fh.write('{"text": "cut off\n')  # a malformed line: rank 0 stops while reading the data
    config = write_train_config(tmp_path, tiny_model_dir, data, grad_accum=1, **SAME_BATCH)

    result = invoke("train", config, "--nproc", 2)

    assert result.exit_code == 2 and result.output == ""  # rank 0 said why; the launch adds nothing to it
    errors = [line for line in capfd.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "train.jsonl:97" in errors[0], errors  # rank 1 stopped without repeating it
    assert read_info(the_run(tmp_path)).status == "failed"
