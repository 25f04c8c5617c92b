"""The workspace's SQLite index of its runs (`runs.db`): a cache of the run directories, which are the truth.

Failing to update it never fails a command: a full disk, a read-only workspace, a lock held too long or an index
written by a newer tunewise leave it as it is, with a one-line warning, and the runs are listed from their
directories. A corrupt index (garbage bytes, tables that do not match its schema version) is moved aside to
`runs.db.corrupt` and rebuilt from the run directories, with a warning.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import stat
from collections.abc import Callable
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

from tunewise.core.safeio import describe_failure, free_space, human_size
from tunewise.errors import TunewiseError

INDEX_NAME = "runs.db"
Row = tuple[Any, ...]  # the values of COLUMNS
Warn = Callable[[str], None]

# Ordered schema migrations; PRAGMA user_version counts how many have run. Append, never edit.
MIGRATIONS = (
    """CREATE TABLE runs (
        name TEXT PRIMARY KEY, path TEXT NOT NULL, status TEXT NOT NULL, task TEXT, model TEXT,
        started REAL, finished REAL, primary_metric TEXT, best_metric REAL)""",
    "ALTER TABLE runs ADD COLUMN validation_metric TEXT",
    "ALTER TABLE runs ADD COLUMN best_validation REAL",
    "CREATE INDEX runs_started ON runs(started)",
)
COLUMNS = (
    "name",
    "path",
    "status",
    "task",
    "model",
    "started",
    "finished",
    "primary_metric",
    "best_metric",
    "validation_metric",
    "best_validation",
)
_UPSERT = f"INSERT OR REPLACE INTO runs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
# SQLite primary result codes (the low byte of sqlite_errorcode)
_ERROR, _BUSY, _LOCKED, _CORRUPT, _FULL, _SCHEMA, _MISMATCH, _NOTADB = 1, 5, 6, 11, 13, 17, 20, 26
# SQLITE_ERROR here is "no such table/column", "duplicate column name": tables that do not match the version.
_REBUILT_ON = (_ERROR, _CORRUPT, _SCHEMA, _MISMATCH, _NOTADB)


class IndexTooNew(TunewiseError):
    """runs.db was written by a newer tunewise: never rewritten by this one."""


def connect(db: Path) -> sqlite3.Connection:
    """Opens the index file (a seam for tests, which cap its size to fill the "disk")."""
    # autocommit mode: sqlite3 would otherwise commit DDL on its own, splitting a migration from its version bump
    return sqlite3.connect(db, timeout=30, isolation_level=None)


def open_index(workspace: Path) -> sqlite3.Connection:
    """The workspace's index, migrated to the current schema."""
    workspace.mkdir(parents=True, exist_ok=True)
    db = workspace / INDEX_NAME
    with suppress(FileNotFoundError):
        if not stat.S_ISREG(os.stat(db).st_mode):  # a FIFO would block SQLite's first read forever
            raise TunewiseError(f"the run index {db} is not a regular file; remove it")
    conn = connect(db)
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
            raise IndexTooNew(
                f"the run index {_db_of(conn)} was written by a newer tunewise (schema {version}, this one knows "
                f"{len(MIGRATIONS)}); upgrade tunewise"
            )
        for number, statement in enumerate(MIGRATIONS[version:], start=version + 1):
            conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise
    return len(MIGRATIONS)


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is still open. SQLite has already rolled back after e.g. SQLITE_FULL, and a ROLLBACK then
    raises "cannot rollback - no transaction is active", which would hide the error that matters."""
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def replace_all(workspace: Path, rows: list[Row], warn: Warn) -> bool:
    """The index becomes exactly `rows`. False (after a warning) when it could not be written."""
    return _update(workspace, lambda conn: _replace(conn, rows), warn, lambda: rows)


def upsert(workspace: Path, row: Row, warn: Warn, all_rows: Callable[[], list[Row]]) -> bool:
    """Add or update one run; `all_rows` rebuilds the whole index if it turns out to be corrupt."""
    return _update(workspace, lambda conn: conn.execute(_UPSERT, row), warn, all_rows)


def forget(workspace: Path, path: str, warn: Warn, all_rows: Callable[[], list[Row]]) -> bool:
    """Drop the run at `path` (resolved) from the index."""
    return _update(workspace, lambda conn: conn.execute("DELETE FROM runs WHERE path = ?", (path,)), warn, all_rows)


def _replace(conn: sqlite3.Connection, rows: list[Row]) -> None:
    conn.execute("DELETE FROM runs")
    conn.executemany(_UPSERT, rows)


def _update(
    workspace: Path, action: Callable[[sqlite3.Connection], object], warn: Warn, all_rows: Callable[[], list[Row]]
) -> bool:
    db = workspace / INDEX_NAME
    for attempt in range(2):
        try:
            with closing(open_index(workspace)) as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    action(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    rollback(conn)
                    raise
            return True
        except TunewiseError as exc:  # a newer schema, or not a regular file: left as it is
            warn(f"{exc}; it was left unchanged (the run directories are the truth)")
            return False
        except sqlite3.Error as exc:
            if attempt == 0 and _primary(exc) in _REBUILT_ON:
                try:
                    aside = set_aside(db)
                except OSError as move:
                    warn(f"the run index {db} is corrupt ({exc}) and cannot be moved aside: {move}")
                    return False
                warn(
                    f"the run index {db} was corrupt ({exc}); moved it to {aside.name} and rebuilt it from the run "
                    "directories"
                )
                action = functools.partial(_replace, rows=all_rows())
                continue
            warn(f"the run index {db} was not updated: {index_problem(exc, db)}")
            return False
        except OSError as exc:  # creating the workspace, e.g. read-only or full
            warn(f"the run index {db} was not updated: {describe_failure(exc, db)}")
            return False
    return False


def index_problem(exc: sqlite3.Error, db: Path) -> str:
    """An SQLite failure in words, with what to do."""
    code = _primary(exc)
    if code == _FULL:
        free = free_space(db)
        where = f"; {human_size(free)} free there" if free is not None else ""
        return (
            f"no space left on device ({exc}){where}; free some space and `tunewise runs list` rebuilds it from "
            "the run directories"
        )
    if code in (_BUSY, _LOCKED):
        return f"another tunewise process holds it ({exc}); `tunewise runs list` updates it later"
    return f"{exc} (SQLite {getattr(exc, 'sqlite_errorname', None) or 'error'})"


def set_aside(db: Path) -> Path:
    """Move a corrupt index (and any journal, which SQLite would otherwise replay into the new one) out of the way;
    one copy is kept for a bug report."""
    aside = db.with_name(db.name + ".corrupt")
    os.replace(db, aside)
    for suffix in ("-journal", "-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    return aside


def _primary(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF
    text = str(exc).lower()  # older Pythons: by the message
    if "disk is full" in text:
        return _FULL
    if "not a database" in text or "malformed" in text:
        return _CORRUPT
    if "no such table" in text or "no such column" in text:
        return _ERROR
    if "locked" in text:
        return _BUSY
    return None


def _db_of(conn: sqlite3.Connection) -> str:
    row = conn.execute("PRAGMA database_list").fetchone()
    return row[2] if row and row[2] else INDEX_NAME
