"""The run store: each run directory is the truth; a SQLite index under the workspace makes listing fast.

`run.json` in a run directory says what the run is and how it ended (validated in `runinfo.py`); `sync`
(re)indexes every run directory of the workspace, so runs copied in, deleted or written by an older tunewise stay
in step. Nothing a run directory holds can break listing the others: damaged files give a `damaged` run or are
skipped, non-regular files are never opened for reading, and the index failing to update is a warning.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from tunewise.config import greater_is_better
from tunewise.core.safeio import Unreadable, open_regular, read_json_file, read_regular
from tunewise.core.yaml_input import decode_utf8, parse_yaml
from tunewise.errors import ConfigError, TunewiseError
from tunewise.track import index
from tunewise.track.index import INDEX_NAME, MIGRATIONS, Row, Warn, migrate, open_index
from tunewise.track.runinfo import DAMAGED, RunInfo, read_info, write_info

__all__ = [
    "DAMAGED",
    "INDEX_NAME",
    "MIGRATIONS",
    "RunInfo",
    "migrate",
    "open_index",
    "read_info",
    "write_info",
]

MAX_JSON = 256 << 20  # base_eval.json holds every prediction of the base model
MAX_YAML = 8 << 20
MAX_METRICS_LINE = 1 << 20  # a longer "line" is damage (or a file without newlines), not a logged row


def warn_on_stderr(message: str) -> None:
    Console(stderr=True, soft_wrap=True).print(f"[yellow]warning: {escape(message)}[/]", highlight=False)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows; a partial or corrupt line (a crash mid-write), or a row whose step is not a whole
    number, is skipped, never fatal. Read line by line, so a huge file costs its rows, not its bytes twice."""
    fd = open_regular(path)
    if fd is None:
        return []
    rows = []
    with os.fdopen(fd, "rb") as fh:
        while line := fh.readline(MAX_METRICS_LINE):
            if not line.endswith(b"\n") and len(line) == MAX_METRICS_LINE:
                while (rest := fh.readline(MAX_METRICS_LINE)) and not rest.endswith(b"\n"):
                    pass  # skip the rest of an overlong line
                continue
            try:
                row = json.loads(line.decode("utf-8", errors="replace"))
            except (ValueError, RecursionError):
                continue
            step = row.get("step") if isinstance(row, dict) else None
            if isinstance(row, dict) and (step is None or (isinstance(step, int) and not isinstance(step, bool))):
                rows.append(row)
    return rows


def read_json(path: Path) -> Any:
    """A run file's JSON, or None when it is missing, half-written, not a regular file or not JSON."""
    try:
        return read_json_file(path, MAX_JSON)
    except Unreadable:
        return None


def read_yaml(path: Path) -> dict[str, Any]:
    """A run's config.yaml as a dict ({} when missing or unreadable)."""
    try:
        loaded = parse_yaml(decode_utf8(read_regular(path, MAX_YAML), str(path)), str(path), in_file=True)
    except (Unreadable, ConfigError):  # damaged, or an alias bomb that comparing runs would expand
        return {}
    return loaded if isinstance(loaded, dict) else {}


def sync(workspace: Path, warn: Warn = warn_on_stderr) -> list[tuple[Path, RunInfo]]:
    """Every run directory under the workspace, newest first, written to the index (forgetting deleted ones).
    The runs come from their directories: an index that cannot be written is a warning, not an error."""
    if not os.path.lexists(workspace):
        return []  # nothing has run here yet; listing creates nothing
    if not workspace.is_dir():
        raise TunewiseError(f"{workspace} is not a directory; --dir takes the workspace (output.dir of your configs)")
    runs = sorted(_run_dirs(workspace), key=lambda pair: pair[1].started, reverse=True)
    index.replace_all(workspace, [_row(workspace, path, info) for path, info in runs], warn)
    return runs


def index_run(workspace: Path, run_path: Path, warn: Warn = warn_on_stderr) -> bool:
    """Add or update one run in the index; False (after a warning) when the index could not be written."""
    info = run_info(run_path)
    if info is None:
        return False
    return index.upsert(workspace, _row(workspace, run_path, info), warn, lambda: _all_rows(workspace))


def find_run(workspace: Path, ref: str, exact: bool = False) -> Path:
    """A run by path, by name (its path under the workspace), or, unless `exact`, by a unique part of it."""
    direct = Path(ref)
    if _is_file(direct / "run.json") or _is_file(direct / "config.yaml"):
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


def remove_run(workspace: Path, run_path: Path, warn: Warn = warn_on_stderr) -> None:
    """Delete one run directory: only a real run (run.json or config.yaml + metrics) inside the workspace."""
    try:
        root, target = workspace.resolve(strict=True), run_path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise TunewiseError(f"{run_path}: cannot resolve the path ({exc}); nothing removed") from None
    if root not in target.parents:
        raise TunewiseError(f"{run_path} is not inside the workspace {workspace}; nothing removed")
    if run_info(target) is None:
        raise TunewiseError(f"{run_path} is not a tunewise run directory; nothing removed")
    try:
        shutil.rmtree(target)
    except OSError as exc:
        where = exc.filename or target
        raise TunewiseError(
            f"cannot remove {where}: {exc.strerror or exc}; part of {run_path} may be left, remove it by hand"
        ) from None
    index.forget(workspace, str(target), warn, lambda: _all_rows(workspace))


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte: not a path of a run
        return False


def _row(workspace: Path, path: Path, info: RunInfo) -> Row:
    return (
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
    )


def _all_rows(workspace: Path) -> list[Row]:
    return [_row(workspace, path, info) for path, info in _run_dirs(workspace)]


def display_name(workspace: Path, path: Path) -> str:
    """The run's path under the workspace: sweep trials and ablation arms live a few levels down."""
    try:
        return path.resolve().relative_to(workspace.resolve()).as_posix()
    except (ValueError, OSError, RuntimeError):  # outside the workspace, or a symlink loop
        return path.name


_NOT_RUNS = {"checkpoints", "adapter", "plots", "tensorboard", "data", "mlartifacts", "wandb"}


def _run_dirs(workspace: Path, depth: int = 4) -> Iterator[tuple[Path, RunInfo]]:
    """Run directories under the workspace, including sweep trials and ablation arms (a few levels down).

    A symlinked directory is followed only when it leads to a place inside the workspace not seen yet: a link out
    of the workspace (to `/`, say) is never walked, and a second way to the same run does not list it twice."""
    try:
        root = workspace.resolve(strict=True)
    except (OSError, RuntimeError):
        return
    yield from _walk(workspace, root, {root}, depth)


def _walk(directory: Path, root: Path, seen: set[Path], depth: int) -> Iterator[tuple[Path, RunInfo]]:
    if depth < 0:
        return
    try:
        entries = sorted(directory.iterdir())
    except OSError:  # unreadable (permissions) or gone meanwhile: nothing of it to list
        return
    for path in entries:
        if path.name in _NOT_RUNS or path.name.startswith("."):
            continue
        try:
            if not path.is_dir():
                continue
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):  # a dangling or looping symlink
            continue
        if real in seen or root not in real.parents:
            continue
        seen.add(real)
        info = run_info(path)
        if info is not None:
            yield path, info
        else:
            yield from _walk(path, root, seen, depth - 1)


def run_info(path: Path) -> RunInfo | None:
    """The run's run.json, or what older runs without one still tell (None: not a run directory)."""
    return read_info(path) or _legacy_info(path)


def _legacy_info(path: Path) -> RunInfo | None:
    """Runs from before run.json: enough from config.yaml, metrics.jsonl and eval.json to list them."""
    try:
        if not (path / "config.yaml").is_file():
            return None
        started = (path / "config.yaml").stat().st_mtime
    except OSError:  # removed meanwhile
        return None
    info = RunInfo(name=path.name, status="unknown", started=started, pid=-1)
    summary = read_json(path / "eval.json")  # a half-written or damaged eval.json: list the run anyway
    if isinstance(summary, dict):
        task, model, metric = (summary.get(k) for k in ("task", "model", "primary_metric"))
        metric = metric if isinstance(metric, str) else None
        info.status, info.primary_metric = "completed", metric
        info.task, info.model = (v if isinstance(v, str) else None for v in (task, model))
        try:
            info.finished = (path / "eval.json").stat().st_mtime
        except OSError:
            info.finished = None
        models = summary.get("models")
        cells = [m for m in models.values() if isinstance(m, dict)] if isinstance(models, dict) else []
        scores = [m.get(metric) for m in cells] if metric else []
        info.best_metric = best_of([float(s) for s in scores if _real(s)], metric)
    return info


def _real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1e308


def best_of(values: list[float], metric: str | None) -> float | None:
    if not values:
        return None
    return max(values) if metric is None or greater_is_better(metric) else min(values)


def flatten(tree: dict[str, Any], prefix: str = "", depth: int = 32) -> dict[str, Any]:
    """Nested dicts to dotted keys: {'train': {'lr': 1}} -> {'train.lr': 1}; lists stay values, and so does what
    is nested deeper than any config (a damaged config.yaml must not exhaust the stack)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and depth > 0:
            flat.update(flatten(value, dotted + ".", depth - 1))
        else:
            flat[dotted] = value
    return flat
