"""The run store: each run directory is the truth; a SQLite index under the workspace makes listing fast.

`run.json` in a run directory says what the run is and how it ended; `sync` (re)indexes every run
directory of the workspace, so runs copied in, deleted or written by an older tunewise stay in step.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunewise.config import greater_is_better
from tunewise.errors import TunewiseError

INDEX_NAME = "runs.db"

# Ordered schema migrations; PRAGMA user_version counts how many have run. Append, never edit.
MIGRATIONS = (
    """CREATE TABLE runs (
        name TEXT PRIMARY KEY, path TEXT NOT NULL, status TEXT NOT NULL, task TEXT, model TEXT,
        started REAL, finished REAL, primary_metric TEXT, best_metric REAL)""",
    "ALTER TABLE runs ADD COLUMN validation_metric TEXT",
    "ALTER TABLE runs ADD COLUMN best_validation REAL",
    "CREATE INDEX runs_started ON runs(started)",
)


@dataclass
class RunInfo:
    """What `run.json` holds: identity, outcome and the headline figures of one run."""

    name: str
    status: str = "running"  # running -> completed | failed | interrupted; a killed run stays "running"
    task: str | None = None
    model: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    pid: int = field(default_factory=os.getpid)
    primary_metric: str | None = None
    best_metric: float | None = None  # the primary test metric of the best model cell
    validation_metric: str | None = None
    best_validation: float | None = None
    error: str | None = None
    resumes: int = 0  # times this run was continued from a checkpoint after it stopped

    @property
    def duration(self) -> float | None:
        return None if self.finished is None else self.finished - self.started

    @property
    def shown_status(self) -> str:
        """A run still 'running' whose process is gone was killed: say so."""
        if self.status == "running" and not process_alive(self.pid):
            return "crashed"
        return self.status


def write_info(run_path: Path, info: RunInfo) -> None:
    tmp = run_path / "run.json.tmp"
    tmp.write_text(json.dumps(asdict(info), indent=2) + "\n", encoding="utf-8")
    tmp.replace(run_path / "run.json")


def read_info(run_path: Path) -> RunInfo | None:
    try:
        raw = json.loads((run_path / "run.json").read_text(encoding="utf-8"))
        known = {k: v for k, v in raw.items() if k in RunInfo.__dataclass_fields__}
        return RunInfo(**known)
    except (OSError, ValueError, TypeError):
        return None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows; a partial or corrupt line (a crash mid-write) is skipped, never fatal."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_json(path: Path) -> Any:
    """A run file's JSON, or None when it is missing or half-written."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_yaml(path: Path) -> dict[str, Any]:
    """A run's config.yaml as a dict ({} when missing or unreadable)."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def open_index(workspace: Path) -> sqlite3.Connection:
    """The workspace's index, migrated to the current schema."""
    workspace.mkdir(parents=True, exist_ok=True)
    # autocommit mode: sqlite3 would otherwise commit DDL on its own, splitting a migration from its version bump
    conn = sqlite3.connect(workspace / INDEX_NAME, timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    conn.execute("BEGIN IMMEDIATE")  # one writer migrates; a concurrent opener waits, then sees it done
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise TunewiseError(f"the run index was written by a newer tunewise (schema {version}); upgrade tunewise")
        for number, statement in enumerate(MIGRATIONS[version:], start=version + 1):
            conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(MIGRATIONS)


def index_run(workspace: Path, run_path: Path) -> None:
    info = read_info(run_path)
    if info is None:
        return
    with closing(open_index(workspace)) as conn:
        _upsert(conn, workspace, run_path, info)


def sync(workspace: Path) -> list[tuple[Path, RunInfo]]:
    """Index every run directory under the workspace (and forget deleted ones); newest first."""
    runs = sorted(_run_dirs(workspace), key=lambda pair: pair[1].started, reverse=True)
    with closing(open_index(workspace)) as conn:
        conn.execute("BEGIN")
        conn.execute("DELETE FROM runs")
        for path, info in runs:
            _upsert(conn, workspace, path, info)
        conn.execute("COMMIT")
    return runs


def find_run(workspace: Path, ref: str, exact: bool = False) -> Path:
    """A run by path, by name (its path under the workspace), or, unless `exact`, by a unique part of it."""
    direct = Path(ref)
    if (direct / "run.json").is_file() or (direct / "config.yaml").is_file():
        return direct
    runs = [(path, display_name(workspace, path)) for path, _ in _run_dirs(workspace)]
    exact_matches = [path for path, name in runs if ref in (name, path.name)]
    if len(exact_matches) == 1:
        return exact_matches[0]
    matches = [] if exact else [path for path, name in runs if ref in name]
    if len(matches) == 1:
        return matches[0]
    if not matches and not exact_matches:
        hint = " (give the whole name)" if exact else ""
        raise TunewiseError(f"no run '{ref}' under {workspace}{hint}; `tunewise runs list` shows the runs")
    found = exact_matches or matches
    names = ", ".join(display_name(workspace, p) for p in found[:5])
    raise TunewiseError(f"'{ref}' matches {len(found)} runs ({names}); give more of the name")


def remove_run(workspace: Path, run_path: Path) -> None:
    """Delete one run directory: only a real run (run.json or config.yaml + metrics) inside the workspace."""
    root, target = workspace.resolve(), run_path.resolve()
    if root not in target.parents:
        raise TunewiseError(f"{run_path} is not inside the workspace {workspace}; nothing removed")
    if run_info(target) is None:
        raise TunewiseError(f"{run_path} is not a tunewise run directory; nothing removed")
    shutil.rmtree(target)
    with closing(open_index(workspace)) as conn:
        conn.execute("DELETE FROM runs WHERE path = ?", (str(target),))


def _upsert(conn: sqlite3.Connection, workspace: Path, path: Path, info: RunInfo) -> None:
    conn.execute(
        """INSERT OR REPLACE INTO runs (name, path, status, task, model, started, finished, primary_metric,
           best_metric, validation_metric, best_validation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (
            display_name(workspace, path),
            str(path.resolve()),
            info.shown_status,
            info.task,
            info.model,
            info.started,
            info.finished,
            info.primary_metric,
            info.best_metric,
            info.validation_metric,
            info.best_validation,
        ),
    )


def display_name(workspace: Path, path: Path) -> str:
    """The run's path under the workspace: sweep trials and ablation arms live a few levels down."""
    try:
        return path.resolve().relative_to(workspace.resolve()).as_posix()
    except ValueError:
        return path.name


_NOT_RUNS = {"checkpoints", "adapter", "plots", "tensorboard", "data", "mlartifacts", "wandb"}


def _run_dirs(workspace: Path, depth: int = 4) -> Iterator[tuple[Path, RunInfo]]:
    """Run directories under the workspace, including sweep trials and ablation arms (a few levels down)."""
    if depth < 0 or not workspace.is_dir():
        return
    for path in workspace.iterdir():
        if not path.is_dir() or path.name in _NOT_RUNS or path.name.startswith("."):
            continue
        info = run_info(path)
        if info is not None:
            yield path, info
        else:
            yield from _run_dirs(path, depth - 1)


def run_info(path: Path) -> RunInfo | None:
    """The run's run.json, or what older runs without one still tell (None: not a run directory)."""
    return read_info(path) or _legacy_info(path)


def _legacy_info(path: Path) -> RunInfo | None:
    """Runs from before run.json: enough from config.yaml, metrics.jsonl and eval.json to list them."""
    if not (path / "config.yaml").is_file():
        return None
    started = (path / "config.yaml").stat().st_mtime
    info = RunInfo(name=path.name, status="unknown", started=started, pid=-1)
    evaluation = path / "eval.json"
    try:
        summary = json.loads(evaluation.read_text(encoding="utf-8")) if evaluation.is_file() else None
    except (OSError, ValueError):
        summary = None  # a half-written eval.json: list the run anyway
    if isinstance(summary, dict):
        info.status, info.task, info.model = "completed", summary.get("task"), summary.get("model")
        info.finished = evaluation.stat().st_mtime
        info.primary_metric = summary.get("primary_metric")
        scores = [m.get(info.primary_metric) for m in summary.get("models", {}).values()]
        info.best_metric = best_of([s for s in scores if isinstance(s, int | float)], info.primary_metric)
    return info


def best_of(values: list[float], metric: str | None) -> float | None:
    if not values:
        return None
    return max(values) if metric is None or greater_is_better(metric) else min(values)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys: {'train': {'lr': 1}} -> {'train.lr': 1}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with suppress(OSError), open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie (killed, not yet reaped) writes nothing
    return True
