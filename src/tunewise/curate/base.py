"""What every curation step shares: the verdict it gives each record and the context it may use."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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

    def tokenizer(self) -> Any:
        if self._tokenizer is None and self.tokenizer_loader is not None:
            self._tokenizer = self.tokenizer_loader()
        return self._tokenizer
