"""What curation keeps per record between its stages: a spool file of the rows, small per-row arrays, and each
set step's features in files on disk (read back as memory maps), so memory does not hold the records."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tunewise.curate.chain import ChunkOutput

PER_ROW = ("lines", "splits", "status", "categories", "length_in", "length_out")


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
    """Every chunk's output, in input order."""

    folder: Path
    sources: list[str] = field(default_factory=list)  # a row's source is an index into this list
    labels: list[str] = field(default_factory=list)  # a row's label is an index into this list (-1: none)
    columns: dict[str, Column] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=dict)
    rows: int = 0

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.spool = self.folder / "spool.jsonl"
        self.spool.write_text("")
        self._source_codes: dict[str, int] = {}
        self._label_codes: dict[str, int] = {}

    def add(self, chunk: ChunkOutput) -> None:
        if chunk.start != self.rows:
            raise AssertionError(f"chunk at row {chunk.start} after {self.rows} rows: chunks out of order")
        with self.spool.open("a", encoding="utf-8") as fh:
            fh.writelines(line + "\n" for line in chunk.spool)
        n = len(chunk.spool)
        self.column("source").append(
            np.array([self._code(self._source_codes, self.sources, s) for s in chunk.sources], dtype=np.int32)
        )
        codes = [-1 if x is None else self._code(self._label_codes, self.labels, x) for x in chunk.labels]
        self.column("label").append(np.array(codes, dtype=np.int32))
        for name in PER_ROW:
            self.column(name).append(getattr(chunk, name))
        for slot in {*self.changed_slots(), *chunk.changes}:
            self.column(f"changes-{slot}").append(chunk.changes.get(slot, np.zeros(n, dtype=np.uint8)), self.rows)
        for slot, fed in chunk.fed.items():
            self.column(f"fed-{slot}").append(fed)
            for name, values in chunk.features[slot].items():
                self.column(f"feature-{slot}-{name}").append(values)
        for slot, seconds in chunk.seconds.items():
            self.seconds[slot] = self.seconds.get(slot, 0.0) + seconds
        self.rows += n

    def column(self, name: str) -> Column:
        if name not in self.columns:
            self.columns[name] = Column(self.folder / f"{name}.bin")
        return _Backfilled(self.columns[name]) if name.startswith("changes-") else self.columns[name]

    def changed_slots(self) -> list[int]:
        return [int(name.split("-")[1]) for name in self.columns if name.startswith("changes-")]

    def read(self, name: str) -> np.ndarray:
        return self.columns[name].read() if name in self.columns else np.zeros(0)

    def features(self, slot: int, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Slot's features for these global rows (each fed to the slot): row-aligned, ragged ones regathered."""
        fed = self.read(f"fed-{slot}")
        at = np.searchsorted(fed, rows)
        prefix = f"feature-{slot}-"
        names = [n[len(prefix) :] for n in self.columns if n.startswith(prefix)]
        out: dict[str, np.ndarray] = {}
        for name in names:
            values = self.read(prefix + name)
            if name + "#count" in names:  # ragged: the selected rows' runs of the flat array
                counts = self.read(prefix + name + "#count")
                starts = np.cumsum(counts) - counts
                chosen = np.asarray(counts[at])
                offsets = np.repeat(starts[at] - (np.cumsum(chosen) - chosen), chosen)
                out[name] = np.asarray(values[offsets + np.arange(chosen.sum())])
            elif not name.endswith("#count"):
                out[name] = values[at] if len(values) else values
            else:
                out[name] = np.asarray(values[at])
        return out

    def where(self, row: int, sources: np.ndarray, lines: np.ndarray) -> str:
        return f"{self.sources[sources[row]]}:{lines[row]}"

    @staticmethod
    def _code(codes: dict[str, int], names: list[str], value: str) -> int:
        if value not in codes:
            codes[value] = len(names)
            names.append(value)
        return codes[value]


@dataclass
class _Backfilled:
    """A per-row column that appears mid-stream (a chunk with the first change): zeros for the rows before."""

    column: Column

    def append(self, values: np.ndarray, rows_before: int = 0) -> None:
        if self.column.rows < rows_before:
            self.column.append(np.zeros(rows_before - self.column.rows, dtype=values.dtype))
        self.column.append(values)
