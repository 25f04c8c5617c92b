"""Read JSONL, CSV and Parquet rows with their 1-based line/row numbers, never failing on one bad row."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunewise.errors import DataError

Row = tuple[int, dict[str, Any] | None, str | None]  # (line, row, problem)


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
    readers = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}
    yield from readers[fmt](path, encoding)


def _read_jsonl(path: Path, encoding: str) -> Iterator[Row]:
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                yield number, None, f"not valid {encoding} at byte {exc.start} of the line"
                continue
            text = text.lstrip("\ufeff") if number == 1 else text
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, None, f"invalid JSON at column {exc.colno}: {exc.msg}"
                continue
            if not isinstance(row, dict):
                yield number, None, f"expected a JSON object, got {type(row).__name__}"
                continue
            yield number, row, None


def _read_csv(path: Path, encoding: str) -> Iterator[Row]:
    # utf-8-sig strips a BOM; newline="" lets csv handle CRLF and quoted newlines.
    enc = "utf-8-sig" if encoding.lower().replace("_", "-") == "utf-8" else encoding
    csv.field_size_limit(1 << 30)  # long documents (summarization) exceed the 128 KiB default
    try:
        with path.open(encoding=enc, newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            for row in reader:
                if None in row:
                    yield reader.line_num, None, f"more values than the {len(header)} header columns"
                    continue
                yield reader.line_num, {k: v for k, v in row.items()}, None
    except UnicodeDecodeError as exc:
        raise DataError(
            str(path), 0, None, f"not valid {encoding} at byte {exc.start}", "set data.encoding, e.g. latin-1"
        ) from None
    except csv.Error as exc:
        raise DataError(str(path), reader.line_num, None, f"unreadable CSV: {exc}") from None


def _read_parquet(path: Path, encoding: str) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(str(path), 0, None, f"not a readable Parquet file: {exc}") from None
    for number, row in enumerate(table.to_pylist(), start=1):
        yield number, row, None
