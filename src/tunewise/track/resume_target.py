"""Which run directory a `tunewise run|train` continues: `--resume [RUN_DIR]`, automatically, or none (`--fresh`).

A run can be continued when it did not complete, no live process is writing it, and it was started with the same
resolved config and the same data (SHA-256 in its env.json): anything else would not reproduce the uninterrupted
run, so an explicit `--resume` refuses it with the reason and the automatic choice passes it over.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from rich.console import Console
from rich.markup import escape

from tunewise.config import Config, dump_config
from tunewise.core.processes import process_alive
from tunewise.errors import TunewiseError
from tunewise.track.env import file_digest
from tunewise.track.rundir import run_name
from tunewise.track.store import flatten, read_info, read_json, read_yaml, run_info

ResumeMode = Literal["auto", "resume", "fresh"]
_STAMP = re.compile(r"^\d{8}-\d{6}-(?P<slug>.+)$")


@dataclass
class ResumeRequest:
    mode: ResumeMode = "auto"
    run_dir: Path | None = None  # with mode "resume": this run rather than the newest unfinished one


def select_run_dir(config: Config, config_path: Path, request: ResumeRequest, console: Console) -> Path | None:
    """The run directory to continue, or None to start a new one."""
    if request.mode == "fresh":
        return None
    if request.run_dir is not None:
        problem = why_not_resumable(request.run_dir, config)
        if problem:
            raise TunewiseError(f"--resume {request.run_dir}: {problem}")
        return request.run_dir
    slug = run_name(config, config_path)
    for path in unfinished_runs(config.output.dir, slug):
        if why_not_resumable(path, config) is None:
            if request.mode == "auto":
                console.print(
                    f"resuming the unfinished run {escape(str(path))} (same config and data); "
                    "pass --fresh to start a new run instead"
                )
            return path
    if request.mode == "resume":
        raise TunewiseError(
            f"--resume: no unfinished run '{slug}' with this config and data under {config.output.dir}; "
            "run without --resume to start one"
        )
    return None


def unfinished_runs(workspace: Path, slug: str) -> list[Path]:
    """Run directories of this run name that did not complete, newest first."""
    if not workspace.is_dir():
        return []
    found: list[tuple[float, Path]] = []
    try:
        entries = list(workspace.iterdir())
    except OSError:  # unreadable: nothing to continue, a new run says what is wrong when it writes there
        return []
    for path in entries:
        match = _STAMP.match(path.name)
        if not match or not re.fullmatch(rf"{re.escape(slug)}(-\d+)?", match["slug"]) or not path.is_dir():
            continue
        info = read_info(path)  # runs from before run.json are never continued automatically
        # validation_metric is set for training runs only: an interrupted `tunewise eval` is not one to train in;
        # a damaged run.json cannot say what the run was, so it is passed over (and listed as damaged)
        resumable = info is not None and not info.damaged and info.validation_metric
        if resumable and info.status not in ("completed", "pruned"):
            found.append((info.started, path))
    return [path for _, path in sorted(found, key=lambda pair: pair[0], reverse=True)]


def why_not_resumable(path: Path, config: Config) -> str | None:
    info = run_info(path)
    if info is None:
        return "not a tunewise run directory (no run.json or config.yaml)"
    if info.damaged:
        return f"{info.error}; or start a new run with --fresh"
    if info.status == "completed":
        return "this run completed; start a new one with --fresh"
    if info.status == "running" and info.pid != os.getpid() and process_alive(info.pid):
        return f"this run is still running (pid {info.pid})"
    stored = read_yaml(path / "config.yaml")
    current = yaml.safe_load(dump_config(config))
    if stored != current:
        old, new = flatten(stored), flatten(current)
        keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        return f"its config differs in {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}; use --fresh"
    changed = _changed_data(path, config)
    if changed:
        return f"the {', '.join(changed)} data changed since it started (SHA-256); use --fresh"
    return None


def _changed_data(path: Path, config: Config) -> list[str]:
    env = read_json(path / "env.json")
    recorded = env.get("data") if isinstance(env, dict) else None  # no env.json: killed before any data use
    recorded = recorded if isinstance(recorded, dict) else {}
    files = {"train": config.data.train, "val": config.data.val, "test": config.data.test}
    changed = []
    for split, file in files.items():
        before = recorded.get(split)
        known = file is not None and isinstance(before, dict) and "sha256" in before
        if known and file_digest(file).get("sha256") != before["sha256"]:
            changed.append(split)
    return changed
