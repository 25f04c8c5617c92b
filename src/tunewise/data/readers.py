"""Read JSONL, CSV and Parquet rows with their 1-based line/row numbers, never failing on one bad row.

Input files are treated as hostile: undecodable bytes, lone surrogates, NUL bytes, huge numbers, deeply
nested JSON and values a library cannot convert each become a bad row with a reason (and the field, when
one is to blame), so they land in rejects. Only a file that cannot be read as a whole (missing, not
Parquet, a CSV header that is undecodable or names a column twice) is a DataError.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunewise.errors import ConfigError, DataError

# (line, row, problem, field the problem is in): a good row has no problem, a bad one no row.
Row = tuple[int, dict[str, Any] | None, str | None, str | None]
ENCODING_HINT = "fix the file's encoding or set data.encoding, e.g. latin-1"
# A lone surrogate cannot be written as UTF-8: from a JSON escape like "\ud800", or (CSV) an undecodable
# byte that surrogateescape kept in place so the row, not the file, is rejected.
_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_REASON_VALUE = 60  # characters of a bad value quoted in a reason: a 5 MB value must not become the message


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
    raise DataError(str(path), 0, None, "unknown file type", "use .jsonl, .csv or .parquet, or set data.format")


def read_rows(path: Path, fmt: str = "auto", encoding: str = "utf-8") -> Iterator[Row]:
    if not path.is_file():
        raise DataError(str(path), 0, None, "file not found", "check the path in data.train/val/test")
    fmt = detect_format(path, fmt)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"data.encoding: unknown encoding {encoding!r}; use e.g. utf-8 or latin-1") from None
    readers = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}
    try:
        yield from readers[fmt](path, encoding)
    except OSError as exc:  # permissions, a file vanishing mid-read, I/O errors
        raise DataError(str(path), 0, None, f"cannot read the file: {exc.strerror or exc}", "check it") from None


def brief(value: Any, limit: int = MAX_REASON_VALUE) -> str:
    """repr() of a value for a reason or error message, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def known_labels(labels: list[str], limit: int = 20) -> str:
    """The label set for an "unknown label" reason: at most `limit` labels, each cut to a readable length."""
    shown = [label if len(label) <= MAX_REASON_VALUE else label[: MAX_REASON_VALUE - 3] + "..." for label in labels]
    return ", ".join(shown[:limit]) + (f", ... ({len(labels)} in all)" if len(labels) > limit else "")


def _is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name == "utf-8"


def _read_jsonl(path: Path, encoding: str) -> Iterator[Row]:
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                yield number, None, f"not valid {encoding} at byte {exc.start} of the line ({ENCODING_HINT})", None
                continue
            text = text.lstrip("\ufeff") if number == 1 else text
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, None, f"invalid JSON at column {exc.colno}: {exc.msg}", None
                continue
            except ValueError as exc:  # e.g. an integer of more than 4300 digits
                yield number, None, f"invalid JSON: {str(exc).split(':')[0]}", None
                continue
            except RecursionError:
                yield number, None, "invalid JSON: nested too deeply", None
                continue
            if not isinstance(row, dict):
                yield number, None, f"expected a JSON object, got {type(row).__name__}", None
                continue
            found = _find_surrogate(row)
            if found:
                where, char = found
                reason = f"not valid Unicode: lone surrogate {char!r} (from a \\u escape); remove or fix it"
                yield number, None, reason, where
                continue
            yield number, row, None, None


def _find_surrogate(row: dict[str, Any]) -> tuple[str, str] | None:
    """The top-level field holding a lone surrogate (in a key or a string, at any depth), and the character."""
    for key, value in row.items():
        stack: list[Any] = [key, value]
        while stack:  # iterative: JSON that parsed may still be nested deeper than a recursive walk allows
            item = stack.pop()
            if isinstance(item, str):
                if match := _SURROGATE.search(item):
                    # the key itself may hold the surrogate: name it escaped, so the reject can be written
                    return key.encode("utf-8", "backslashreplace").decode("utf-8"), match.group()
            elif isinstance(item, dict):
                stack += [*item.keys(), *item.values()]
            elif isinstance(item, list):
                stack += item
    return None


def _read_csv(path: Path, encoding: str) -> Iterator[Row]:
    # utf-8-sig strips a BOM; newline="" lets csv handle CRLF and quoted newlines; surrogateescape keeps
    # an undecodable byte as a marker, so its row is rejected instead of the whole file failing.
    enc = "utf-8-sig" if _is_utf8(encoding) else encoding
    csv.field_size_limit(1 << 30)  # long documents (summarization) exceed the 128 KiB default
    line = 0
    try:
        with path.open(encoding=enc, errors="surrogateescape", newline="") as fh:
            reader = csv.reader(fh)
            header = next((cells for cells in reader if cells), None)  # blank lines before it are not rows
            if header is None:
                return  # an empty file: no header, no rows
            line = reader.line_num
            _check_header(path, header, line, encoding)
            for cells in reader:
                start, line = line + 1, reader.line_num  # a quoted field may span lines: name the first
                if not cells:
                    continue  # a blank line
                yield _csv_row(start, header, cells, encoding)
    except UnicodeDecodeError as exc:  # encodings that surrogateescape cannot cover (e.g. utf-16)
        raise DataError(str(path), 0, None, f"not valid {encoding} at byte {exc.start}", ENCODING_HINT) from None
    except csv.Error as exc:
        raise DataError(str(path), line + 1, None, f"unreadable CSV: {exc}") from None


def _check_header(path: Path, header: list[str], line: int, encoding: str) -> None:
    if any(_SURROGATE.search(name) for name in header):
        raise DataError(str(path), line, None, f"the header is not valid {encoding}", ENCODING_HINT)
    repeated = [name for name, n in Counter(header).items() if n > 1]
    if repeated:
        # Which of the two columns holds the field would be a guess: every row would be ambiguous.
        raise DataError(str(path), line, None, f"column {repeated[0]!r} appears twice in the header", "rename one")


def _csv_row(line: int, header: list[str], cells: list[str], encoding: str) -> Row:
    if len(cells) > len(header):
        return line, None, f"more values than the {len(header)} header columns", None
    for name, cell in zip(header, cells, strict=False):
        if match := _SURROGATE.search(cell):
            byte = ord(match.group()) - 0xDC00  # surrogateescape maps byte b to U+DC00 + b
            reason = f"not valid {encoding}: byte 0x{byte:02x} at character {match.start()} ({ENCODING_HINT})"
            return line, None, reason, name
    row: dict[str, Any] = dict.fromkeys(header)  # missing trailing values read as None, i.e. "missing"
    row.update(zip(header, cells, strict=False))
    return line, row, None, None


def _read_parquet(path: Path, encoding: str) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        with path.open("rb") as fh:  # ParquetFile, not read_table: it lets the duplicate check below name the column
            table = pq.ParquetFile(fh).read()
    except Exception as exc:  # pyarrow raises several types for corrupt files
        reason = f"not a readable Parquet file: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        raise DataError(str(path), 0, None, reason, "re-export it, or set data.format if it is not Parquet") from None
    repeated = [name for name, n in Counter(table.column_names).items() if n > 1]
    if repeated:
        raise DataError(str(path), 0, None, f"column {repeated[0]!r} appears twice", "rename one")
    number = 0
    for batch in table.to_batches(max_chunksize=4096):
        try:
            rows: list[dict[str, Any]] | None = batch.to_pylist()
        except Exception:  # a value Python cannot hold (a date past year 9999, bytes that are not UTF-8)
            rows = None  # convert this batch cell by cell to find and name the culprits
        for i in range(batch.num_rows):
            number += 1
            yield (number, rows[i], None, None) if rows is not None else _parquet_row(number, batch, i)


def _parquet_row(number: int, batch: Any, i: int) -> Row:
    row: dict[str, Any] = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        try:
            row[name] = column[i].as_py()
        except Exception as exc:  # OverflowError, UnicodeDecodeError, ArrowInvalid, ...
            detail = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            return number, None, f"value cannot be read ({type(exc).__name__}: {detail}); fix the column type", name
    return number, row, None, None
