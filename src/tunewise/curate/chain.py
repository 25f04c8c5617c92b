"""The map stage of curation: one chunk of read rows through the record steps, and each set step's features.

A chunk's output depends on that chunk alone, so chunks can run anywhere (this process, or Ray workers) and
give the same bytes; the set steps' decisions come later, from the features of every chunk (decide.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np

from tunewise.curate.base import SPLIT_CODES, Context, Step, flatten_features, is_set_step, key_strip_at
from tunewise.data.records import Record, Reject, RejectCategory
from tunewise.errors import TunewiseError

CHUNK_RECORDS = 8192  # rows per chunk: the unit of work, and of embedding batches (so both engines batch alike)
READ_REJECT, PASSED = -2, -1  # a row's status, else the plan slot of the record step that dropped it
CATEGORIES = list(RejectCategory)  # a category as a small int: its place in this list
CHANGE_KINDS = ("mojibake", "nfc", "whitespace")  # normalize's kinds of change, as bits of a mask


@dataclass
class ChunkOutput:
    rows: np.ndarray  # int64 global index of each row
    spool: list[str]  # one JSON line per row: the record as the record steps left it, or the read reject
    sources: list[str]
    lines: np.ndarray  # int64
    labels: list[str | None]
    splits: np.ndarray  # int8 SPLIT_CODES of the split a record came with (0: none)
    status: np.ndarray  # int16: READ_REJECT, PASSED, or the slot of the record step that dropped the row
    categories: np.ndarray  # int16 index into CATEGORIES of a drop; -1 for none
    length_in: np.ndarray  # int32 words of the record as read; -1 for a read reject
    length_out: np.ndarray  # int32 words of the record after the record steps
    changes: dict[int, np.ndarray] = field(default_factory=dict)  # slot -> uint8 CHANGE_KINDS mask per row
    fed: dict[int, np.ndarray] = field(default_factory=dict)  # slot -> global indices fed to that set step
    features: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    seconds: dict[int, float] = field(default_factory=dict)


@dataclass
class Chain:
    """The enabled steps in plan order (slot = place in the plan), run on one chunk at a time."""

    steps: list[tuple[int, Step]]
    ctx: Context
    positions: dict[int, int] = field(default_factory=dict)  # slot -> 1-based place in the config's list

    def run(
        self,
        items: list[Record | Reject],
        rows: np.ndarray | int,
        slots: set[int] | None = None,
        embeddings: dict[str, np.ndarray] | None = None,
    ) -> ChunkOutput:
        """`items` (global indices `rows`, or the first one) through the steps of `slots` (all: None), with
        `embeddings` already computed for some texts (by an earlier pass)."""
        n = len(items)
        if isinstance(rows, int | np.integer):
            rows = np.arange(rows, rows + n, dtype=np.int64)
        records: list[Record | None] = [item if isinstance(item, Record) else None for item in items]
        out = ChunkOutput(
            rows=np.asarray(rows, dtype=np.int64),
            spool=[],
            sources=[item.source for item in items],
            lines=np.array([item.line for item in items], dtype=np.int64),
            labels=[r.label if r is not None else None for r in records],
            splits=np.array([SPLIT_CODES.index(r.split) if r is not None else 0 for r in records], dtype=np.int8),
            status=np.array([PASSED if r is not None else READ_REJECT for r in records], dtype=np.int16),
            categories=np.array(
                [
                    -1 if r is not None else CATEGORIES.index(item.category)
                    for r, item in zip(records, items, strict=True)
                ],
                dtype=np.int16,
            ),
            length_in=np.array([len(r.text.split()) if r is not None else -1 for r in records], dtype=np.int32),
            length_out=np.zeros(n, dtype=np.int32),
        )
        reasons: dict[int, str] = {}
        alive = [i for i in range(n) if records[i] is not None]
        self.ctx.key_strip = key_strip_at(((k, step.settings) for k, step in self.steps), min(slots) if slots else 0)
        self.ctx.forget_embeddings()
        self.ctx.remember_embeddings(embeddings or {})
        for slot, step in self.steps:
            if slots is not None and slot not in slots:
                continue
            started = time.perf_counter()
            batch = [records[i] for i in alive]  # type: ignore[misc]
            with naming_step(step.name, self.positions.get(slot, slot + 1)):
                if is_set_step(step) and batch:
                    out.fed[slot] = out.rows[alive]
                    features = flatten_features(step.features(batch, self.ctx))  # type: ignore[attr-defined]
                    if "embedding" in features:  # so a later pass reuses it only for the same text
                        features["text_hash"] = text_hashes(batch)
                    out.features[slot] = features
                elif not is_set_step(step):
                    alive = self._judge(step, slot, alive, batch, records, out, reasons)
            out.seconds[slot] = time.perf_counter() - started
        self.ctx.forget_embeddings()
        for i, item in enumerate(items):
            record = records[i]
            out.length_out[i] = len(record.text.split()) if record is not None else -1
            out.spool.append(spool_line(record if record is not None else item, reasons.get(i)))
        return out

    def _judge(
        self,
        step: Step,
        slot: int,
        alive: list[int],
        batch: list[Record],
        records: list[Record | None],
        out: ChunkOutput,
        reasons: dict[int, str],
    ) -> list[int]:
        """The rows a record step keeps; its drops and changes noted in `out`."""
        verdicts = list(step(batch, self.ctx))
        if len(verdicts) != len(batch):
            raise TunewiseError(f"curation step {step.name} lost records: a bug, please report it")
        masks = np.zeros(len(records), dtype=np.uint8)
        still = []
        for i, verdict in zip(alive, verdicts, strict=True):
            records[i] = verdict.record
            if verdict.drop is None:
                still.append(i)
                masks[i] = sum(1 << CHANGE_KINDS.index(kind) for kind in verdict.changes if kind in CHANGE_KINDS)
            else:
                out.status[i] = slot
                out.categories[i] = CATEGORIES.index(verdict.category)  # type: ignore[arg-type]
                reasons[i] = verdict.drop
        if masks.any():
            out.changes[slot] = masks
        return still


@contextmanager
def naming_step(name: str, position: int) -> Iterator[None]:
    """A TunewiseError led by the step and its place in the user's list (without the step's own shorter
    prefix, e.g. "curate split: ..."); any other error keeps its traceback, with the step in a note."""
    try:
        yield
    except TunewiseError as exc:
        message = re.sub(rf"^curate {re.escape(name)}( step)?: ", "", str(exc))
        if not message.startswith("curate step "):
            exc.args = (f"curate step {position} ({name}): {message}",)
        raise
    except Exception as exc:  # a bug: the traceback stays, with the step it happened in
        exc.add_note(f"in curate step {position} ({name})")
        raise


def spool_line(item: Record | Reject, reason: str | None = None) -> str:
    if isinstance(item, Reject):
        return json.dumps({"reject": item.to_json()}, default=str)
    row: dict[str, Any] = {
        "kind": item.kind,
        "fields": item.fields,
        "source": item.source,
        "line": item.line,
        "extra": item.extra,
        "split": item.split,
    }
    if reason is not None:
        row["dropped"] = reason
    # default=str: as the output files write values JSON has no type for (a Parquet date, a decimal)
    return json.dumps(row, default=str)


def read_spool_line(line: str) -> tuple[Record | Reject, str | None]:
    """A spool line back as the record (with the reason a record step dropped it, if one did) or reject."""
    row = json.loads(line)
    if "reject" in row:
        r = row["reject"]
        reject = Reject(r["source"], r["line"], r["field"], r["reason"], r["stage"], r["raw"], category=r["category"])
        return reject, None
    record = Record(row["kind"], row["fields"], row["source"], row["line"], row["extra"], row["split"])
    return record, row.get("dropped")


def text_hashes(records: list[Record]) -> np.ndarray:
    digests = b"".join(hashlib.blake2b(r.text.encode(), digest_size=8).digest() for r in records)
    return np.frombuffer(digests, dtype=np.uint64).copy()


def chunked(items: Iterable[Any], size: int = CHUNK_RECORDS) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
