"""`run.json`: what a run is and how it ended, validated in one place.

Every reader of run.json goes through `read_info`, which checks the shape of every field. A run.json that is not
what tunewise writes (hand-edited, damaged, of the wrong type, not a file at all) gives a run with status
`damaged` and the reason in `error`, so one bad run shows as such and never breaks listing, showing or resuming
the others. What can be salvaged from it (task, model, start time) is kept for the listing.
"""

from __future__ import annotations

import json
import os
import re
import reprlib
import time
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunewise.core.processes import process_alive
from tunewise.core.safeio import Unreadable, read_json_file, replace_text

RUN_JSON = "run.json"
MAX_RUN_JSON = 1 << 20  # tunewise writes ~1 KB (the error is cut to 2,000 characters); more is not a run.json
# Statuses a run.json may hold. "crashed" is never stored (see `shown_status`); "damaged" is never stored either.
STATUSES = ("running", "completed", "failed", "interrupted", "pruned", "unknown")
DAMAGED = "damaged"
_LAST_TIME = 253402300799.0  # 9999-12-31: later (or NaN) is no time `time.localtime` can show
_STAMP = re.compile(r"^(\d{8}-\d{6})-")
_PID_RANGE = (-(2**31), 2**31 - 1)
_TEXT_FIELDS = ("name", "task", "model", "primary_metric", "validation_metric", "error")
_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict = 40, 40, 3, 3


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
        if self.finished is None or self.finished < self.started:  # a clock set back: no duration to show
            return None
        return self.finished - self.started

    @property
    def damaged(self) -> bool:
        return self.status == DAMAGED

    @property
    def shown_status(self) -> str:
        """A run still 'running' whose process is gone was killed: say so."""
        if self.status == "running" and not process_alive(self.pid):
            return "crashed"
        return self.status


def write_info(run_path: Path, info: RunInfo) -> None:
    """Replace run.json whole (a unique temp file, fsynced, renamed); a full disk is a one-line TunewiseError."""
    replace_text(run_path / RUN_JSON, json.dumps(asdict(info), indent=2) + "\n")


def read_info(run_path: Path) -> RunInfo | None:
    """The run's run.json: None when there is none, a `damaged` RunInfo saying why when it is not a valid one."""
    target = run_path / RUN_JSON
    if not os.path.lexists(target):
        return None
    try:
        raw = read_json_file(target, MAX_RUN_JSON)
    except Unreadable as exc:
        return _damaged(run_path, {}, [str(exc)])
    return parse_info(raw, run_path)


def parse_info(raw: Any, run_path: Path) -> RunInfo:
    """A RunInfo from run.json's parsed content, every field checked; a `damaged` one listing what is wrong."""
    if not isinstance(raw, dict):
        kind = "null" if raw is None else type(raw).__name__
        return _damaged(run_path, {}, [f"{RUN_JSON} holds a JSON {kind}, not an object"])
    good: dict[str, Any] = {}
    problems: list[str] = []
    for key in RunInfo.__dataclass_fields__:
        if key not in raw:
            continue
        value, problem = _check(key, raw[key])
        if problem:
            problems.append(f"'{key}' is {_short.repr(raw[key])}, expected {problem}")
        else:
            good[key] = value
    for required in ("status", "started"):
        if required not in raw:
            problems.append(f"'{required}' is missing")
    if problems:
        return _damaged(run_path, good, problems)
    good.setdefault("name", run_path.name)
    good.setdefault("pid", -1)  # no pid recorded: never mistaken for a live process (os.getpid() would be)
    return RunInfo(**good)


def _check(key: str, value: Any) -> tuple[Any, str | None]:
    """(the value to keep, None) or (None, what was expected)."""
    if key in _TEXT_FIELDS:
        if value is None and key != "name":
            return None, None
        if not isinstance(value, str) or (key == "name" and not value):
            return None, "a string" if key == "name" else "a string or null"
        # A lone surrogate ("\ud800" is valid JSON) cannot be printed or stored in SQLite: replace it.
        return value.encode("utf-8", "replace").decode("utf-8"), None
    if key == "status":
        ok = isinstance(value, str) and value in STATUSES
        return (value, None) if ok else (None, f"one of {', '.join(STATUSES)}")
    if key in ("started", "finished"):
        if value is None and key == "finished":
            return None, None
        number = _real(value)
        if number is None or not 0 <= number <= _LAST_TIME:
            return None, "a time in seconds since 1970" + (" or null" if key == "finished" else "")
        return number, None
    if key in ("best_metric", "best_validation"):
        if value is None:
            return None, None
        number = _real(value)  # NaN and inf are kept: a diverged run really ends with them
        return (number, None) if number is not None else (None, "a number or null")
    if key == "pid":
        ok = _integer(value) and _PID_RANGE[0] <= value <= _PID_RANGE[1]
        return (value, None) if ok else (None, "a process id")
    if key == "resumes":
        ok = _integer(value) and 0 <= value < 2**31
        return (value, None) if ok else (None, "a count (0 or more)")
    return value, None


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _real(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer beyond a double: 1e400 written out
        return None


def _damaged(run_path: Path, salvaged: dict[str, Any], problems: list[str]) -> RunInfo:
    """A run whose run.json cannot be trusted: listed with what could be read, started at run.json's mtime."""
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    started = salvaged.get("started")  # checked: a real time or absent
    if started is None:
        started = _named_time(run_path.name) or 0.0
    if not started:
        with suppress(OSError):
            started = os.lstat(run_path / RUN_JSON).st_mtime
    return RunInfo(
        name=salvaged.get("name") or run_path.name,
        status=DAMAGED,
        task=salvaged.get("task"),
        model=salvaged.get("model"),
        started=started,
        pid=-1,
        primary_metric=salvaged.get("primary_metric"),
        validation_metric=salvaged.get("validation_metric"),
        error=f"{RUN_JSON} is damaged: {shown}; fix it, or remove the run with `tunewise runs rm`",
    )


def _named_time(name: str) -> float | None:
    """When a run started, from its directory name (<YYYYmmdd-HHMMSS>-<name>)."""
    match = _STAMP.match(name)
    if match is None:
        return None
    try:
        return time.mktime(time.strptime(match[1], "%Y%m%d-%H%M%S"))
    except (ValueError, OverflowError):
        return None
