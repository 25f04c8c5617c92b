"""Load train/val/test into Records, check labels, split what is missing, record every reject."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.config import DataConfig
from tunewise.data.readers import brief, known_labels, read_rows
from tunewise.data.records import Record, Reject, build_record
from tunewise.errors import DataError

SKIP_HINT = "fix the record, or set data.on_error: skip to send bad records to rejects.jsonl"


@dataclass
class DataSplits:
    train: list[Record]
    val: list[Record]
    test: list[Record]
    labels: list[str] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    read_counts: dict[str, int] = field(default_factory=dict)


def load_file(path: Path, cfg: DataConfig, need_answer: bool = True) -> tuple[list[Record], list[Reject], int]:
    records, rejects, total = [], [], 0
    for line, row, problem, column in read_rows(path, cfg.format, cfg.encoding):
        total += 1
        item = Reject(str(path), line, column, problem, raw=None) if problem else None
        if item is None and row is not None:
            item = build_record(row, cfg.kind, cfg.fields, str(path), line, need_answer)
        if isinstance(item, Reject):
            _raise_or_keep(item, cfg, rejects)
        else:
            records.append(item)
    return records, rejects, total


def load_splits(cfg: DataConfig, seed: int) -> DataSplits:
    rejects: list[Reject] = []
    counts: dict[str, int] = {}
    loaded: dict[str, list[Record] | None] = {}
    for name in ("train", "val", "test"):
        path = getattr(cfg, name)
        if path is None:
            loaded[name] = None
            continue
        records, bad, total = load_file(path, cfg)
        rejects += bad
        counts[name] = total
        loaded[name] = records
    train = loaded["train"] or []
    labels: list[str] = []
    if cfg.kind == "classification":
        labels = list(cfg.labels) if cfg.labels else sorted({r.fields["label"] for r in train})
        for name, records in loaded.items():
            if records is not None:
                loaded[name] = _check_labels(records, labels, cfg, rejects, inferred=cfg.labels is None)
        train = loaded["train"] or []
    if not train:
        raise DataError(str(cfg.train), 0, None, "no usable training records", "see rejects.jsonl for reasons")

    rng = random.Random(seed)
    test = loaded["test"]
    if test is None:
        train, test = _split(train, cfg.test_fraction, rng, str(cfg.train))
    val = loaded["val"]
    if val is None:
        train, val = _split(train, cfg.val_fraction, rng, str(cfg.train))
    for name, records in (("val", val), ("test", test)):
        if not records:
            source = getattr(cfg, name) or cfg.train
            raise DataError(str(source), 0, None, f"no usable {name} records", "see rejects.jsonl for reasons")
    train = _cap(train, cfg.max_train_examples, rng)
    val = _cap(val, cfg.max_val_examples, rng)
    test = _cap(test, cfg.max_test_examples, rng)
    return DataSplits(train, val, test, labels, rejects, counts)


def _raise_or_keep(reject: Reject, cfg: DataConfig, rejects: list[Reject]) -> None:
    if cfg.on_error == "raise":
        raise DataError(reject.source, reject.line, reject.field, reject.reason, SKIP_HINT)
    rejects.append(reject)


def _check_labels(
    records: list[Record], labels: list[str], cfg: DataConfig, rejects: list[Reject], inferred: bool
) -> list[Record]:
    allowed = set(labels)
    kept = []
    column = cfg.fields.get("label", "label")
    for record in records:
        label = record.fields["label"]
        if label in allowed:
            kept.append(record)
            continue
        known = known_labels(labels)
        reason = f"unknown label {brief(label)} (known: {known}" + (", from the training file)" if inferred else ")")
        _raise_or_keep(Reject(record.source, record.line, column, reason, stage="labels"), cfg, rejects)
    return kept


def _split(
    records: list[Record], fraction: float, rng: random.Random, source: str
) -> tuple[list[Record], list[Record]]:
    """Stratified by label, and copies of one text (case and spacing aside) never straddle the two parts."""
    strata: dict[str, dict[str, list[Record]]] = {}
    for record in records:
        text_key = " ".join(record.text.casefold().split())
        strata.setdefault(str(record.label or ""), {}).setdefault(text_key, []).append(record)
    keep, held = [], []
    for label in sorted(strata):
        copies = list(strata[label].values())
        rng.shuffle(copies)
        size = sum(map(len, copies))
        target = round(size * fraction) if size > 1 else 0
        taken = 0
        for group in copies:
            (held if taken < target else keep).extend(group)
            taken += len(group) if taken < target else 0
    if not held or not keep:  # e.g. one text copied many times: its copies all go to one side
        raise DataError(
            source,
            0,
            None,
            "too few records to split off a validation/test set (copies of one text stay on one side)",
            "provide data.val and data.test files",
        )
    rng.shuffle(keep)
    rng.shuffle(held)
    return keep, held


def _cap(records: list[Record], limit: int | None, rng: random.Random) -> list[Record]:
    if limit is None or len(records) <= limit:
        return records
    picked = rng.sample(range(len(records)), limit)
    return [records[i] for i in sorted(picked)]
