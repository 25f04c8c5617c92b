"""Reads and writes of the run store that fail in one line, never with a traceback or a hang.

Writes: a full disk (ENOSPC, EDQUOT) or any other OSError becomes a `TunewiseError` naming the path, the cause in
words ("no space left on device"), the free space there and what to do. Replacing writes go through a unique
temporary file, fsynced, then renamed: a reader (or a power cut) sees the old file or the new one, never half.
A directory (an adapter, a model cache entry) is replaced the same way, through a staging directory beside it.

Reads: only regular files are read (a FIFO would block the reader forever, a device could be endless), and a file
larger than the caller expects is refused instead of read into memory.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# Libraries that wrap the OS error without its errno (torch.save) at least often keep its text.
_KNOWN = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM)
NEARLY_FULL = 1 << 20  # under this much free space, a write failing without an errno is a full disk
_HINTS = {
    errno.ENOSPC: "free some space (or point output.dir at another disk) and run the command again",
    errno.EDQUOT: "free some space within your quota (or point output.dir elsewhere) and run the command again",
    errno.EROFS: "point output.dir at a writable disk",
    errno.EACCES: "check the directory's permissions, or point output.dir elsewhere",
    errno.EPERM: "check the directory's permissions, or point output.dir elsewhere",
}


class Unreadable(Exception):
    """A run file that cannot be read as one; the message says why, for the user."""


def failure_errno(exc: BaseException) -> int | None:
    """The errno behind a failed write, also when a library wrapped the OSError (torch, safetensors)."""
    seen: BaseException | None = exc
    while seen is not None:
        code = getattr(seen, "errno", None)
        if isinstance(code, int):
            return code
        seen = seen.__cause__ or seen.__context__
    text = str(exc).lower()
    return next((c for c in _KNOWN if os.strerror(c).lower() in text), None)


def free_space(where: Path) -> int | None:
    """Free bytes on the file system holding `where` (or its nearest existing parent)."""
    for candidate in (where, *where.parents):
        with contextlib.suppress(OSError):
            if candidate.exists():
                return shutil.disk_usage(candidate).free
    return None


def human_size(size: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def _cause(exc: BaseException, where: Path) -> tuple[int | None, str]:
    """(errno, reason in words with the free space there). A failure without an errno on a (nearly) full disk is
    named as the full disk it almost surely is (torch.save says only "file write failed")."""
    code, free = failure_errno(exc), free_space(where)
    if code is None and free is not None and free < NEARLY_FULL:
        code, detail = errno.ENOSPC, f" ({type(exc).__name__}: {str(exc)[:200]})"
    else:
        detail = ""
    reason = f"{os.strerror(code).lower()} (errno {code}){detail}" if code else f"{type(exc).__name__}: {exc}"
    if free is not None:
        reason += f"; {human_size(free)} free there"
    return code, reason


def describe_failure(exc: BaseException, where: Path) -> str:
    """Why a write failed, in words: 'no space left on device (errno 28); 0 bytes free there'."""
    return _cause(exc, where)[1]


def write_failure(exc: BaseException, path: Path, hint: str | None = None) -> TunewiseError:
    """The one-line error for a write to `path` that failed with `exc`: where, why, free space, what to do.
    `hint` replaces the default advice for a full disk (e.g. how to continue the run once space is freed)."""
    code, reason = _cause(exc, path)
    todo = (hint if code in NO_SPACE else None) or _HINTS.get(code or 0, "run the command again once that is fixed")
    return TunewiseError(f"cannot write {path}: {reason}; {todo}")


@contextlib.contextmanager
def writing(path: Path, hint: str | None = None) -> Iterator[None]:
    """Turns an OSError in the block into the one-line `write_failure` for `path` (`hint`: see there)."""
    try:
        yield
    except OSError as exc:
        raise write_failure(exc, path, hint) from exc


def replace_text(path: Path, text: str, durable: bool = True) -> None:
    """Write `path` whole or not at all: a unique temporary file (so concurrent writers never share one), fsynced
    when `durable` (so a power cut cannot leave an empty file under the final name), renamed over the target."""
    with writing(path):
        # O_EXCL on a random name rather than mkstemp: mkstemp's mode 0600 would hide run files from a team
        tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                if durable:
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def append_text(path: Path, text: str, hint: str | None = None) -> None:
    """Append to `path`; when the disk fills mid-write, what was appended is cut off again, so no half line is
    left for the next append to be glued to. `hint`: see `write_failure`."""
    with writing(path, hint), path.open("a", encoding="utf-8") as fh:
        start = fh.tell()
        try:
            fh.write(text)
            fh.flush()
        except OSError:
            with contextlib.suppress(OSError):
                os.truncate(path, start)
            raise


# Hidden (never listed as a run or checkpoint) and ending in the writer's pid, so that a resume can tell the
# staging directory of a killed process (removed) from one a live process is still writing.
STAGING_PREFIX = ".tmp-"


def staging_pid(name: str) -> int | None:
    """The pid of the process that made a staging directory named `name`, if the name carries one."""
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if name.startswith(STAGING_PREFIX) and tail.isdigit() else None


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory's fsync makes the names in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file, then every directory from the deepest up, then `root` itself."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        fsync_path(path)
    for directory in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        fsync_path(directory)
    fsync_path(root)


def publish_dir(staged: Path, final: Path) -> None:
    """Rename the complete directory `staged` to `final` (replacing what is there) and make the rename durable.

    A directory cannot be renamed over a non-empty one, so an existing `final` is first renamed aside, to a staging
    name a resume removes, and deleted only once the new one is in place: never merged into, never lost first."""
    aside = None
    if final.exists():
        aside = final.parent / f"{STAGING_PREFIX}replaced-{final.name}-{secrets.token_hex(4)}-{os.getpid()}"
        os.replace(final, aside)
    try:
        os.replace(staged, final)
    except BaseException:
        if aside is not None:
            with contextlib.suppress(OSError):
                os.replace(aside, final)
        raise
    fsync_path(final.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def save_dir_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """`write(staging_dir)`, then swap the result in for `target`: readers see the old directory or the new one,
    whole, never a mix (replacing one leaves `target` absent only between two renames). The staging directory is
    unique (concurrent writers never share one), beside `target` (so the rename stays on one file system), fsynced
    before the rename, and removed when anything fails."""
    staged = target.parent / f"{STAGING_PREFIX}{target.name}-{secrets.token_hex(4)}-{os.getpid()}"
    staged.mkdir()
    try:
        write(staged)
        fsync_tree(staged)
        publish_dir(staged, target)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; `Unreadable` says why not. Opened non-blocking, so a
    FIFO planted under a run file's name cannot hang the reader; the check is on the opened file, not the name."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise Unreadable(f"{path.name} is missing") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise Unreadable(f"{path.name} cannot be opened ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise Unreadable(f"{path.name} is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise Unreadable(f"{path.name} is not a regular file (a FIFO, socket or device); it is not read")
        if info.st_size > limit:
            raise Unreadable(f"{path.name} is {human_size(info.st_size)}, more than the {human_size(limit)} expected")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise Unreadable(f"{path.name} cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(data) > limit:  # it grew while being read
        raise Unreadable(f"{path.name} is more than the {human_size(limit)} expected")
    return data


def read_json_file(path: Path, limit: int) -> Any:
    """The parsed JSON of a regular file of at most `limit` bytes; `Unreadable` says why not (missing, not a
    regular file, too large, empty, not UTF-8, not JSON with the line and column, nested too deep)."""
    data = read_regular(path, limit)
    if not data.strip():  # e.g. a power cut on a file system that lost the content of the last write
        raise Unreadable(f"{path.name} is empty")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise Unreadable(f"{path.name} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise Unreadable(f"{path.name} is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    except (ValueError, RecursionError):  # RecursionError: [[[[...]]]] thousands deep
        raise Unreadable(f"{path.name} is not valid JSON") from None


def open_regular(path: Path) -> int | None:
    """A file descriptor for reading a regular file (caller closes it), or None for anything else or missing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except (OSError, ValueError):
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.set_blocking(fd, True)
            return fd
    except OSError:
        pass
    os.close(fd)
    return None
