"""Record steps (validate, normalize, quality, confidence), and the set steps keyed on the text (conflicts, exact
dedup)."""

from __future__ import annotations

import functools
import hashlib
import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunewise.config.curate import (
    ConfidenceStep,
    ConflictsStep,
    ExactDedupStep,
    NormalizeStep,
    QualityStep,
    ValidateStep,
)
from tunewise.curate.base import Context, Decisions, Rows, Verdict, cluster_sizes, drop, keep, verdicts_of
from tunewise.data.normalize import TextNormalization
from tunewise.data.readers import known_labels
from tunewise.data.records import Record, RejectCategory, brief
from tunewise.errors import ConfigError


@dataclass
class Validate:
    settings: ValidateStep
    labels: list[str] | None = None
    # tokens of each rendered example, or why it cannot be rendered
    lengths_of: Callable[[list[Record]], list[int | str]] | None = None
    name: str = "validate"

    def __call__(self, records: list[Record], ctx: Context) -> Iterator[Verdict]:
        allowed = set(self.labels or [])
        limit = self.settings.max_tokens
        lengths: list[int | str] = self.lengths_of(records) if limit and self.lengths_of else [0] * len(records)
        for record, n in zip(records, lengths, strict=True):
            if isinstance(n, str):
                yield drop(record, RejectCategory.UNRENDERABLE, f"the prompt cannot be rendered: {n}")
            elif allowed and record.label is not None and record.label not in allowed:
                yield drop(
                    record,
                    RejectCategory.UNKNOWN_LABEL,
                    f"unknown label {brief(record.label)} (known: {known_labels(self.labels or [])})",
                )
            elif limit and n > limit:
                yield drop(record, RejectCategory.TOO_MANY_TOKENS, f"{n} tokens > max_tokens {limit}")
            else:
                yield keep(record)


@dataclass
class Normalize:
    """Repairs the text (TextNormalization: the same function evaluation and prediction inputs go through)
    and sets what the dedup key leaves out; each changed record carries the kinds of change, for counting."""

    settings: NormalizeStep
    name: str = "normalize"

    def __call__(self, records: list[Record], ctx: Context) -> Iterator[Verdict]:
        ctx.key_strip = tuple(self.settings.strip_for_key)
        if not self.settings.apply_to_text:
            yield from map(keep, records)
            return
        normalization = TextNormalization.of(self.settings)
        for record in records:
            yield keep(*normalization.apply_counted(record))


@dataclass
class Conflicts:
    """Same text, different labels: keep the majority label's records, or drop the whole group."""

    settings: ConflictsStep
    name: str = "conflicts"

    def features(self, records: list[Record], ctx: Context) -> dict[str, np.ndarray]:
        return {"key": key_hashes(records, ctx)}

    def decide(self, rows: Rows, ctx: Context) -> Decisions:
        keys, labels = rows.features["key"], rows.labels
        decided = Decisions()
        labelled = np.flatnonzero(labels >= 0)
        # Only keys seen with two or more labels need a look, so a million records cost two sorts.
        pairs = np.unique(np.stack([keys[labelled], labels[labelled].astype(np.uint64)]), axis=1)
        keys_seen, label_counts = np.unique(pairs[0], return_counts=True)
        mixed = keys_seen[label_counts > 1]
        groups: dict[int, list[int]] = defaultdict(list)
        for i in labelled[np.isin(keys[labelled], mixed)]:
            groups[int(keys[i])].append(int(i))
        for members in groups.values():
            votes = Counter(rows.label(i) for i in members)  # by first appearance, as ties are broken
            summary = ", ".join(f"{label} x{n}" for label, n in votes.most_common())
            (top, n_top), (_, n_next) = votes.most_common(2)
            for i in members:
                if self.settings.resolve == "majority" and n_top > n_next:
                    if rows.label(i) != top:
                        reason = f"label {rows.label(i)!r} outvoted ({summary})"
                        decided.drops[i] = (RejectCategory.MINORITY_LABEL, reason)
                else:
                    reason = f"same text with different labels ({summary})"
                    decided.drops[i] = (RejectCategory.CONFLICTING_LABELS, reason)
        ctx.notes["conflicting_texts"] = len(groups)
        return decided

    def __call__(self, records: list[Record], ctx: Context) -> Iterator[Verdict]:
        return verdicts_of(self, records, ctx)


@dataclass
class ExactDedup:
    settings: ExactDedupStep
    name: str = "exact_dedup"

    def features(self, records: list[Record], ctx: Context) -> dict[str, np.ndarray]:
        return {"key": key_hashes(records, ctx)}

    def decide(self, rows: Rows, ctx: Context) -> Decisions:
        keys = rows.features["key"]
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        original = first[inverse.reshape(-1)]  # for each row, the first row with its key
        copies = np.flatnonzero(original != np.arange(len(keys)))
        decided = Decisions()
        for i in copies:
            decided.drops[int(i)] = (RejectCategory.EXACT_DUPLICATE, f"exact duplicate of {rows.where(original[i])}")
        ctx.cluster_sizes[self.name] = cluster_sizes(original[copies].tolist())
        return decided

    def __call__(self, records: list[Record], ctx: Context) -> Iterator[Verdict]:
        return verdicts_of(self, records, ctx)


def key_hashes(records: list[Record], ctx: Context) -> np.ndarray:
    """64-bit digests of the dedup keys: what grouping by key needs, at 8 bytes a record (two of a million
    distinct keys collide with odds of about 3e-8)."""
    digests = b"".join(hashlib.blake2b(ctx.key(r).encode(), digest_size=8).digest() for r in records)
    return np.frombuffer(digests, dtype=np.uint64).copy()


@dataclass
class Quality:
    settings: QualityStep
    name: str = "quality"

    def __call__(self, records: list[Record], ctx: Context) -> Iterator[Verdict]:
        allowed = self.settings.languages
        candidates = [*COMMON_LANGUAGES.split(), *(allowed or [])]
        languages = detect_languages([r.text for r in records], candidates) if allowed else [None] * len(records)
        for record, language in zip(records, languages, strict=True):
            problem = self.check(record.text)
            if problem is None and language is not None and language not in (allowed or []):
                problem = (RejectCategory.QUALITY_LANGUAGE, f"language {language}, not one of {allowed}")
            yield drop(record, *problem) if problem else keep(record)

    def check(self, text: str) -> tuple[RejectCategory, str] | None:
        """(category, reason) of the first quality problem of `text`, or None."""
        s = self.settings
        words = text.split()
        if len(words) < s.min_words:
            return RejectCategory.QUALITY_TOO_SHORT, f"{len(words)} words < min_words {s.min_words}"
        if s.max_words and len(words) > s.max_words:
            return RejectCategory.QUALITY_TOO_LONG, f"{len(words)} words > max_words {s.max_words}"
        if len(words) >= 5 and (rep := 1 - len(set(words)) / len(words)) > s.max_repetition:
            return RejectCategory.QUALITY_REPETITIVE, f"{rep:.0%} of words are repeats > {s.max_repetition:.0%}"
        symbols = sum(not (c.isalnum() or c.isspace()) for c in text) / max(len(text), 1)
        if symbols > s.max_symbol_ratio:
            return RejectCategory.QUALITY_SYMBOLS, f"{symbols:.0%} symbols > {s.max_symbol_ratio:.0%}"
        garbled = garbled_ratio(text)
        if garbled > s.max_garbled_ratio:
            reason = f"{garbled:.1%} garbled characters > {s.max_garbled_ratio:.1%}"
            return RejectCategory.QUALITY_GARBLED, reason
        return None


def garbled_ratio(text: str) -> float:
    """Share of characters that are replacement/control characters or mojibake sequences (ftfy's badness)."""
    from ftfy.badness import badness

    bad = sum(c == "\ufffd" or (unicodedata.category(c) == "Cc" and c not in "\n\t\r") for c in text)
    return (bad + badness(text)) / max(len(text), 1)


_NOT_LANGUAGE = re.compile(r"https?://\S+|www\.\S+|[@#]\w+")
MIN_LANGUAGE_WORDS = 3  # fewer words than this: too little evidence to drop anything
MIN_LANGUAGE_CONFIDENCE = 0.5


# Widely used languages: telling these apart is what a language filter is for, and each extra
# candidate costs time and invites exotic false positives (Latin, Tagalog) on short English text.
COMMON_LANGUAGES = "en es fr de it pt nl ru pl tr ar zh ja ko hi id vi sv da fi nb cs el he uk ro hu th fa ms"


def detect_languages(texts: list[str], candidates: list[str] | None = None) -> list[str | None]:
    """ISO 639-1 code per text, or None when there is too little text or the detector is unsure.

    URLs, @mentions and #hashtags are removed first: they are not language and mislead the detector.
    """
    detector = _detector(tuple(dict.fromkeys(candidates or COMMON_LANGUAGES.split())))
    cleaned = [" ".join(_NOT_LANGUAGE.sub(" ", t).split()) for t in texts]
    results = detector.compute_language_confidence_values_in_parallel(cleaned)
    codes: list[str | None] = []
    for text, values in zip(cleaned, results, strict=True):
        sure = values and values[0].value >= MIN_LANGUAGE_CONFIDENCE and len(text.split()) >= MIN_LANGUAGE_WORDS
        codes.append(values[0].language.iso_code_639_1.name.lower() if sure else None)
    return codes


@functools.lru_cache(maxsize=4)
def _detector(codes: tuple[str, ...]) -> Any:
    """A lingua detector for these languages, built once per process (building one takes a while)."""
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    try:
        languages = [Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper())) for code in codes]
    except AttributeError as exc:
        raise ConfigError(f"curate quality step: unknown ISO 639-1 language code {exc.name!r}") from None
    return LanguageDetectorBuilder.from_languages(*languages).build()


@dataclass
class Confidence:
    settings: ConfidenceStep
    name: str = "confidence"

    def __call__(self, records: list[Record], ctx: Context) -> Iterator[Verdict]:
        s = self.settings
        for record in records:
            value = record.extra.get(s.field)
            try:
                score = float(value) if value not in (None, "") else None
            except (TypeError, ValueError):
                score = None
            if score is not None and not math.isfinite(score):
                score = None  # NaN would pass every threshold (NaN < min is False): it is no confidence value
            if score is None:
                missing = drop(record, RejectCategory.NO_CONFIDENCE, f"no '{s.field}' value")
                yield keep(record) if s.keep_missing else missing
            elif score < s.min:
                yield drop(record, RejectCategory.LOW_CONFIDENCE, f"{s.field} {score:.2f} < {s.min}")
            else:
                yield keep(record)
