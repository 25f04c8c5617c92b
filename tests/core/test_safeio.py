"""core.safeio: whole-or-nothing file and directory writes, appends that leave no half line, reads that refuse what
is not a regular file of the expected size, and write failures named in one line with the free space."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tunewise.core import safeio
from tunewise.core.safeio import (
    STAGING_PREFIX,
    Unreadable,
    append_text,
    describe_failure,
    failure_errno,
    free_space,
    human_size,
    open_regular,
    publish_dir,
    read_json_file,
    read_regular,
    replace_text,
    save_dir_atomically,
    staging_pid,
    write_failure,
)
from tunewise.errors import TunewiseError


def _no_space(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


# --- replacing and appending ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("durable", [True, False])
def test_replace_text_swaps_the_whole_file_and_leaves_no_temporary(tmp_path: Path, durable: bool) -> None:
    path = tmp_path / "run.json"
    path.write_text("old content that is longer than the new one\n")
    replace_text(path, "new\n", durable=durable)
    assert path.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_replace_text_keeps_the_usual_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        replace_text(tmp_path / "run.json", "{}")
    finally:
        os.umask(umask)
    assert (tmp_path / "run.json").stat().st_mode & 0o777 == 0o644  # readable by a team, unlike mkstemp's 0600


def test_a_failed_replace_keeps_the_old_file_and_says_why_in_one_line(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "run.json"
    path.write_text("old")
    monkeypatch.setattr(os, "fsync", _no_space)
    with pytest.raises(TunewiseError) as caught:
        replace_text(path, "new")
    message = str(caught.value)
    assert message.startswith(f"cannot write {path}: no space left on device (errno 28); ")
    assert "free there; free some space (or point output.dir at another disk)" in message
    assert "\n" not in message
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_append_text_appends(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    append_text(path, "a\n")
    append_text(path, "b\n")
    assert path.read_text() == "a\nb\n"


class _HalfWriter:
    """A file whose write gets half the text onto the disk, then fails as a full disk does."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh

    def __enter__(self) -> _HalfWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()

    def tell(self) -> int:
        return self.fh.tell()

    def flush(self) -> None:
        self.fh.flush()

    def write(self, text: str) -> None:
        self.fh.write(text[: len(text) // 2])
        self.fh.flush()
        raise OSError(errno.ENOSPC, "No space left on device")


def test_an_append_cut_short_by_a_full_disk_is_taken_back(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n')
    real_open = Path.open
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: _HalfWriter(real_open(self, *a, **k)))
    with pytest.raises(TunewiseError, match=r"metrics\.jsonl: no space left on device .*; continue with --resume"):
        append_text(path, '{"step": 2, "loss": 0.5}\n', hint="continue with --resume")
    monkeypatch.undo()
    assert path.read_text() == '{"step": 1}\n'  # no half line for the next append to be glued to
    append_text(path, '{"step": 2}\n')
    assert path.read_text().splitlines() == ['{"step": 1}', '{"step": 2}']


# --- naming a failed write -----------------------------------------------------------------------------------------


def test_the_errno_is_found_through_wrapping_exceptions_and_in_the_text() -> None:
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert failure_errno(outer) == errno.EDQUOT
    assert failure_errno(RuntimeError("write: No space left on device")) == errno.ENOSPC  # no errno, only its text
    assert failure_errno(RuntimeError("something else")) is None


def test_the_hint_fits_the_cause(tmp_path: Path) -> None:
    target = tmp_path / "f"
    full = str(write_failure(OSError(errno.ENOSPC, "x"), target, hint="free space, then --resume"))
    assert full.endswith("free there; free space, then --resume")
    denied = str(write_failure(PermissionError(errno.EACCES, "x"), target, hint="free space, then --resume"))
    assert "permission denied (errno 13)" in denied  # the full-disk hint is not advice for a permission problem
    assert denied.endswith("check the directory's permissions, or point output.dir elsewhere")
    read_only = str(write_failure(OSError(errno.EROFS, "x"), target))
    assert read_only.endswith("point output.dir at a writable disk")
    other = str(write_failure(OSError(errno.EIO, "x"), target))
    assert "input/output error (errno 5)" in other and other.endswith("run the command again once that is fixed")


def test_a_failure_without_an_errno_on_a_full_disk_is_named_as_one(tmp_path: Path, monkeypatch) -> None:
    torch_style = RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    roomy = describe_failure(torch_style, tmp_path)
    assert roomy.startswith("RuntimeError: PytorchStreamWriter") and "no space" not in roomy
    monkeypatch.setattr(safeio, "free_space", lambda where: 1024)
    full = describe_failure(torch_style, tmp_path)
    assert full == f"no space left on device (errno 28) (RuntimeError: {torch_style}); 1.0 KB free there"


def test_free_space_is_read_at_the_nearest_existing_parent(tmp_path: Path) -> None:
    assert free_space(tmp_path / "not" / "yet" / "made") == free_space(tmp_path) > 0


@pytest.mark.parametrize(
    ("size", "text"), [(0, "0 bytes"), (1023, "1023 bytes"), (1024, "1.0 KB"), (5 << 20, "5.0 MB"), (3 << 30, "3.0 GB")]
)
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text


# --- reading -------------------------------------------------------------------------------------------------------


def test_a_regular_file_within_the_limit_is_read(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_bytes(b"x" * 100)
    assert read_regular(path, 100) == b"x" * 100
    (tmp_path / "link.json").symlink_to(path)
    assert read_regular(tmp_path / "link.json", 100) == b"x" * 100


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "run.json"
    os.mkfifo(fifo)  # no writer: a plain open() would block forever
    with pytest.raises(Unreadable, match=r"run\.json is not a regular file \(a FIFO, socket or device\)"):
        read_regular(fifo, 1 << 20)
    with pytest.raises(Unreadable, match="not a regular file"):
        read_json_file(fifo, 1 << 20)
    assert open_regular(fifo) is None


def test_a_file_larger_than_expected_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"x" * 2048)
    with pytest.raises(Unreadable, match=r"metrics\.jsonl is 2\.0 KB, more than the 1\.0 KB expected"):
        read_regular(path, 1024)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: None, "is missing"),
        (lambda p: p.mkdir(), "is a directory, not a file"),
    ],
)
def test_missing_files_and_directories_are_named(tmp_path: Path, make: Any, reason: str) -> None:
    path = tmp_path / "eval.json"
    make(path)
    with pytest.raises(Unreadable, match=reason):
        read_regular(path, 1024)
    assert open_regular(path) is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "eval.json is empty"),
        (b"  \n", "eval.json is empty"),
        (b"\xff\xfe{}", "eval.json is not UTF-8 text"),
        (b'{"a": 1,\n "b": }', r"eval.json is not valid JSON \(line 2, column 7\)"),
        (b"[" * 100_000 + b"]" * 100_000, "eval.json is not valid JSON"),
    ],
)
def test_json_that_cannot_be_read_is_one_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "eval.json"
    path.write_bytes(content)
    with pytest.raises(Unreadable, match=reason):
        read_json_file(path, 1 << 20)


def test_json_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "eval.json"
    path.write_text(json.dumps({"metric": 0.5, "rows": [1, 2]}))
    assert read_json_file(path, 1 << 20) == {"metric": 0.5, "rows": [1, 2]}


def test_open_regular_gives_a_readable_descriptor(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    fd = open_regular(path)
    assert fd is not None
    try:
        assert os.read(fd, 10) == b"abc"
    finally:
        os.close(fd)


# --- directories ---------------------------------------------------------------------------------------------------


def _write_files(files: dict[str, str]) -> Any:
    def write(staged: Path) -> None:
        for name, text in files.items():
            (staged / name).parent.mkdir(parents=True, exist_ok=True)
            (staged / name).write_text(text)

    return write


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_directory_is_saved_whole_and_replaces_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    save_dir_atomically(target, _write_files({"a.json": "1", "old.bin": "x"}))
    save_dir_atomically(target, _write_files({"a.json": "2", "sub/b.json": "3"}))
    assert _tree(target) == {"a.json": "2", "sub/b.json": "3"}  # replaced, not merged: old.bin is gone
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no staging or set-aside directory left


def test_the_staging_directory_is_unique_beside_the_target_and_names_the_writer(tmp_path: Path) -> None:
    seen: list[Path] = []
    for _ in range(2):
        save_dir_atomically(tmp_path / "adapter", lambda staged: seen.append(staged))
    assert seen[0] != seen[1]
    for staged in seen:
        assert staged.parent == tmp_path and staged.name.startswith(f"{STAGING_PREFIX}adapter-")
        assert staging_pid(staged.name) == os.getpid()  # so a resume can tell a killed writer's leftovers


def test_a_failed_write_keeps_the_old_directory_and_leaves_no_staging(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    save_dir_atomically(target, _write_files({"a.json": "1"}))

    def fail_halfway(staged: Path) -> None:
        (staged / "a.json").write_text("2")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        save_dir_atomically(target, fail_halfway)
    assert _tree(target) == {"a.json": "1"}
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_every_staged_file_and_directory_is_fsynced_before_the_rename(tmp_path: Path, monkeypatch) -> None:
    synced: list[Path] = []
    real_fsync_path = safeio.fsync_path
    target = tmp_path / "adapter"

    def fsync_path(path: Path) -> None:
        synced.append(path)
        real_fsync_path(path)

    def publish(staged: Path, final: Path) -> None:
        assert set(synced) >= {staged, staged / "sub", staged / "a.json", staged / "sub" / "b.json"}
        publish_dir(staged, final)

    monkeypatch.setattr(safeio, "fsync_path", fsync_path)
    monkeypatch.setattr(safeio, "publish_dir", publish)
    save_dir_atomically(target, _write_files({"a.json": "1", "sub/b.json": "2"}))
    assert synced[-1] == tmp_path  # and the rename itself, through the parent directory


def test_a_failed_rename_puts_the_old_directory_back(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "adapter"
    save_dir_atomically(target, _write_files({"a.json": "1"}))
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(src).name.startswith(f"{STAGING_PREFIX}adapter-"):  # the new directory into place
            raise OSError(errno.EIO, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="Input/output error"):
        save_dir_atomically(target, _write_files({"a.json": "2"}))
    monkeypatch.undo()
    assert _tree(target) == {"a.json": "1"}
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


@pytest.mark.parametrize(
    ("name", "pid"),
    [(".tmp-123", 123), (".tmp-adapter-1a2b3c4d-77", 77), (".tmp-replaced-adapter-ff-9", 9), (".tmp-adapter", None)],
)
def test_staging_names_carry_the_writers_pid(name: str, pid: int | None) -> None:
    assert staging_pid(name) == pid
    assert staging_pid(name.removeprefix(STAGING_PREFIX)) is None  # only staging names count
