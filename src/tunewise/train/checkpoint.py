"""Atomic, verifiable checkpoint directories.

A checkpoint is written into a staging directory that the Trainer's rotation never sees (`checkpoints/.tmp-<pid>/`),
every file and directory is fsynced, `manifest.json` (size and SHA-256 of every file, and the step) is written last,
and only then is the directory renamed to `checkpoint-<step>` and the parent fsynced. A rename is atomic on POSIX
file systems, so `checkpoint-<step>` either does not exist or is complete; a process killed at any moment leaves at
worst a staging directory, which is removed on resume. A checkpoint counts as valid only if its manifest exists and
every file matches it, which also catches what atomicity cannot: truncation or bit flips after the write.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunewise.core.hashing import sha256_file
from tunewise.core.processes import process_alive
from tunewise.core.safeio import STAGING_PREFIX, fsync_path, fsync_tree, staging_pid
from tunewise.core.safeio import describe_failure as describe_write_failure
from tunewise.core.safeio import publish_dir as publish
from tunewise.core.safeio import save_dir_atomically as save_dir_atomically  # the Trainer's adapter save

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "tunewise-checkpoint/1"
STATE_FILE = "tunewise_state.json"  # what the Trainer does not save itself (see resumable.py)
INVALID_PREFIX = "invalid-"  # outside the `checkpoint-*` glob of transformers' rotation and resume lookup
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# Without any of these a resume would silently be inexact (transformers skips a missing RNG file with a log line).
REQUIRED = ("trainer_state.json", "optimizer.pt", "scheduler.pt", STATE_FILE)
WEIGHTS = ("adapter_model.safetensors", "model.safetensors")
# Where train.fsdp and train.deepspeed keep the optimizer state instead of optimizer.pt: FSDP's full state dict or its
# sharded directory; DeepSpeed's global_step<N>/ directory, which holds the schedule too (transformers' names).
SHARDED_OPTIMIZER = ("optimizer.bin", "optimizer_0/")
DEEPSPEED_STATES = "global_step"


def step_of(path: Path) -> int | None:
    match = CHECKPOINT_RE.match(path.name)
    return int(match.group(1)) if match else None


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def rng_files(world_size: int) -> list[str]:
    """The RNG state files of a checkpoint written by `world_size` processes (transformers' names)."""
    return ["rng_state.pth"] if world_size == 1 else [f"rng_state_{rank}.pth" for rank in range(world_size)]


def write_manifest(staged: Path, step: int, world_size: int = 1) -> None:
    """Hash every file (already fsynced) and write the manifest last: its presence marks a complete write."""
    files = {
        p.relative_to(staged).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
        for p in _files(staged)
        if p != staged / MANIFEST
    }
    payload = {"format": MANIFEST_FORMAT, "step": step, "world_size": world_size, "files": files}
    target = staged / MANIFEST
    with target.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps(payload, indent=1, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    fsync_path(staged)


def commit(staged: Path, final: Path, step: int, world_size: int = 1) -> None:
    """fsync the staged checkpoint, write its manifest last, rename it to `final` (an existing `final` can only be
    a set-aside leftover of the same step: it is replaced, never merged into). `world_size`: the processes that
    wrote it, each with its own RNG state file."""
    fsync_tree(staged)
    write_manifest(staged, step, world_size)
    publish(staged, final)


def verify_checkpoint(path: Path) -> str | None:
    """None when the checkpoint is complete and intact, else what is wrong with it (for the user).

    Every file the manifest lists must be there with its size and SHA-256, and the files a resume reads must be
    listed. A file the manifest does not list is never read by a resume, so it does not make a checkpoint invalid."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return f"no {MANIFEST} (an interrupted or foreign write)"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files: dict[str, dict[str, Any]] = manifest["files"]
        step = int(manifest["step"])
        world_size = int(manifest.get("world_size", 1))
    except (OSError, ValueError, KeyError, TypeError):
        return f"{MANIFEST} is unreadable (corrupt)"
    if step_of(path) is not None and step != step_of(path):
        return f"{MANIFEST} is for step {step}, not {step_of(path)}"
    missing = [name for name in (*REQUIRED, *rng_files(max(world_size, 1))) if name not in _present(files)]
    if not any(name in files for name in WEIGHTS):
        missing.append(WEIGHTS[0])
    if missing:
        return f"incomplete: no {', '.join(missing)}"
    for name, meta in files.items():
        target = path / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            return f"{MANIFEST} names a file outside the checkpoint: {name}"
        if not target.is_file():
            return f"{name} is missing"
        size = target.stat().st_size
        if size != meta.get("size"):
            return f"{name} has {size} bytes, the manifest says {meta.get('size')} (truncated or overwritten)"
        if sha256_file(target) != meta.get("sha256"):
            return f"{name} does not match its SHA-256 in the manifest (corrupt)"
    return None


def _present(files: dict[str, Any]) -> set[str]:
    """The manifest's files, with a sharded optimizer's (FSDP, DeepSpeed) standing for optimizer.pt, and DeepSpeed's
    states for scheduler.pt too."""
    present = set(files)
    if any(name == kind or name.startswith(kind) for name in files for kind in SHARDED_OPTIMIZER):
        present.add("optimizer.pt")
    if any(name.startswith(DEEPSPEED_STATES) for name in files):
        present |= {"optimizer.pt", "scheduler.pt"}
    return present


def checkpoint_dirs(root: Path) -> list[Path]:
    """`checkpoint-<step>` directories under `root`, newest step first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and step_of(p) is not None]
    return sorted(found, key=lambda p: step_of(p) or 0, reverse=True)


def remove_stale_staging(root: Path) -> list[Path]:
    """Staging directories of processes that are gone: half-written checkpoints, never loaded."""
    removed = []
    if not root.is_dir():
        return removed
    for path in root.iterdir():
        if not path.name.startswith(STAGING_PREFIX):
            continue
        pid = staging_pid(path.name)
        if pid is not None and pid != os.getpid() and process_alive(pid):
            continue  # another live process is writing there
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def latest_valid_checkpoint(root: Path, warn: Callable[[str], None]) -> Path | None:
    """The newest checkpoint that verifies. Invalid ones are named through `warn` and moved aside (renamed to
    `invalid-checkpoint-<step>`), so neither the Trainer's rotation nor a later save of the same step meets them;
    older valid ones stay, since the best checkpoint is usually one of them."""
    remove_stale_staging(root)
    chosen = None
    for path in checkpoint_dirs(root):
        problem = verify_checkpoint(path)
        if problem is None:
            chosen = chosen or path
            continue
        aside = _free_name(root, INVALID_PREFIX + path.name)
        os.replace(path, aside)
        warn(f"skipping checkpoint {path}: {problem}; moved aside to {aside.name}")
    return chosen


def read_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))


def describe_failure(exc: BaseException, where: Path) -> str:
    """What went wrong writing a file, in words ('no space left on device'), with the free space left there; a
    failure without an errno on a full disk (torch.save's "file write failed") is named as the full disk it is."""
    return describe_write_failure(exc, where)


def _free_name(parent: Path, name: str) -> Path:
    candidate, n = parent / name, 2
    while candidate.exists():
        candidate, n = parent / f"{name}-{n}", n + 1
    return candidate
