"""The SQLite run index (track/index.py): migrations, updates, and every failure a warning, never an error."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from tunewise.errors import TunewiseError
from tunewise.track import index
from tunewise.track.index import COLUMNS, INDEX_NAME, MIGRATIONS, IndexTooNew


def row(name: str, metric: float | None = 0.5) -> tuple:
    values = {"name": name, "path": f"/runs/{name}", "status": "completed", "started": 1.0, "best_metric": metric}
    return tuple(values.get(column) for column in COLUMNS)


def names(workspace: Path) -> list[str]:
    with closing(index.open_index(workspace)) as conn:
        return [r["name"] for r in conn.execute("SELECT name FROM runs ORDER BY name")]


class Warnings(list):
    def __call__(self, message: str) -> None:
        self.append(message)


def test_a_new_index_has_the_current_schema(tmp_path: Path):
    with closing(index.open_index(tmp_path / "ws")) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        columns = [r[1] for r in conn.execute("PRAGMA table_info(runs)")]
    assert columns == list(COLUMNS) and (tmp_path / "ws" / INDEX_NAME).is_file()


def test_migrating_an_index_of_an_older_schema_keeps_its_rows(tmp_path: Path):
    db = tmp_path / INDEX_NAME
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(MIGRATIONS[0])
        conn.execute("INSERT INTO runs (name, path, status) VALUES ('old', '/runs/old', 'completed')")
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
    with closing(index.connect(db)) as conn:
        assert index.migrate(conn) == len(MIGRATIONS)
        assert conn.execute("SELECT name, validation_metric FROM runs").fetchall() == [("old", None)]


def test_an_index_of_a_newer_tunewise_is_refused_and_left_as_it_is(tmp_path: Path):
    db = tmp_path / INDEX_NAME
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(IndexTooNew, match="written by a newer tunewise"):
        index.open_index(tmp_path)
    warnings = Warnings()
    assert not index.replace_all(tmp_path, [row("a")], warnings)
    assert "it was left unchanged (the run directories are the truth)" in warnings[0]


def test_replace_upsert_and_forget_keep_the_index_in_step(tmp_path: Path):
    warnings = Warnings()
    assert index.replace_all(tmp_path, [row("a"), row("b")], warnings)
    assert index.upsert(tmp_path, row("c"), warnings, lambda: [])
    assert index.upsert(tmp_path, row("a", 0.9), warnings, lambda: [])  # the same run again: updated, not doubled
    assert index.forget(tmp_path, "/runs/b", warnings, lambda: [])
    assert names(tmp_path) == ["a", "c"] and warnings == []
    with closing(index.open_index(tmp_path)) as conn:
        assert conn.execute("SELECT best_metric FROM runs WHERE name = 'a'").fetchone()[0] == 0.9
    assert index.replace_all(tmp_path, [], warnings) and names(tmp_path) == []


@pytest.mark.parametrize("damage", ["garbage", "wrong tables"])
def test_a_corrupt_index_is_set_aside_and_rebuilt_from_the_runs(tmp_path: Path, damage: str):
    db = tmp_path / INDEX_NAME
    if damage == "garbage":
        db.write_bytes(b"this is not an sqlite database" * 100)
    else:  # claims the current schema but has no runs table
        with closing(sqlite3.connect(db)) as conn:
            conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
    (tmp_path / f"{INDEX_NAME}-journal").write_bytes(b"stale")
    warnings = Warnings()
    assert index.upsert(tmp_path, row("new"), warnings, lambda: [row("a"), row("b")])
    assert names(tmp_path) == ["a", "b"]  # rebuilt from all rows, which include the new run
    assert "was corrupt" in warnings[0] and "moved it to runs.db.corrupt" in warnings[0]
    assert (tmp_path / f"{INDEX_NAME}.corrupt").is_file() and not (tmp_path / f"{INDEX_NAME}-journal").exists()


def test_an_index_that_is_not_a_regular_file_is_never_opened(tmp_path: Path):
    os.mkfifo(tmp_path / INDEX_NAME)  # SQLite's first read of a FIFO would block forever
    with pytest.raises(TunewiseError, match="is not a regular file; remove it"):
        index.open_index(tmp_path)
    warnings = Warnings()
    assert not index.replace_all(tmp_path, [row("a")], warnings) and "left unchanged" in warnings[0]


def test_a_workspace_that_cannot_be_created_is_a_warning(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    warnings = Warnings()
    assert not index.replace_all(tmp_path / "file" / "ws", [row("a")], warnings)
    assert "was not updated" in warnings[0] and "not a directory" in warnings[0].lower()


@pytest.mark.parametrize(
    ("message", "said"),
    [
        ("database or disk is full", "no space left on device"),
        ("database is locked", "another tunewise process holds it"),
        ("something else", "something else (SQLite error)"),
    ],
)
def test_sqlite_failures_are_named_with_what_to_do(tmp_path: Path, message: str, said: str):
    assert said in index.index_problem(sqlite3.OperationalError(message), tmp_path / INDEX_NAME)


def test_a_full_disk_names_the_free_space_and_how_the_index_is_rebuilt(tmp_path: Path):
    text = index.index_problem(sqlite3.OperationalError("database or disk is full"), tmp_path / INDEX_NAME)
    assert "free there" in text and "`tunewise runs list` rebuilds it from the run directories" in text
