"""What every curation step shares: the verdict it gives each record, the context it may use, and the two kinds
of step.

A record step (validate, normalize, quality, confidence) judges each record on its own: a pure function over a
batch, run wherever the batch is. A set step (conflicts, dedup, label errors, relevance, split, balance,
decontaminate) needs the whole pool, so it runs in two stages: `features` turns each batch of records into small
keyed data (hashes, MinHash bands, embeddings, scores), and `decide` reads those arrays for the records still in
the pool, in input order, and returns its drops. Only `decide` sees every record, and never as Python objects.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from tunewise.data.records import Record, RejectCategory, reject_category


@dataclass(frozen=True)
class Verdict:
    record: Record
    drop: str | None = None  # None keeps the record; otherwise the reason it is dropped
    category: RejectCategory | None = None  # the drop's category, for counting; a drop without one is a TypeError
    changes: frozenset[str] = frozenset()  # kinds of change made to a kept record, e.g. {"mojibake"}

    def __post_init__(self) -> None:
        if self.drop is not None:
            object.__setattr__(self, "category", reject_category(self.category))
        elif self.category is not None:
            raise TypeError(f"a kept record has no drop category, got {self.category!r}")


def keep(record: Record, changes: Iterable[str] = ()) -> Verdict:
    return Verdict(record, changes=frozenset(changes))


def drop(record: Record, category: RejectCategory, reason: str) -> Verdict:
    return Verdict(record, reason, category)


def cluster_sizes(kept_of_each_drop: Iterable[Hashable]) -> list[int]:
    """Sizes of the duplicate clusters a dedup step found, largest first: for each kept record that others were
    dropped as copies of (one entry per drop naming it), the record itself plus its copies."""
    return sorted((n + 1 for n in Counter(kept_of_each_drop).values()), reverse=True)


class Step(Protocol):
    name: str

    def __call__(self, records: list[Record], ctx: Context) -> Iterator[Verdict]: ...


class RecordStep(Step, Protocol):
    """Judges each record alone: the verdicts for a batch depend on that batch's records only."""


SPLIT_CODES = (None, "train", "val", "test")  # a record's split as a small int: its place in this tuple


@dataclass
class Rows:
    """The records a set step decides on, in input order, as arrays: position i is the i-th record fed."""

    where: Callable[[int], str]  # "file:line" of row i, for reasons
    labels: np.ndarray  # int32 index into label_names; -1: no label
    label_names: list[str]
    splits: np.ndarray  # int8 index into SPLIT_CODES
    features: dict[str, np.ndarray]  # the step's own features, row-aligned (ragged ones: see ragged())

    def __len__(self) -> int:
        return len(self.labels)

    def label(self, i: int) -> str | None:
        return None if self.labels[i] < 0 else self.label_names[self.labels[i]]

    def ragged(self, name: str) -> Iterator[np.ndarray]:
        """Row by row, a feature of varying length per record (stored flat, with `name + "#count"`)."""
        flat, counts = self.features[name], self.features[name + "#count"]
        ends = np.cumsum(counts)
        for end, count in zip(ends, counts, strict=True):
            yield flat[end - count : end]


Reason = str | Callable[[Record], str]  # a callable is given the dropped record when its reject is written


@dataclass
class Decisions:
    """What a set step decided about its rows: the drops by row, and changes to kept rows."""

    drops: dict[int, tuple[RejectCategory, Reason]] = field(default_factory=dict)
    splits: np.ndarray | None = None  # new SPLIT_CODES per row (split)
    extra: dict[int, dict[str, Any]] = field(default_factory=dict)  # fields added to kept rows (label_errors)


class SetStep(Step, Protocol):
    def features(self, records: list[Record], ctx: Context) -> dict[str, Any]:
        """Keyed data per record of one batch: arrays with one row per record, or a list of arrays (ragged)."""
        ...

    def decide(self, rows: Rows, ctx: Context) -> Decisions: ...


def is_set_step(step: Step) -> bool:
    return hasattr(step, "decide")


def verdicts_of(step: SetStep, records: list[Record], ctx: Context) -> Iterator[Verdict]:
    """A set step over an in-memory list: both stages at once, as verdicts in record order."""
    features = flatten_features(step.features(records, ctx))
    names = sorted({r.label for r in records if r.label is not None})
    code = {name: i for i, name in enumerate(names)}
    rows = Rows(
        where=lambda i: records[i].where,
        labels=np.array([code.get(r.label, -1) if r.label is not None else -1 for r in records], dtype=np.int32),
        label_names=names,
        splits=np.array([SPLIT_CODES.index(r.split) for r in records], dtype=np.int8),
        features=features,
    )
    decided = step.decide(rows, ctx)
    for i, record in enumerate(records):
        if decided.splits is not None:
            record = replace(record, split=SPLIT_CODES[decided.splits[i]])
        if i in decided.drops:
            category, reason = decided.drops[i]
            yield drop(record, category, reason if isinstance(reason, str) else reason(record))
        elif i in decided.extra:
            yield keep(replace(record, extra={**record.extra, **decided.extra[i]}))
        else:
            yield keep(record)


def flatten_features(features: dict[str, Any]) -> dict[str, np.ndarray]:
    """Ragged features (a list of arrays, one per record) as one flat array plus `name#count`."""
    out: dict[str, np.ndarray] = {}
    for name, value in features.items():
        if isinstance(value, list):
            out[name + "#count"] = np.array([len(v) for v in value], dtype=np.int64)
            out[name] = np.concatenate(value) if value else np.zeros(0, dtype=np.uint64)
        else:
            out[name] = value
    return out


TORCH_THREADS = 2  # embeddings: fixed, so their bits never depend on the machine's or the user's thread setting


@contextmanager
def fixed_threads() -> Iterator[None]:
    """Curation's float work on a fixed number of threads: torch (embeddings) on TORCH_THREADS, BLAS
    (classifier, similarities) on one.

    A matrix product's last bits can depend on how many threads split it, and a decision near its threshold
    (a cosine at 0.95, a cleanlab confidence) follows those bits: with fixed threads, the same inputs and
    seed give byte-identical splits on a machine whatever OMP_NUM_THREADS, torch's thread setting or the load.
    """
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


_URL = re.compile(r"https?://\S+|www\.\S+")
_MENTION = re.compile(r"@\w+")
_HASHTAG = re.compile(r"#\w+")


def default_key(text: str, strip: Iterable[str] = ()) -> str:
    """The dedup key: case-folded NFC text, optionally without URLs/@mentions/#hashtags, spaces collapsed."""
    text = unicodedata.normalize("NFC", text)
    for what, pattern in (("urls", _URL), ("mentions", _MENTION), ("hashtags", _HASHTAG)):
        if what in strip:
            text = pattern.sub(" ", text)
    return " ".join(text.casefold().split())


def key_strip_at(settings: Iterable[tuple[int, Any]], slot: int) -> tuple[str, ...]:
    """The dedup key's stripping in force at plan slot `slot`: set by the last enabled normalize step before
    it. `settings`: (slot, step settings) pairs."""
    strip: tuple[str, ...] = ()
    for earlier, step in settings:
        if earlier < slot and step.step == "normalize" and step.enabled:
            strip = tuple(step.strip_for_key)
    return strip


@dataclass
class Context:
    """Shared state: the dedup key function, embeddings computed once, reference (eval) records."""

    seed: int
    embed_dtype: str = "float32"
    embedder: Callable[[list[str]], np.ndarray] | None = None
    tokenizer_loader: Callable[[], Any] | None = None
    key_strip: tuple[str, ...] = ()
    reference: list[Record] = field(default_factory=list)  # eval/test records given as separate files
    reference_splits: tuple[str, ...] = ()  # which splits those files already provide
    cluster_sizes: dict[str, list[int]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    # (band digests [n, bands]) -> candidate pairs; None: in this process (dedup.bucket_pairs). The Ray engine
    # sets a Ray Data groupby that gives the same pairs.
    bucket_pairs: Callable[[np.ndarray], np.ndarray] | None = None
    _embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    _tokenizer: Any = None

    def key(self, record: Record) -> str:
        return default_key(record.text, self.key_strip)

    def embed(self, records: list[Record]) -> np.ndarray:
        """Unit-norm sentence embeddings, computed once per distinct text for all later steps."""
        if self.embedder is None:
            from tunewise.curate.embed import default_embedder

            self.embedder = default_embedder(self.embed_dtype)
        missing = list(dict.fromkeys(r.text for r in records if r.text not in self._embeddings))
        if missing:
            for text, vector in zip(missing, self.embedder(missing), strict=True):
                self._embeddings[text] = vector
        if not records:
            return np.zeros((0, 1), dtype=np.float32)
        return np.stack([self._embeddings[r.text] for r in records])

    def forget_embeddings(self) -> None:
        """Drop the cached embeddings (after each chunk: the cache must not grow with the input)."""
        self._embeddings.clear()

    def remember_embeddings(self, vectors: dict[str, np.ndarray]) -> None:
        """Embeddings computed earlier (an earlier pass over the same texts), so they are not computed again."""
        self._embeddings.update(vectors)

    def tokenizer(self) -> Any:
        if self._tokenizer is None and self.tokenizer_loader is not None:
            self._tokenizer = self.tokenizer_loader()
        return self._tokenizer
