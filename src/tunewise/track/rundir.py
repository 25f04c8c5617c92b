"""runs/<timestamp>-<name>/: resolved config, metrics.jsonl, adapter/, eval.json, rejects.jsonl."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tunewise.config import Config, dump_config
from tunewise.core.processes import process_alive
from tunewise.core.safeio import replace_text, write_failure, writing
from tunewise.data.jsonl import write_jsonl
from tunewise.data.records import Reject
from tunewise.errors import TunewiseError
from tunewise.track.runinfo import RUN_JSON, RunInfo

MAX_SLUG = 80  # with the timestamp and a suffix, well under the 255 bytes a file name may have
STAGING = ".tmp-run-"  # hidden: the run store never lists it


@dataclass
class RunDir:
    path: Path

    def write_json(self, name: str, payload: Any) -> Path:
        target = self.path / name
        replace_text(target, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")  # never seen half-written
        return target

    def write_jsonl(self, name: str, rows: list[dict[str, Any]], append: bool = False) -> Path:
        with writing(self.path / name):
            return write_jsonl(self.path / name, rows, append)

    def write_rejects(self, rejects: list[Reject]) -> Path | None:
        if not rejects:
            return None
        return self.write_jsonl("rejects.jsonl", [r.to_json() for r in rejects], append=True)


def run_name(config: Config, config_path: Path, fallback: str = "run") -> str:
    """output.name, else the config file's stem, else (for examples/<name>/config.yaml) its folder. Only letters,
    digits, '_', '.' and '-' are kept, so a name cannot reach outside output.dir (no '/', and the timestamp comes
    first, so never '..'), and it is cut to MAX_SLUG characters to fit a file name."""
    name = config.output.name or config_path.stem
    if name == "config":
        name = config_path.resolve().parent.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)[:MAX_SLUG].strip("-") or fallback


def create_run_dir(config: Config, config_path: Path) -> RunDir:
    """A new run directory holding config.yaml and a first run.json (status running).

    Built in a hidden staging directory and renamed into place, so the run store never sees it half made (a run
    without run.json would be listed as `unknown`). Its name is reserved first with mkdir, which fails for all but
    one of several runs started in the same second. A full disk is a one-line error and leaves nothing behind."""
    workspace = config.output.dir
    slug = run_name(config, config_path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    staged: Path | None = None
    final: Path | None = None
    if os.path.lexists(workspace) and not workspace.is_dir():
        raise TunewiseError(f"output.dir {workspace} is not a directory; point output.dir at a directory")
    try:
        workspace.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(workspace)
        staged = workspace / f"{STAGING}{os.getpid()}-{secrets.token_hex(4)}"  # not mkdtemp: its mode is 0700
        staged.mkdir()
        final = _reserve(workspace, f"{stamp}-{slug}")
        info = RunInfo(final.name, task=config.eval_task, model=config.model.name)
        _write_durably(staged / "config.yaml", dump_config(config))
        _write_durably(staged / RUN_JSON, json.dumps(asdict(info), indent=2) + "\n")
        os.replace(staged, final)  # over the empty directory that reserved the name: atomic on POSIX
    except BaseException as exc:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
        if final is not None:
            with suppress(OSError):
                final.rmdir()  # only while still empty: never a run that made it into place
        if isinstance(exc, OSError):
            raise write_failure(exc, final or workspace) from exc
        raise
    return RunDir(final)


def _write_durably(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _reserve(workspace: Path, name: str) -> Path:
    for suffix in range(1, 10_000):
        path = workspace / (name if suffix == 1 else f"{name}-{suffix}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{workspace / name}: 10,000 runs of this name started in the same second")


def _remove_stale_staging(workspace: Path) -> None:
    """Staging directories of processes killed while creating their run directory."""
    for path in workspace.glob(f"{STAGING}*"):
        pid = path.name.removeprefix(STAGING).split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


__all__ = ["RUN_JSON", "RunDir", "create_run_dir", "run_name"]
