"""What curation keeps per record between its stages: spool files of the rows, small per-row arrays (a few
tens of bytes a record), and each set step's features in files on disk (read back as memory maps), so memory
never holds the records themselves.

Curation makes one pass over the input, and then one over the spool for each later segment of the plan
(engine.segments): each pass spools the rows it ran, and a row's latest line is in the spool of the last pass
that saw it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunewise.curate.chain import CHUNK_RECORDS, ChunkOutput, read_spool_line
from tunewise.data.records import Record

PER_ROW = ("lines", "splits", "status", "categories", "length_in", "length_out")
UPDATED = ("status", "categories", "length_out")  # what a later pass changes for the rows it runs


@dataclass
class Column:
    """One array appended chunk by chunk to a file, read back as a read-only memory map."""

    path: Path
    dtype: np.dtype | None = None
    trailing: tuple[int, ...] = ()
    rows: int = 0

    def append(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values)
        if not len(values):  # nothing to add; an empty array's shape may not be the feature's
            return
        if self.dtype is None:
            self.dtype, self.trailing = values.dtype, values.shape[1:]
        with self.path.open("ab") as fh:
            fh.write(values.astype(self.dtype, copy=False).tobytes())
        self.rows += len(values)

    def read(self) -> np.ndarray:
        if self.dtype is None or self.rows == 0:
            return np.zeros((0, *self.trailing), dtype=self.dtype or np.float32)
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.rows, *self.trailing))


@dataclass
class Table:
    """Every chunk's output: per-row arrays in memory, features and spools on disk."""

    folder: Path
    sources: list[str] = field(default_factory=list)  # a row's source is an index into this list
    labels: list[str] = field(default_factory=list)  # a row's label is an index into this list (-1: none)
    columns: dict[str, Column] = field(default_factory=dict)  # features, by "feature-<slot>-<name>"
    seconds: dict[int, float] = field(default_factory=dict)
    per_row: dict[str, np.ndarray] = field(default_factory=dict)  # after the first pass
    changes: dict[int, np.ndarray] = field(default_factory=dict)  # slot -> uint8 change mask per row
    rows: int = 0
    passes: int = 0

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._source_codes: dict[str, int] = {}
        self._label_codes: dict[str, int] = {}
        self._pending: dict[str, list[np.ndarray]] = {}
        self._last_pass: np.ndarray = np.zeros(0, dtype=np.int8)  # per row: the pass whose spool has its line

    def spool(self, number: int) -> Path:
        return self.folder / f"spool-{number}.jsonl"

    def start_pass(self) -> int:
        """A new pass (its spool empty); returns its number."""
        self.finish_first_pass()
        self.spool(self.passes).write_text("")
        self.passes += 1
        return self.passes - 1

    def _close_first_pass(self) -> None:
        """The per-row lists of the first pass become arrays."""
        changes = {k: v for k, v in self._pending.items() if k.startswith("changes-")}
        self.per_row = {name: np.concatenate(parts) for name, parts in self._pending.items() if name not in changes}
        for name, parts in changes.items():
            masks = np.zeros(self.rows, dtype=np.uint8)
            for part in parts:
                masks[part[:, 0]] = part[:, 1]
            self.changes[int(name.split("-")[1])] = masks
        self._pending = {}
        self._last_pass = np.zeros(self.rows, dtype=np.int8)

    def add(self, chunk: ChunkOutput) -> None:
        number = self.passes - 1
        if number == 0 and len(chunk.rows) and chunk.rows[0] != self.rows:
            raise AssertionError(f"chunk at row {chunk.rows[0]} after {self.rows} rows: chunks out of order")
        with self.spool(number).open("a", encoding="utf-8") as fh:
            fh.writelines(line + "\n" for line in chunk.spool)
        if number == 0:
            self._add_first(chunk)
        else:
            for name in UPDATED:
                self.per_row[name][chunk.rows] = getattr(chunk, name)
            self._last_pass[chunk.rows] = number
            self.column(f"pass-{number}-rows").append(chunk.rows)
        for slot, mask in chunk.changes.items():
            if number == 0:
                self._pending.setdefault(f"changes-{slot}", []).append(np.c_[chunk.rows, mask])
            else:
                self.changes.setdefault(slot, np.zeros(self.rows, dtype=np.uint8))[chunk.rows] = mask
        for slot, fed in chunk.fed.items():
            self.column(f"fed-{slot}").append(fed)
            for name, values in chunk.features[slot].items():
                self.column(f"feature-{slot}-{name}").append(values)
        for slot, seconds in chunk.seconds.items():
            self.seconds[slot] = self.seconds.get(slot, 0.0) + seconds

    def _add_first(self, chunk: ChunkOutput) -> None:
        sources = [_code(self._source_codes, self.sources, s) for s in chunk.sources]
        labels = [-1 if x is None else _code(self._label_codes, self.labels, x) for x in chunk.labels]
        self._pending.setdefault("source", []).append(np.array(sources, dtype=np.int32))
        self._pending.setdefault("label", []).append(np.array(labels, dtype=np.int32))
        for name in PER_ROW:
            self._pending.setdefault(name, []).append(getattr(chunk, name))
        self.rows += len(chunk.rows)

    def finish_first_pass(self) -> None:
        if self.passes == 1 and not self.per_row:
            self._close_first_pass()

    def changes_of(self, slot: int) -> np.ndarray:
        """uint8 change mask per row of a record step (zeros when it changed nothing)."""
        return self.changes.get(slot, np.zeros(self.rows, dtype=np.uint8))

    def column(self, name: str) -> Column:
        if name not in self.columns:
            self.columns[name] = Column(self.folder / f"{name}.bin")
        return self.columns[name]

    def read(self, name: str) -> np.ndarray:
        if name in self.per_row:
            return self.per_row[name]
        return self.columns[name].read() if name in self.columns else np.zeros(0)

    def features(self, slot: int, rows: np.ndarray) -> dict[str, Any]:
        """Slot's features for these global rows (each fed to the slot): row-aligned, ragged ones regathered."""
        fed = self.read(f"fed-{slot}")
        at = np.searchsorted(fed, rows)
        prefix = f"feature-{slot}-"
        names = [n[len(prefix) :] for n in self.columns if n.startswith(prefix)]
        out: dict[str, Any] = {}
        for name in names:
            values = self.read(prefix + name)
            if name + "#count" in names:  # ragged: the selected rows' runs of the flat array
                counts = self.read(prefix + name + "#count")
                starts = np.cumsum(counts) - counts
                chosen = np.asarray(counts[at])
                offsets = np.repeat(starts[at] - (np.cumsum(chosen) - chosen), chosen)
                out[name] = np.asarray(values[offsets + np.arange(chosen.sum())])
            elif values.ndim > 1:  # signatures, embeddings: read only the rows a step looks at
                out[name] = Gathered(self.columns[prefix + name], at)
            else:
                out[name] = np.asarray(values[at]) if len(values) else np.asarray(values)
        return out

    def embeddings(self, rows: np.ndarray, records: list[Record]) -> dict[str, np.ndarray]:
        """Embeddings an earlier pass computed for these rows, by text, where the text is still the same."""
        from tunewise.curate.chain import text_hashes

        found: dict[str, np.ndarray] = {}
        current = text_hashes(records)
        for name in [n for n in self.columns if n.startswith("feature-") and n.endswith("-embedding")]:
            slot = int(name.split("-")[1])
            fed = self.read(f"fed-{slot}")
            at = np.clip(np.searchsorted(fed, rows), 0, max(len(fed) - 1, 0))
            hit = np.flatnonzero((fed[at] == rows) & (self.read(f"feature-{slot}-text_hash")[at] == current))
            vectors = self.read(name)
            for i in hit:
                found[records[i].text] = np.asarray(vectors[at[i]])
        return found

    def latest_rows(self, wanted: np.ndarray) -> Iterator[tuple[int, str]]:
        """(row, its latest spool line) for the sorted rows `wanted`, reading each pass's spool once."""
        files = [self.spool(k).open(encoding="utf-8") for k in range(self.passes)]
        try:
            seen = [np.zeros(self.rows, dtype=bool) for _ in files]  # rows each pass spooled, in order
            seen[0][:] = True
            for k in range(1, len(files)):
                if f"pass-{k}-rows" in self.columns:  # else the pass has written nothing (yet)
                    seen[k][self.read(f"pass-{k}-rows")] = True
            wanted_mask = np.zeros(self.rows, dtype=bool)
            wanted_mask[wanted] = True
            for row in range(self.rows):
                lines = [fh.readline() if seen[k][row] else None for k, fh in enumerate(files)]
                if wanted_mask[row]:
                    yield row, lines[self._last_pass[row]] if len(self._last_pass) else lines[0]
        finally:
            for fh in files:
                fh.close()

    def chunks(self, wanted: np.ndarray) -> Iterator[tuple[np.ndarray, list[Record], dict[str, np.ndarray]]]:
        """The rows `wanted` (sorted) as chunks for a later pass: (rows, records, embeddings already known)."""
        batch: list[tuple[int, str]] = []
        for row, line in self.latest_rows(wanted):
            batch.append((row, line))
            if len(batch) == CHUNK_RECORDS:
                yield self._chunk(batch)
                batch = []
        if batch:
            yield self._chunk(batch)

    def _chunk(self, batch: list[tuple[int, str]]) -> tuple[np.ndarray, list[Record], dict[str, np.ndarray]]:
        rows = np.array([row for row, _ in batch], dtype=np.int64)
        records = [read_spool_line(line)[0] for _, line in batch]
        return rows, records, self.embeddings(rows, records)  # type: ignore[arg-type]

    def where(self, row: int, sources: np.ndarray, lines: np.ndarray) -> str:
        return f"{self.sources[sources[row]]}:{lines[row]}"


def _code(codes: dict[str, int], names: list[str], value: str) -> int:
    if value not in codes:
        codes[value] = len(names)
        names.append(value)
    return codes[value]


@dataclass
class Gathered:
    """Rows `at` of a column of [rows, ...] values, read from disk only when indexed. Each read maps the file
    and unmaps it again, so the pages it touched do not stay resident (a 1M-row signature file is ~0.5 GB)."""

    column: Column
    at: np.ndarray

    def __len__(self) -> int:
        return len(self.at)

    def __getitem__(self, index: Any) -> np.ndarray:
        return self._take(self.at[index])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self._take(self.at).astype(dtype or self.dtype, copy=False)

    def _take(self, rows: Any) -> np.ndarray:
        mapped = self.column.read()
        try:
            return np.array(mapped[rows])  # a copy: no view keeps the mapping alive
        finally:
            del mapped

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.at), *self.column.trailing)

    @property
    def ndim(self) -> int:
        return 1 + len(self.column.trailing)

    @property
    def dtype(self) -> np.dtype:
        return self.column.dtype or np.dtype(np.float32)
