"""Where curation's last pass puts each row: files streamed to disk (splits and rejects.jsonl), or lists."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import IO, Protocol

from tunewise.data.jsonl import jsonl_line
from tunewise.data.records import Record, Reject

SPLITS = ("train", "val", "test")


class Sink(Protocol):
    def keep(self, record: Record) -> None: ...

    def reject(self, reject: Reject, slot: int | None) -> None:
        """`slot`: the plan slot of the step that dropped it; None for a row the reader rejected."""

    def finish(self, order: list[int | None]) -> None:
        """All rows given: rejects are listed by step, in `order`, then in input order."""


class ListSink:
    def __init__(self) -> None:
        self.kept: list[Record] = []
        self.by_step: dict[int | None, list[Reject]] = {}
        self.ordered: list[Reject] = []

    def keep(self, record: Record) -> None:
        self.kept.append(record)

    def reject(self, reject: Reject, slot: int | None) -> None:
        self.by_step.setdefault(slot, []).append(reject)

    def finish(self, order: list[int | None]) -> None:
        self.ordered = [reject for slot in order for reject in self.by_step.get(slot, [])]


class FileSink:
    """train/val/test.jsonl and rejects.jsonl in `output`, written row by row. Rejects go to one file per step
    in `workdir` first, joined in plan order at the end. Eval records given as files, and the rows their
    reading rejected, follow the curated ones."""

    def __init__(self, output: Path, workdir: Path, given: list[Record] = (), given_rejects: list[Reject] = ()):
        output.mkdir(parents=True, exist_ok=True)
        self.output, self.workdir = output, workdir
        self.given, self.given_rejects = list(given), list(given_rejects)
        self.paths: dict[str, Path] = {}
        self._splits: dict[str, IO[str]] = {}
        self._rejects: dict[int | None, IO[str]] = {}
        for split in {"train", *(r.split or "train" for r in self.given)}:
            self._split(split)

    def keep(self, record: Record) -> None:
        _write(self._split(record.split or "train"), record.to_row())

    def reject(self, reject: Reject, slot: int | None) -> None:
        if slot not in self._rejects:
            self._rejects[slot] = (self.workdir / f"rejects-{slot}.jsonl").open("w", encoding="utf-8")
        _write(self._rejects[slot], reject.to_json())

    def finish(self, order: list[int | None]) -> None:
        for record in self.given:
            self.keep(record)
        for fh in [*self._splits.values(), *self._rejects.values()]:
            fh.close()
        with (self.output / "rejects.jsonl").open("w", encoding="utf-8") as out:
            for slot in order:
                if slot in self._rejects:
                    with (self.workdir / f"rejects-{slot}.jsonl").open(encoding="utf-8") as part:
                        shutil.copyfileobj(part, out)
            for reject in self.given_rejects:
                _write(out, reject.to_json())
        self.paths = {split: self.output / f"{split}.jsonl" for split in SPLITS if split in self._splits}

    def _split(self, split: str) -> IO[str]:
        if split not in self._splits:
            self._splits[split] = (self.output / f"{split}.jsonl").open("w", encoding="utf-8")
        return self._splits[split]


def _write(fh: IO[str], row: dict) -> None:
    fh.write(jsonl_line(row))
