"""Atomic checkpoints: manifest written last, verified before any load; a failed write keeps the previous one."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

import tunewise.train.checkpoint as checkpoint_module
from support.resume import adapter_sha, invoke, no_stop, runs_in, stop_at, the_run, write_data, write_train_config
from tunewise.train.checkpoint import (
    MANIFEST,
    REQUIRED,
    STATE_FILE,
    commit,
    latest_valid_checkpoint,
    remove_stale_staging,
    rng_files,
    verify_checkpoint,
)


def _fake_checkpoint(root: Path, step: int, world_size: int = 1) -> Path:
    """A committed directory with the files a checkpoint must have (contents are arbitrary bytes)."""
    staged = root / f".tmp-{os.getpid()}" / f"checkpoint-{step}"
    staged.mkdir(parents=True)
    for name in (*REQUIRED, *rng_files(world_size), "adapter_model.safetensors"):
        (staged / name).write_bytes(os.urandom(256) + name.encode())
    (staged / "sub").mkdir()
    (staged / "sub" / "nested.json").write_text("{}")
    final = root / f"checkpoint-{step}"
    commit(staged, final, step, world_size)
    (root / f".tmp-{os.getpid()}").rmdir()
    return final


def test_commit_publishes_a_complete_directory_with_a_manifest_of_every_file(tmp_path: Path) -> None:
    final = _fake_checkpoint(tmp_path, 7)
    manifest = json.loads((final / MANIFEST).read_text())
    files = sorted(p.relative_to(final).as_posix() for p in final.rglob("*") if p.is_file() and p.name != MANIFEST)
    assert sorted(manifest["files"]) == files and manifest["step"] == 7
    assert all(len(meta["sha256"]) == 64 and meta["size"] > 0 for meta in manifest["files"].values())
    assert verify_checkpoint(final) is None
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-7"]  # nothing staged left behind


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "manifest missing": (lambda c: (c / MANIFEST).unlink(), r"no manifest\.json"),
    "manifest garbage": (lambda c: (c / MANIFEST).write_text('{"files": '), r"manifest\.json is unreadable"),
    "truncated": (
        lambda c: (c / "optimizer.pt").write_bytes((c / "optimizer.pt").read_bytes()[:100]),
        r"optimizer\.pt has 100 bytes, the manifest says \d+ \(truncated",
    ),
    "bit flip": (lambda c: _flip_byte(c / "adapter_model.safetensors"), r"adapter_model\.safetensors does not match"),
    "file deleted": (lambda c: (c / "rng_state.pth").unlink(), r"rng_state\.pth is missing"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_a_damaged_checkpoint_is_named_with_what_is_wrong(tmp_path: Path, kind: str) -> None:
    damage, expected = CORRUPTIONS[kind]
    final = _fake_checkpoint(tmp_path, 3)
    damage(final)
    problem = verify_checkpoint(final)
    assert problem is not None
    assert __import__("re").search(expected, problem), problem


def test_a_checkpoint_of_several_processes_needs_each_ones_rng_state(tmp_path: Path) -> None:
    final = _fake_checkpoint(tmp_path, 5, world_size=2)
    assert json.loads((final / MANIFEST).read_text())["world_size"] == 2
    assert verify_checkpoint(final) is None
    (final / "rng_state_1.pth").unlink()
    assert verify_checkpoint(final) == "rng_state_1.pth is missing"
    staged = tmp_path / "checkpoint-6"  # a manifest that does not list one rank's file: incomplete
    staged.mkdir()
    for name in (*REQUIRED, "rng_state_0.pth", "adapter_model.safetensors"):
        (staged / name).write_bytes(b"x")
    checkpoint_module.write_manifest(staged, 6, world_size=2)
    assert verify_checkpoint(staged) == "incomplete: no rng_state_1.pth"


@pytest.mark.parametrize(
    "optimizer",
    [["optimizer.bin", "scheduler.pt"], ["optimizer_0/__0_0.distcp", "scheduler.pt"], ["global_step5/optim_states.pt"]],
)
def test_a_sharded_optimizer_state_stands_for_optimizer_pt(tmp_path: Path, optimizer: list[str]) -> None:
    """FSDP and DeepSpeed keep the optimizer (DeepSpeed: and the schedule) in files of their own."""
    staged = tmp_path / "checkpoint-5"
    for name in ("trainer_state.json", STATE_FILE, "rng_state.pth", "adapter_model.safetensors", *optimizer):
        (staged / name).parent.mkdir(parents=True, exist_ok=True)
        (staged / name).write_bytes(b"x")
    checkpoint_module.write_manifest(staged, 5)
    assert verify_checkpoint(staged) is None


def test_a_manifest_without_the_resume_files_is_incomplete(tmp_path: Path) -> None:
    staged = tmp_path / "checkpoint-4"
    staged.mkdir()
    (staged / "adapter_model.safetensors").write_bytes(b"x")
    checkpoint_module.write_manifest(staged, 4)
    assert "incomplete: no trainer_state.json" in (verify_checkpoint(staged) or "")


def test_the_newest_valid_checkpoint_wins_and_invalid_ones_are_named_and_moved_aside(tmp_path: Path) -> None:
    for step in (3, 6, 9):
        _fake_checkpoint(tmp_path, step)
    _flip_byte(tmp_path / "checkpoint-9" / "optimizer.pt")
    (tmp_path / "checkpoint-12").mkdir()  # a plain (non-atomic) write killed half-way: no manifest
    (tmp_path / "checkpoint-12" / "adapter_model.safetensors").write_bytes(b"half")
    dead = tmp_path / ".tmp-999999999" / "checkpoint-15"  # staged by a process that is gone
    dead.mkdir(parents=True)
    live = tmp_path / ".tmp-1"  # pid 1 is alive: some other process is writing there
    live.mkdir()
    warnings: list[str] = []

    chosen = latest_valid_checkpoint(tmp_path, warnings.append)

    assert chosen == tmp_path / "checkpoint-6"
    assert len(warnings) == 2
    assert str(tmp_path / "checkpoint-12") in warnings[0] and "no manifest.json" in warnings[0]
    assert str(tmp_path / "checkpoint-9") in warnings[1] and "optimizer.pt does not match" in warnings[1]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".tmp-1", "checkpoint-3", "checkpoint-6", "invalid-checkpoint-12", "invalid-checkpoint-9"]
    assert remove_stale_staging(tmp_path) == []  # the live one stays


# --- on a real training run -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, one_torch_thread: None) -> Path:
    directory = tmp_path_factory.mktemp("reference")
    config = write_train_config(directory, tiny_model_dir, write_data(directory / "data"), epochs=2)
    result = invoke("train", config)
    assert result.exit_code == 0, result.output
    return the_run(directory)


def test_training_leaves_only_verified_checkpoints(reference: Path) -> None:
    checkpoints = reference / "checkpoints"
    names = sorted(p.name for p in checkpoints.iterdir())
    assert names == ["checkpoint-20", "checkpoint-24"] or len(names) == 3, names  # the last two, and the best
    assert all(verify_checkpoint(checkpoints / name) is None for name in names)
    assert not list(reference.rglob(".tmp-*"))
    state = json.loads((checkpoints / names[-1] / "trainer_state.json").read_text())
    assert Path(state["best_model_checkpoint"]).parent == checkpoints  # the real path, not the staging one


def _enospc_in_torch_save(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    original = torch.save

    def save(obj, f, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(f).endswith("optimizer.pt") and "checkpoint-10" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return original(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def _enospc_in_manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    original = checkpoint_module.write_manifest

    def write_manifest(staged: Path, step: int, world_size: int) -> None:
        if step == 10:
            (staged / MANIFEST).write_text('{"files": {')  # the first bytes made it, then the disk was full
            raise OSError(errno.ENOSPC, "No space left on device")
        original(staged, step, world_size)

    monkeypatch.setattr(checkpoint_module, "write_manifest", write_manifest)


@pytest.mark.parametrize("where", ["torch.save", "manifest"])
def test_a_full_disk_keeps_the_previous_checkpoint_and_says_how_to_continue(
    reference: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    config = write_train_config(tmp_path, tiny_model_dir, write_data(tmp_path / "data"), epochs=2)
    (_enospc_in_torch_save if where == "torch.save" else _enospc_in_manifest)(monkeypatch)

    result = invoke("train", config)

    assert result.exit_code == 2, result.output
    # one line (after the progress bar the failure cut short)
    errors = [line[line.index("error:") :] for line in result.output.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    run = the_run(tmp_path)
    checkpoints = run / "checkpoints"
    message = errors[0]
    assert f"checkpoint write failed at step 10: {checkpoints / 'checkpoint-10'}" in message
    assert "no space left on device" in message
    assert f"previous checkpoint at step 5 ({checkpoints / 'checkpoint-5'}) is intact" in message
    assert "--resume" in message
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-5"]  # no partial checkpoint-10, no staging
    assert verify_checkpoint(checkpoints / "checkpoint-5") is None
    assert json.loads((run / "run.json").read_text())["status"] == "failed"

    monkeypatch.undo()  # space freed
    resumed = invoke("train", config, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming training from" in resumed.output and "(step 5)" in resumed.output
    assert runs_in(tmp_path) == [run] and adapter_sha(run) == adapter_sha(reference)


def test_a_corrupt_newest_checkpoint_is_skipped_and_the_previous_one_resumes_exactly(
    reference: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_train_config(tmp_path, tiny_model_dir, write_data(tmp_path / "data"), epochs=2)
    stop_at(monkeypatch, 13)
    assert invoke("train", config).exit_code == 130
    run = the_run(tmp_path)
    newest = run / "checkpoints" / "checkpoint-10"
    _flip_byte(newest / "adapter_model.safetensors")

    no_stop(monkeypatch)
    import torch

    loads: list[tuple[str, object]] = []
    original_load = torch.load

    def load(f, *args, **kwargs):  # type: ignore[no-untyped-def]
        loads.append((Path(str(f)).name, kwargs.get("weights_only")))
        return original_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    result = invoke("train", config, "--resume")

    assert result.exit_code == 0, result.output
    # the Trainer's own pickles are read without running code: tensors and plain containers only
    assert {name for name, _ in loads} >= {"optimizer.pt", "scheduler.pt", "rng_state.pth"}
    assert all(weights_only is True for _, weights_only in loads), loads
    assert f"skipping checkpoint {newest}: adapter_model.safetensors does not match its SHA-256" in result.output
    assert "(step 5)" in result.output
    assert (run / "checkpoints" / "invalid-checkpoint-10").is_dir()
    assert adapter_sha(run) == adapter_sha(reference)
