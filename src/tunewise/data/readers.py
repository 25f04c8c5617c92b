"""Read JSONL, CSV and Parquet rows with their 1-based line/row numbers, never failing on one bad row.

Input files are treated as hostile: undecodable bytes, lone surrogates, NUL bytes, huge numbers, deeply
nested JSON, broken CSV quotes, oversized records and values a library cannot convert each become a bad
row with a reason (and the field, when one is to blame), so they land in rejects. Only a file that cannot
be read as a whole (missing, not a regular file, compressed, not Parquet, a CSV header that is
undecodable or names a column twice, a CSV record past the size limit) is a DataError. Each bad row's
problem names its RejectCategory where it is found.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunewise.data.files import check_readable, display_path
from tunewise.data.records import MAX_REASON_VALUE, Problem, RejectCategory
from tunewise.errors import DataError

# (line, row, problem, field the problem is in): a good row has no problem, a bad one no row.
Row = tuple[int, dict[str, Any] | None, Problem | None, str | None]
ENCODING_HINT = "fix the file's encoding or set data.encoding, e.g. latin-1"
# A lone surrogate cannot be written as UTF-8: from a JSON escape like "\ud800", or (CSV) an undecodable
# byte that surrogateescape kept in place so the row, not the file, is rejected.
_SURROGATE = re.compile("[\ud800-\udfff]")
# One record (a JSONL line, a CSV record, a Parquet row) may hold this much. A million-token context is
# ~4 MB of text, so no max_length can use more; the bound keeps a runaway file (no line breaks, a CSV
# quote never closed) from being read into memory whole. Bytes for JSONL and Parquet, characters for CSV.
MAX_RECORD_BYTES = 64 << 20
TOO_LARGE = "record too large"  # the start of every such reason
# Values nested deeper than this are refused when read. Without a fixed bound the limit is Python's
# recursion limit minus the caller's stack depth: a line `tunewise curate` keeps could fail `tunewise run`.
MAX_NESTING = 100  # as Parquet's own schema depth limit
QUOTE_HINT = 'close the quote, or double a quote inside a field ("") or quote the whole field'


def read_rows(path: Path, fmt: str = "auto", encoding: str = "utf-8") -> Iterator[Row]:
    fmt = check_readable(path, fmt, encoding)
    readers = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}
    try:
        yield from readers[fmt](path, encoding)
    except OSError as exc:  # permissions, a file vanishing mid-read, I/O errors
        reason = f"cannot read the file: {exc.strerror or exc}"
        raise DataError(display_path(path), 0, None, reason, "check it") from None


def known_labels(labels: list[str], limit: int = 20) -> str:
    """The label set for an "unknown label" reason: at most `limit` labels, each cut to a readable length."""
    shown = [label if len(label) <= MAX_REASON_VALUE else label[: MAX_REASON_VALUE - 3] + "..." for label in labels]
    return ", ".join(shown[:limit]) + (f", ... ({len(labels)} in all)" if len(labels) > limit else "")


def _is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name == "utf-8"


def _too_large(size: int) -> Problem:
    reason = f"{TOO_LARGE}: {size:,} bytes, over the {MAX_RECORD_BYTES >> 20} MiB one record may hold; shorten it"
    return Problem(RejectCategory.RECORD_TOO_LARGE, reason)


def _lines(fh: Any) -> Iterator[tuple[bytes, int]]:
    """(line, size) for each physical line; a line over MAX_RECORD_BYTES comes back as (b"", size) and is
    skipped in chunks, never held whole (a file with no line breaks would otherwise be read at once)."""
    while raw := fh.readline(MAX_RECORD_BYTES + 1):
        if len(raw) <= MAX_RECORD_BYTES or raw.endswith(b"\n"):
            yield raw, len(raw)
            continue
        size = len(raw)
        while not raw.endswith(b"\n") and (raw := fh.readline(1 << 20)):
            size += len(raw)
        yield b"", size


def _read_jsonl(path: Path, encoding: str) -> Iterator[Row]:
    with path.open("rb") as fh:
        for number, (raw, size) in enumerate(_lines(fh), start=1):
            if size and not raw:
                yield number, None, _too_large(size), None
                continue
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                reason = f"not valid {encoding} at byte {exc.start} of the line ({ENCODING_HINT})"
                yield number, None, Problem(RejectCategory.INVALID_ENCODING, reason), None
                continue
            text = text.lstrip("\ufeff") if number == 1 else text
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                reason = f"invalid JSON at column {exc.colno}: {exc.msg}"
                yield number, None, Problem(RejectCategory.INVALID_JSON, reason), None
                continue
            except ValueError as exc:  # e.g. an integer of more than 4300 digits
                reason = f"invalid JSON: {str(exc).split(':')[0]}"
                yield number, None, Problem(RejectCategory.INVALID_JSON, reason), None
                continue
            except RecursionError:
                yield number, None, Problem(RejectCategory.INVALID_JSON, "invalid JSON: nested too deeply"), None
                continue
            if not isinstance(row, dict):
                reason = f"expected a JSON object, got {type(row).__name__}"
                yield number, None, Problem(RejectCategory.DATA_TYPE, reason), None
                continue
            found = _find_unwritable(row)
            if found:
                yield number, None, found[1], found[0]
                continue
            yield number, row, None, None


def _find_unwritable(row: dict[str, Any]) -> tuple[str, Problem] | None:
    """(top-level field, problem) for a value later stages could not write: a lone surrogate (in a key or a
    string, at any depth) or nesting deeper than MAX_NESTING."""
    for key, value in row.items():
        stack: list[tuple[Any, int]] = [(key, 0), (value, 1)]
        while stack:  # iterative: JSON that parsed may still be nested deeper than a recursive walk allows
            item, depth = stack.pop()
            if isinstance(item, str):
                if match := _SURROGATE.search(item):
                    # the key itself may hold the surrogate: name it escaped, so the reject can be written
                    where = key.encode("utf-8", "backslashreplace").decode("utf-8")
                    char = match.group()
                    reason = f"not valid Unicode: lone surrogate {char!r} (from a \\u escape); remove or fix it"
                    return where, Problem(RejectCategory.INVALID_ENCODING, reason)
            elif isinstance(item, dict | list) and depth >= MAX_NESTING:
                reason = f"value nested more than {MAX_NESTING} levels deep; flatten it"
                return _printable(key), Problem(RejectCategory.NESTED_TOO_DEEPLY, reason)
            elif isinstance(item, dict):
                stack += [(k, depth + 1) for k in item] + [(v, depth + 1) for v in item.values()]
            elif isinstance(item, list):
                stack += [(v, depth + 1) for v in item]
    return None


def _printable(name: str) -> str:
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


# -- CSV -----------------------------------------------------------------------------------------------


class _RecordTooLarge(Exception):
    """A CSV physical line past MAX_RECORD_BYTES characters (raised through csv.reader to _csv_records)."""


class _Lines:
    """The physical lines of a CSV file for csv.reader, counted, with the lines of the record being read
    kept: when a quote breaks a record, the lines after the one where the quote opened are read again as
    records of their own (`replay`), so no row is swallowed into the broken one."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.number = 0  # physical lines handed to csv.reader so far
        self.pending: list[str] = []  # the lines of the record being read
        self.replay: deque[str] = deque()

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.replay:
            line = self.replay.popleft()
        else:
            # readline splits at \n, \r\n and \r (newline=""), as csv.reader's own iteration would
            line = self.fh.readline(MAX_RECORD_BYTES + 1)
            if not line:
                raise StopIteration
            if len(line) > MAX_RECORD_BYTES:
                raise _RecordTooLarge
        self.number += 1
        self.pending.append(line)
        return line

    def rewind(self, after: int, first: int) -> None:
        """Read again the pending lines after line `after` (the pending lines start at line `first`)."""
        self.replay.extendleft(reversed(self.pending[after - first + 1 :]))
        self.number = after
        self.pending = []


def _scan_quotes(lines: list[str], first: int, strict: bool = True) -> tuple[int, str]:
    """(line where the last quoted field opened, state) for lines numbered from `first`, read as the
    default csv dialect does. State: "open" (a quoted field runs to the end), "text after quote" (a quoted
    field closes and text follows in the same field; `strict` stops there, as csv's strict mode does;
    otherwise the text joins the field) or "closed"."""
    opened, quoted = first, False
    for number, line in enumerate(lines, start=first):
        i = 0
        while i < len(line):
            if quoted:
                j = line.find('"', i)
                if j < 0:
                    break  # the quoted field goes on on the next line
                if line.startswith('"', j + 1):
                    i = j + 2  # a doubled quote is a quote character
                    continue
                quoted, i = False, j + 1
                if i < len(line) and line[i] not in ",\r\n" and strict:
                    return opened, "text after quote"
            elif line.startswith('"', i):  # i is at the start of a field: a quote here opens a quoted one
                quoted, opened, i = True, number, i + 1
                continue
            j = line.find(",", i)  # an unquoted field (quotes inside it are characters) runs to the next comma
            if j < 0:
                break
            i = j + 1
    return opened, "open" if quoted else "closed"


def _csv_records(src: _Lines, path: Path) -> Iterator[tuple[int, list[str] | None, Problem | None]]:
    """(first line, cells, problem) for each record. csv's strict mode finds broken quotes; the non-strict
    reader would merge every line up to the next quote (or the end) into one record without a word."""
    reader = csv.reader(src, strict=True)
    while True:
        start = src.number + 1
        src.pending = []
        try:
            cells = next(reader)
        except StopIteration:
            return
        except _RecordTooLarge:
            raise DataError(display_path(path), src.number + 1, None, *_runaway(src, start)) from None
        except csv.Error as exc:
            if "field limit" in str(exc):
                raise DataError(display_path(path), start, None, *_runaway(src, start)) from None
            opened, state = _scan_quotes(src.pending, start)
            last = src.number
            reader = csv.reader(src, strict=True)
            if (
                state == "text after quote"
                and opened == last
                and _scan_quotes(src.pending, start, False)[1] == "closed"
            ):
                # Within one line, nothing merged: read it as Excel and csv's default mode do ('"a" b' is 'a b').
                yield start, next(csv.reader(src.pending)), None
                continue
            yield start, None, _quote_problem(state, opened, last, str(exc))
            src.rewind(opened, start)  # the lines after the quote's line are records of their own
            continue
        yield start, cells, None


def _runaway(src: _Lines, start: int) -> tuple[str, str]:
    """(reason, hint) for a CSV record past MAX_RECORD_BYTES: the file as a whole fails, since where the
    next record starts cannot be known (a quote that never closes is the usual cause)."""
    opened, state = _scan_quotes(src.pending, start)
    reason = f"{TOO_LARGE}: over {MAX_RECORD_BYTES >> 20} MiB"
    if state == "open":
        return f"{reason}; the quoted field opened on line {opened} never closes", QUOTE_HINT
    return reason, "shorten it, or check that the file is CSV"


def _quote_problem(state: str, opened: int, last: int, error: str) -> Problem:
    if state == "open":
        reason = (
            f"unterminated quote: the quoted field opened on line {opened} never closes "
            f"(the {last - opened} line(s) after it are read as rows of their own); {QUOTE_HINT}"
        )
    elif state == "text after quote" and last > opened:
        reason = (
            f"unbalanced quote: the quoted field opened on line {opened} runs on to line {last} "
            f"(the lines after line {opened} are read as rows of their own); {QUOTE_HINT}"
        )
    elif state == "text after quote":
        reason = (
            f"stray quote on line {opened}: text follows a closing quote and another quote is left open; {QUOTE_HINT}"
        )
    else:
        return Problem(RejectCategory.INVALID_CSV, f"unreadable CSV: {error}; {QUOTE_HINT}")
    return Problem(RejectCategory.UNBALANCED_QUOTE, reason)


def _read_csv(path: Path, encoding: str) -> Iterator[Row]:
    # utf-8-sig strips a BOM; newline="" lets csv handle CRLF and quoted newlines; surrogateescape keeps
    # an undecodable byte as a marker, so its row is rejected instead of the whole file failing.
    enc = "utf-8-sig" if _is_utf8(encoding) else encoding
    csv.field_size_limit(MAX_RECORD_BYTES)  # long documents (summarization) exceed the 128 KiB default
    line = 0
    try:
        with path.open(encoding=enc, errors="surrogateescape", newline="") as fh:
            records = _csv_records(_Lines(fh), path)
            header = None
            for line, cells, problem in records:  # blank lines before the header are not rows
                if problem:
                    raise DataError(display_path(path), line, None, f"the header: {problem.reason}")
                if cells:
                    header = cells
                    break
            if header is None:
                return  # an empty file: no header, no rows
            _check_header(path, header, line, encoding)
            for line, cells, problem in records:
                if problem:
                    yield line, None, problem, None
                elif cells:  # [] is a blank line
                    yield _csv_row(line, header, cells, encoding)
    except UnicodeDecodeError as exc:  # encodings that surrogateescape cannot cover (e.g. utf-16)
        where = display_path(path)
        raise DataError(where, 0, None, f"not valid {encoding} at byte {exc.start}", ENCODING_HINT) from None


def _check_header(path: Path, header: list[str], line: int, encoding: str) -> None:
    if any(_SURROGATE.search(name) for name in header):
        raise DataError(display_path(path), line, None, f"the header is not valid {encoding}", ENCODING_HINT)
    repeated = [name for name, n in Counter(header).items() if n > 1]
    if repeated:
        # Which of the two columns holds the field would be a guess: every row would be ambiguous.
        reason = f"column {repeated[0]!r} appears twice in the header"
        raise DataError(display_path(path), line, None, reason, "rename one")


def _csv_row(line: int, header: list[str], cells: list[str], encoding: str) -> Row:
    if len(cells) > len(header):
        reason = f"more values than the {len(header)} header columns"
        return line, None, Problem(RejectCategory.EXTRA_VALUES, reason), None
    for name, cell in zip(header, cells, strict=False):
        if match := _SURROGATE.search(cell):
            byte = ord(match.group()) - 0xDC00  # surrogateescape maps byte b to U+DC00 + b
            reason = f"not valid {encoding}: byte 0x{byte:02x} at character {match.start()} ({ENCODING_HINT})"
            return line, None, Problem(RejectCategory.INVALID_ENCODING, reason), name
    row: dict[str, Any] = dict.fromkeys(header)  # missing trailing values read as None, i.e. "missing"
    row.update(zip(header, cells, strict=False))
    return line, row, None, None


# -- Parquet -------------------------------------------------------------------------------------------


def _read_parquet(path: Path, encoding: str) -> Iterator[Row]:
    import pyarrow.parquet as pq

    where = display_path(path)
    hint = "re-export it, or set data.format if it is not Parquet"
    with path.open("rb") as fh:  # ParquetFile, not read_table: it lets the duplicate check below name the column
        try:
            parquet = pq.ParquetFile(fh)
            names = parquet.schema_arrow.names
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise DataError(where, 0, None, f"not a readable Parquet file: {_first_line(exc)}", hint) from None
        repeated = [name for name, n in Counter(names).items() if n > 1]
        if repeated:
            raise DataError(where, 0, None, f"column {repeated[0]!r} appears twice", "rename one")
        # Batch by batch: a small file can unpack to far more than memory holds (a "Parquet bomb").
        batches = parquet.iter_batches(batch_size=1024)
        number = 0
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as exc:
                reason = f"not a readable Parquet file: {_first_line(exc)}"
                raise DataError(where, number + 1, None, reason, hint) from None
            yield from _parquet_batch(batch, number)
            number += batch.num_rows


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _parquet_batch(batch: Any, number: int) -> Iterator[Row]:
    """The rows of one batch; in a batch bigger than one record may hold, each row is measured first."""
    sizes = [batch.slice(i, 1).nbytes for i in range(batch.num_rows)] if batch.nbytes > MAX_RECORD_BYTES else None
    rows: list[dict[str, Any]] | None = None
    if sizes is None:
        try:
            rows = batch.to_pylist()
        except Exception:  # a value Python cannot hold (a date past year 9999, bytes that are not UTF-8)
            rows = None  # convert this batch cell by cell to find and name the culprits
    for i in range(batch.num_rows):
        if sizes is not None and sizes[i] > MAX_RECORD_BYTES:
            yield number + i + 1, None, _too_large(sizes[i]), None
        elif rows is not None:
            yield number + i + 1, rows[i], None, None
        else:
            yield _parquet_row(number + i + 1, batch, i)


def _parquet_row(number: int, batch: Any, i: int) -> Row:
    row: dict[str, Any] = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        try:
            row[name] = column[i].as_py()
        except Exception as exc:  # OverflowError, UnicodeDecodeError, ArrowInvalid, ...
            reason = f"value cannot be read ({type(exc).__name__}: {_first_line(exc)[:120]}); fix the column type"
            return number, None, Problem(RejectCategory.DATA_TYPE, reason), name
    return number, row, None, None
