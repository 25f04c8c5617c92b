"""Set steps that select: label errors (cleanlab), relevance, balance, split."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from tunewise.config.curate import BalanceStep, LabelErrorsStep, RelevanceStep, SplitStep
from tunewise.curate.base import SPLIT_CODES, Context, Decisions, Rows, Verdict, verdicts_of
from tunewise.data.records import Record, RejectCategory
from tunewise.errors import ConfigError


@dataclass
class LabelErrors:
    """Flags likely mislabelled records: cleanlab on out-of-fold probabilities of a classifier on embeddings."""

    settings: LabelErrorsStep
    name: str = "label_errors"

    def features(self, records: list[Record], ctx: Context) -> dict[str, np.ndarray]:
        return {"embedding": ctx.embed(records)}

    def decide(self, rows: Rows, ctx: Context) -> Decisions:
        from cleanlab.filter import find_label_issues
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        names = [rows.label(i) for i in range(len(rows))]
        labels = sorted({name for name in names if name is not None})
        counts = [names.count(label) for label in labels]
        if len(labels) < 2 or min(counts) < self.settings.folds:
            ctx.notes["label_errors"] = "skipped: needs two classes with at least `folds` records each"
            return Decisions()
        y = np.array([labels.index(name) for name in names])
        folds = StratifiedKFold(self.settings.folds, shuffle=True, random_state=ctx.seed)
        vectors = np.asarray(rows.features["embedding"], dtype=np.float32)
        probs = cross_val_predict(LogisticRegression(max_iter=1000), vectors, y, cv=folds, method="predict_proba")
        issues = sorted(find_label_issues(y, probs, return_indices_ranked_by="self_confidence").tolist())
        ctx.notes["label_errors_found"] = len(issues)
        decided = Decisions()
        for i in issues:
            guess = labels[int(probs[i].argmax())]
            reason = f"likely label error: given {names[i]!r}, classifier says {guess!r} (p={probs[i].max():.2f})"
            if self.settings.action == "drop":
                decided.drops[i] = (RejectCategory.LIKELY_LABEL_ERROR, reason)
            else:
                decided.extra[i] = {"label_issue": reason}
        return decided

    def __call__(self, records: list[Record], ctx: Context) -> Iterator[Verdict]:
        return verdicts_of(self, records, ctx)


@dataclass
class Relevance:
    """Keeps the records most similar to the task description and/or seed examples. The score is per record
    (computed with the records' embeddings); only top_k needs the whole pool."""

    settings: RelevanceStep
    name: str = "relevance"

    def check(self) -> list[str]:
        s = self.settings
        queries = ([s.description] if s.description else []) + list(s.seeds)
        if not queries or (s.top_k is None and s.min_score is None):
            raise ConfigError("curate relevance step: give a description or seeds, and top_k or min_score")
        return queries

    def features(self, records: list[Record], ctx: Context) -> dict[str, np.ndarray]:
        probes = [Record("completion", {"prompt": q, "completion": ""}, "config", 0) for q in self.check()]
        if not records:
            return {"score": np.zeros(0, dtype=np.float32)}
        return {"score": (ctx.embed(records) @ ctx.embed(probes).T).max(axis=1).astype(np.float32)}

    def decide(self, rows: Rows, ctx: Context) -> Decisions:
        s = self.settings
        self.check()
        scores = np.asarray(rows.features["score"], dtype=np.float32)
        cutoff = s.min_score if s.min_score is not None else -1.0
        if s.top_k is not None and len(scores) > s.top_k:
            cutoff = max(cutoff, float(np.sort(scores)[-s.top_k]))
        ctx.notes["relevance_cutoff"] = cutoff
        decided, ranked_in = Decisions(), 0
        for i, score in enumerate(scores.tolist()):
            top_k_full = s.top_k is not None and ranked_in >= s.top_k
            if score >= cutoff and not top_k_full:
                ranked_in += 1
            else:
                reason = f"similarity to the task {score:.3f} < cutoff {cutoff:.3f}"
                decided.drops[i] = (RejectCategory.LOW_RELEVANCE, reason)
        return decided

    def __call__(self, records: list[Record], ctx: Context) -> Iterator[Verdict]:
        return verdicts_of(self, records, ctx)


def label_groups(rows: Rows, positions: Iterable[int]) -> dict[str, list[int]]:
    """Row positions by label name ("" for none), labels in order of first appearance."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i in positions:
        groups[rows.label(i) or ""].append(i)
    return groups


@dataclass
class Balance:
    """Stratified, seeded sampling to a per-class cap and/or a total size."""

    settings: BalanceStep
    name: str = "balance"

    def features(self, records: list[Record], ctx: Context) -> dict[str, np.ndarray]:
        return {}

    def decide(self, rows: Rows, ctx: Context) -> Decisions:
        rng = random.Random(ctx.seed)
        groups = label_groups(rows, range(len(rows)))
        caps = self._caps({label: len(ix) for label, ix in groups.items()})
        chosen: set[int] = set()
        for label, index in groups.items():
            chosen.update(rng.sample(index, min(caps[label], len(index))))
        decided = Decisions()
        for i in range(len(rows)):
            if i not in chosen:
                label = rows.label(i)
                reason = f"class {label or 'all'!r} sampled down to {caps[label or '']}"
                decided.drops[i] = (RejectCategory.BALANCE_CAPPED, reason)
        return decided

    def __call__(self, records: list[Record], ctx: Context) -> Iterator[Verdict]:
        return verdicts_of(self, records, ctx)

    def _caps(self, sizes: dict[str, int]) -> dict[str, int]:
        s = self.settings
        caps = {label: s.per_class or n for label, n in sizes.items()}
        if s.total is not None:
            # Water-filling: equal shares, with what small classes can't use passed on to the others.
            remaining, open_labels = s.total, sorted(caps, key=lambda k: min(caps[k], sizes[k]))
            for position, label in enumerate(open_labels):
                share = remaining // (len(open_labels) - position)
                caps[label] = min(caps[label], sizes[label], share)
                remaining -= caps[label]
        return caps


@dataclass
class Split:
    """Stratified train/val/test for records without a split; never drops anything."""

    settings: SplitStep
    name: str = "split"

    def features(self, records: list[Record], ctx: Context) -> dict[str, np.ndarray]:
        return {}

    def decide(self, rows: Rows, ctx: Context) -> Decisions:
        rng = random.Random(ctx.seed)
        splits = np.asarray(rows.splits, dtype=np.int8).copy()
        open_ = np.flatnonzero(splits == 0).tolist()
        existing = {SPLIT_CODES[c] for c in np.unique(splits)} | set(ctx.reference_splits)
        n = len(open_)
        if n == 0:  # every record was dropped earlier: nothing to split, and no reason to stop the report
            return Decisions(splits=splits)
        n_test = 0 if "test" in existing else _size(self.settings.test, n)
        n_val = 0 if "val" in existing else _size(self.settings.val, n)
        if n_test + n_val >= n:
            raise ConfigError(f"curate split: val {n_val} + test {n_test} leave no training records of {n}")
        groups = label_groups(rows, open_)
        labels = sorted(groups)
        sizes = [len(groups[label]) for label in labels]
        splits[open_] = SPLIT_CODES.index("train")
        # Largest remainders: per-class shares that add up to exactly n_test / n_val.
        for label, k_test, k_val in zip(labels, apportion(n_test, sizes), apportion(n_val, sizes), strict=True):
            index = groups[label]
            rng.shuffle(index)
            splits[index[:k_test]] = SPLIT_CODES.index("test")
            splits[index[k_test : k_test + k_val]] = SPLIT_CODES.index("val")
        return Decisions(splits=splits)

    def __call__(self, records: list[Record], ctx: Context) -> Iterator[Verdict]:
        return verdicts_of(self, records, ctx)


def apportion(total: int, sizes: list[int]) -> list[int]:
    """Split `total` across groups in proportion to `sizes` (Hamilton's method), never above a group's size."""
    n = sum(sizes)
    if n == 0:
        return [0] * len(sizes)
    exact = [total * size / n for size in sizes]
    shares = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return [min(share, size) for share, size in zip(shares, sizes, strict=True)]


def _size(value: float, n: int) -> int:
    return math.floor(value * n) if value < 1 else int(value)
