"""Is a path a data file that can be read? Checked before any command creates anything, so a bad path
leaves no empty run directory or output folder behind, and a pipe or a device never makes a run hang."""

from __future__ import annotations

import codecs
import errno
import os
import stat
from pathlib import Path

from tunewise.errors import ConfigError, DataError


def display_path(path: Path | str) -> str:
    """The path as text that can always be printed and written as UTF-8 (a file name that is not valid
    UTF-8 keeps its bytes as lone surrogates in a Path; they are shown as \\x escapes instead)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def detect_format(path: Path, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    suffixes = [s.lower() for s in path.suffixes]
    for fmt, names in {
        "jsonl": (".jsonl", ".json", ".ndjson"),
        "csv": (".csv",),
        "parquet": (".parquet",),
    }.items():
        if any(s in names for s in suffixes):
            return fmt
    raise DataError(
        display_path(path), 0, None, "unknown file type", "use .jsonl, .csv or .parquet, or set data.format"
    )


def check_readable(path: Path, fmt: str = "auto", encoding: str = "utf-8") -> str:
    """Everything about a data file that can be known without reading it through (a regular file, a known
    format and encoding, not compressed or binary); the format. Cheap: run before anything is created."""
    check_data_file(path)
    fmt = detect_format(path, fmt)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"data.encoding: unknown encoding {encoding!r}; use e.g. utf-8 or latin-1") from None
    try:
        if fmt != "parquet":
            refuse_binary(path, fmt, encoding)
    except OSError as exc:
        raise DataError(
            display_path(path), 0, None, f"cannot read the file: {exc.strerror or exc}", "check it"
        ) from None
    return fmt


_KINDS_OF_FILE = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_data_file(path: Path) -> None:
    """A DataError unless `path` is a regular file this process can open. Cheap (a stat and an open), so
    commands call it before they create anything: a bad path leaves no empty run directory behind."""
    where = display_path(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise DataError(where, 0, None, *_stat_problem(path, exc)) from None
    except ValueError:  # a NUL character in the path
        raise DataError(where, 0, None, "the path contains a NUL character", "check data.train/val/test") from None
    if stat.S_ISDIR(info.st_mode):
        raise DataError(where, 0, None, "is a directory, not a data file", "name a .jsonl, .csv or .parquet file")
    if not stat.S_ISREG(info.st_mode):
        what = next((name for test, name in _KINDS_OF_FILE if test(info.st_mode)), "not a regular file")
        # Reading a pipe or a device could wait forever or never end: only regular files are data.
        raise DataError(where, 0, None, f"is {what}, not a regular file", "copy the data into a file first")
    try:
        path.open("rb").close()
    except OSError as exc:
        raise DataError(where, 0, None, f"cannot be opened: {exc.strerror or exc}", "check its permissions") from None


def _stat_problem(path: Path, exc: OSError) -> tuple[str, str]:
    """(reason, hint) for a path that cannot even be looked at."""
    if exc.errno == errno.ELOOP:
        return "symlink loop: the link leads back to itself", "point the path at the real file"
    if exc.errno == errno.ENOENT and path.is_symlink():
        return f"broken symlink: its target {display_path(os.readlink(path))} does not exist", "fix or remove the link"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        if any(part.startswith("~") for part in path.parts):
            return "file not found", "'~' means the home folder only at the start of a path; write the full path"
        return "file not found", "check the path in data.train/val/test"
    if exc.errno == errno.EACCES:
        return "permission denied (a folder on the path cannot be entered)", "check its permissions"
    return f"cannot be read: {exc.strerror or exc}", "check the path in data.train/val/test"


# Signatures of files that are not text: read line by line they would only give garbage rejects.
_MAGIC = (
    (b"\x1f\x8b", "gzip-compressed", "decompress it first, e.g. gunzip"),
    (b"PK\x03\x04", "a zip archive", "extract the data file first"),
    (b"BZh", "bzip2-compressed", "decompress it first, e.g. bunzip2"),
    (b"\xfd7zXZ\x00", "xz-compressed", "decompress it first, e.g. unxz"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "decompress it first, e.g. unzstd"),
    (b"PAR1", "a Parquet file", "name it .parquet or set data.format: parquet"),
)
_UTF_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def refuse_binary(path: Path, fmt: str, encoding: str) -> None:
    """A DataError for a compressed or other binary file given as JSONL/CSV, and for UTF-16/32 text read
    as UTF-8. Only a known signature followed by bytes that are not UTF-8 counts, so a text file that
    happens to start with "BZh" or "PK" is still read as text."""
    with path.open("rb") as fh:
        head = fh.read(4096)
        fh.seek(max(0, path.stat().st_size - 4))
        tail = fh.read(4)
    if codecs.lookup(encoding).name == "utf-8":
        for bom, name in _UTF_BOMS:
            if head.startswith(bom):
                reason = f"the file is {name.upper()} text (it starts with a {name.upper()} byte order mark)"
                raise DataError(display_path(path), 0, None, reason, f"set data.encoding: {name}")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return
    except UnicodeDecodeError:
        pass
    for magic, what, hint in _MAGIC:
        if head.startswith(magic) and (magic != b"PAR1" or tail == b"PAR1"):  # Parquet ends with it too
            raise DataError(display_path(path), 0, None, f"the file is {what}, not {fmt.upper()}", hint)
