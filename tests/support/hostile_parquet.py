"""Hostile Parquet files for tests/system/test_fuzz_inputs.py: wrong column types, missing and repeated columns,
values Python cannot hold, strings that are not UTF-8, truncated and garbage files (see tests/hostile.py).
"""

from __future__ import annotations

import io
from typing import Any

from hypothesis import strategies as st

from support.hostile import KINDS, RENAMES, REQUIRED, SIZES, Case, nonblank, valid_fields

FIELD_TYPES = ("string", "string", "string", "large_string", "dictionary", "int64", "float64", "bool", "list",
               "struct", "binary", "null", "missing")  # fmt: skip
EXTRA_TYPES = ("string", "int64", "float64", "bool", "date_ok", "date_overflow", "timestamp", "binary", "list",
               "struct", "bad_utf8", "decimal")  # fmt: skip


def _bad_utf8_array(pa: Any, values: list[bytes]) -> Any:
    """A string column holding bytes that are not UTF-8: pyarrow builds it unchecked, as a foreign writer might."""
    offsets = [0]
    for value in values:
        offsets.append(offsets[-1] + len(value))
    buffers = [
        None,
        pa.py_buffer(b"".join(int.to_bytes(o, 4, "little") for o in offsets)),
        pa.py_buffer(b"".join(values)),
    ]
    return pa.Array.from_buffers(pa.string(), len(values), buffers)


@st.composite
def _column(draw: st.DrawFn, pa: Any, kind: str, n: int, size: int) -> tuple[Any, list[bool]]:
    """A column of n rows of the given type, and per row whether the value is a valid field value."""
    if kind == "messages":
        rows = [draw(valid_fields("chat", size))["messages"] for _ in range(n)]
        struct = pa.struct([("role", pa.string()), ("content", pa.string())])
        return pa.array(rows, pa.list_(struct)), [True] * n
    if kind in ("string", "large_string", "dictionary"):
        values = [draw(st.one_of(nonblank(size), nonblank(size), st.sampled_from(["", "  ", None]))) for _ in range(n)]
        array = pa.array(values, pa.large_string() if kind == "large_string" else pa.string())
        array = array.dictionary_encode() if kind == "dictionary" else array
        return array, [isinstance(v, str) and bool(v.strip()) for v in values]
    if kind == "date_overflow":  # days past year 9999: Python's date cannot hold them
        days = [draw(st.sampled_from([0, 19_000, 2**30])) for _ in range(n)]
        return pa.array(days, pa.int32()).cast(pa.date32()), [d < 2**30 for d in days]
    if kind == "bad_utf8":
        values = [draw(st.sampled_from([b"fine", b"\xff\xfe", b"caf\xc3"])) for _ in range(n)]
        return _bad_utf8_array(pa, values), [v == b"fine" for v in values]
    import datetime

    makers = {
        "int64": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
        "float64": (pa.float64(), st.floats()),
        "bool": (pa.bool_(), st.booleans()),
        "list": (pa.list_(pa.int64()), st.lists(st.integers(0, 9), max_size=3)),
        "struct": (pa.struct([("a", pa.int64())]), st.builds(lambda a: {"a": a}, st.integers(0, 9))),
        "binary": (pa.binary(), st.binary(max_size=8)),
        "null": (pa.null(), st.none()),
        "date_ok": (pa.date32(), st.dates(datetime.date(1, 1, 1), datetime.date(9999, 12, 31))),
        "timestamp": (pa.timestamp("us"), st.datetimes(datetime.datetime(1, 1, 1), datetime.datetime(9999, 1, 1))),
        "decimal": (pa.decimal128(10, 3), st.decimals(-(10**6), 10**6, places=3, allow_nan=False)),
    }
    type_, values = makers[kind]
    return pa.array([draw(values) for _ in range(n)], type_), [False] * n  # not a string: an invalid field


@st.composite
def parquet_cases(draw: st.DrawFn, size: int = SIZES["small"], huge: tuple[int, ...] = (0,)) -> Case:
    import pyarrow as pa
    import pyarrow.parquet as pq

    kind = draw(st.sampled_from(KINDS))
    mapping = draw(st.sampled_from([{}, {k: v for k, v in RENAMES.items() if k in REQUIRED[kind]}]))
    n = draw(st.integers(0, 12))
    columns: dict[str, Any] = {}
    oks: dict[str, list[bool]] = {}  # per column and row: is the value acceptable
    notes = []
    for name in REQUIRED[kind]:
        type_ = draw(st.sampled_from(("messages", "messages", "string", "missing") if kind == "chat" else FIELD_TYPES))
        notes.append(f"{name}:{type_}")
        column = mapping.get(name, name)
        if type_ == "missing":
            oks[column] = [False] * n
            continue
        columns[column], oks[column] = draw(_column(pa, type_, n, size))
        if kind == "chat" and type_ != "messages":  # a string is no list of messages
            oks[column] = [False] * n
        string_field = type_ == "string" and kind != "chat"  # a huge string is a valid value here
        if name == REQUIRED[kind][0] and string_field and n and (big := draw(st.sampled_from(huge))):
            values = columns[column].to_pylist()
            columns[column], oks[column][0] = pa.array(["y" * big, *values[1:]], pa.string()), True
            notes.append(f"huge {big}")
    for i, type_ in enumerate(draw(st.lists(st.sampled_from(EXTRA_TYPES), max_size=3))):
        name = f"extra_{i}_{type_}"
        columns[name], ok = draw(_column(pa, type_, n, size))
        notes.append(f"extra:{type_}")
        if type_ in ("date_overflow", "bad_utf8"):  # a value that cannot be read rejects its row
            oks[name] = ok
    valid = [all(ok[i] for ok in oks.values()) for i in range(n)]
    names, arrays = list(columns), list(columns.values())
    duplicate = bool(names) and draw(st.integers(0, 9)) == 0
    if duplicate:
        names.append(names[0])
        arrays.append(arrays[0])
        notes.append("duplicate column")
    table = pa.Table.from_arrays(arrays, names=names) if names else pa.table({"_": pa.array([None] * n, pa.null())})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    data = buffer.getvalue()
    corrupt = draw(st.sampled_from(["none"] * 8 + ["truncated", "garbage", "empty"]))
    if corrupt == "truncated":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif corrupt == "garbage":
        data = draw(st.binary(min_size=1, max_size=200))
    elif corrupt == "empty":
        data = b""
    case = Case("parquet", kind, data, mapping, notes=[*notes, f"corrupt {corrupt}", f"rows {n}"])
    if corrupt != "none" or duplicate:
        case.whole_file_error, case.records, case.record_lines = True, None, None
        return case
    case.records = n
    case.record_lines = set(range(1, n + 1))
    case.must_keep = {i + 1 for i, ok in enumerate(valid) if ok}
    case.must_reject = {i + 1 for i, ok in enumerate(valid) if not ok}
    return case
