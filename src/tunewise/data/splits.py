"""Load train/val/test into Records, check labels, split what is missing, record every reject."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.config import DataConfig
from tunewise.data.files import check_readable, display_path
from tunewise.data.readers import known_labels, read_rows
from tunewise.data.records import Record, Reject, RejectCategory, brief, build_record
from tunewise.errors import DataError

SKIP_HINT = "fix the record, or set data.on_error: skip to send bad records to rejects.jsonl"
SPLITS = ("train", "val", "test")
# Writes the rejects somewhere the user can read them and says where (a run directory's rejects.jsonl).
SaveRejects = Callable[[list[Reject]], Path | None]
_SPACES = re.compile(r"\s+")


@dataclass
class DataSplits:
    train: list[Record]
    val: list[Record]
    test: list[Record]
    labels: list[str] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    read_counts: dict[str, int] = field(default_factory=dict)


def check_data_paths(cfg: DataConfig) -> None:
    """A DataError for the first of data.train/val/test that is no readable data file (missing, a directory,
    a pipe, compressed, ...): cheap, so commands run it before they create anything."""
    for name in SPLITS:
        path = getattr(cfg, name)
        if path is not None:
            check_readable(path, cfg.format, cfg.encoding)


def load_file(path: Path, cfg: DataConfig, need_answer: bool = True) -> tuple[list[Record], list[Reject], int]:
    records, rejects, total = [], [], 0
    for item in iter_file(path, cfg, need_answer):
        total += 1
        if isinstance(item, Reject):
            _raise_or_keep(item, cfg, rejects)
        else:
            records.append(item)
    return records, rejects, total


def iter_file(path: Path, cfg: DataConfig, need_answer: bool = True) -> Iterator[Record | Reject]:
    """The file's rows in order, each a Record or the Reject saying why it cannot be one (streamed: memory
    holds one row at a time)."""
    source = display_path(path)  # printable and writable even when the file name is not UTF-8
    for line, row, problem, column in read_rows(path, cfg.format, cfg.encoding):
        item = Reject(source, line, column, problem.reason, category=problem.category) if problem else None
        if item is None and row is not None:
            item = build_record(row, cfg.kind, cfg.fields, source, line, need_answer)
        yield item


def load_splits(
    cfg: DataConfig, seed: int, save_rejects: SaveRejects | None = None, curated: dict[str, Path] | None = None
) -> DataSplits:
    """`save_rejects` is called with every reject before a "no usable records" error is raised, so the
    reasons are on disk and the error can say where.

    `curated`: the splits curation wrote (canonical JSONL). The training records come from there; a val/test
    file the user gave is read from the user's own path, as given (curation never edits evaluation data), and
    only a split the user did not give (e.g. made by curation's split step) comes from the curated copy."""
    check_data_paths(cfg)  # a bad val/test path fails before the training file is read
    sources = {name: _source(cfg, name, curated) for name in SPLITS}
    rejects: list[Reject] = []
    counts: dict[str, int] = {}
    loaded: dict[str, list[Record] | None] = {}
    for name, (path, source_cfg) in sources.items():
        if path is None:
            loaded[name] = None
            continue
        records, bad, total = load_file(path, source_cfg)
        rejects += bad
        counts[name] = total
        loaded[name] = records
        if name == "train":  # before val/test are read: their labels are checked against the training file's
            _require(records, total, "train", path, rejects, save_rejects)
    train = loaded["train"] or []
    train_path = sources["train"][0] or cfg.train
    labels: list[str] = []
    if cfg.kind == "classification":
        labels = list(cfg.labels) if cfg.labels else sorted({r.fields["label"] for r in train})
        for name, records in loaded.items():
            if records is not None:
                loaded[name] = _check_labels(records, labels, sources[name][1], rejects, inferred=cfg.labels is None)
        train = loaded["train"] or []
    _require(train, counts["train"], "train", train_path, rejects, save_rejects)

    rng = random.Random(seed)
    test = loaded["test"]
    if test is None:
        train, test = _split(train, cfg.test_fraction, rng, display_path(train_path))
    val = loaded["val"]
    if val is None:
        train, val = _split(train, cfg.val_fraction, rng, display_path(train_path))
    for name, records in (("val", val), ("test", test)):
        given = sources[name][0]
        _require(records, counts.get(name, len(records)), name, given or train_path, rejects, save_rejects)
    train = _cap(train, cfg.max_train_examples, rng)
    val = _cap(val, cfg.max_val_examples, rng)
    test = _cap(test, cfg.max_test_examples, rng)
    return DataSplits(train, val, test, labels, rejects, counts)


def _source(cfg: DataConfig, split: str, curated: dict[str, Path] | None) -> tuple[Path | None, DataConfig]:
    """Where a split is read from, and how (the user's format and field names, or curation's canonical JSONL)."""
    given = getattr(cfg, split)
    if curated is None or (given is not None and split != "train"):
        return given, cfg
    canonical = cfg.model_copy(update={"fields": {}, "format": "jsonl", "encoding": "utf-8"})
    return curated.get(split), canonical


def _require(
    records: list[Record], total: int, split: str, path: Path, rejects: list[Reject], save: SaveRejects | None
) -> None:
    """A DataError naming the file when a split has no usable record: empty, or every record rejected (then
    the rejects are saved first and the error says where to read the reasons)."""
    if records:
        return
    name = "training" if split == "train" else split
    if total == 0:
        reason = f"no usable {name} records: the file is empty (or has only blank lines)"
        raise DataError(display_path(path), 0, None, reason, f"check data.{split}")
    saved = save(rejects) if save is not None and rejects else None
    where = f"see {display_path(saved)} for the reasons" if saved else "see rejects.jsonl for the reasons"
    reason = f"no usable {name} records: all {total} were rejected"
    raise DataError(display_path(path), 0, None, reason, where)


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
        category = RejectCategory.UNKNOWN_LABEL
        _raise_or_keep(Reject(record.source, record.line, column, reason, "labels", category=category), cfg, rejects)
    return kept


def _split(
    records: list[Record], fraction: float, rng: random.Random, source: str
) -> tuple[list[Record], list[Record]]:
    """Stratified by label, and copies of one text (case and spacing aside) never straddle the two parts."""
    strata: dict[str, dict[str, list[Record]]] = {}
    for record in records:
        # one pass of re, not str.split(): a 50 MB text would otherwise become millions of small strings
        text_key = _SPACES.sub(" ", record.text.casefold()).strip()
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
