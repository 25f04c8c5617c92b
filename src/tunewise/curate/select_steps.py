"""Steps that look at the whole set: label errors (cleanlab), relevance, balance, split."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from tunewise.config.curate import BalanceStep, LabelErrorsStep, RelevanceStep, SplitStep
from tunewise.curate.base import Context, Verdict, drop, keep
from tunewise.data.records import Record, RejectCategory
from tunewise.errors import ConfigError


@dataclass
class LabelErrors:
    """Flags likely mislabelled records: cleanlab on out-of-fold probabilities of a classifier on embeddings."""

    settings: LabelErrorsStep
    name: str = "label_errors"

    def __call__(self, records: list[Record], ctx: Context) -> Iterator[Verdict]:
        from cleanlab.filter import find_label_issues
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        labels = sorted({r.label for r in records if r.label is not None})
        counts = [sum(r.label == label for r in records) for label in labels]
        if len(labels) < 2 or min(counts) < self.settings.folds:
            ctx.notes["label_errors"] = "skipped: needs two classes with at least `folds` records each"
            yield from map(keep, records)
            return
        y = np.array([labels.index(r.label) for r in records])
        folds = StratifiedKFold(self.settings.folds, shuffle=True, random_state=ctx.seed)
        probs = cross_val_predict(
            LogisticRegression(max_iter=1000), ctx.embed(records), y, cv=folds, method="predict_proba"
        )
        issues = set(find_label_issues(y, probs, return_indices_ranked_by="self_confidence").tolist())
        ctx.notes["label_errors_found"] = len(issues)
        for i, record in enumerate(records):
            if i not in issues:
                yield keep(record)
                continue
            guess = labels[int(probs[i].argmax())]
            reason = f"likely label error: given {record.label!r}, classifier says {guess!r} (p={probs[i].max():.2f})"
            if self.settings.action == "drop":
                yield drop(record, RejectCategory.LIKELY_LABEL_ERROR, reason)
            else:
                yield keep(replace(record, extra={**record.extra, "label_issue": reason}))


@dataclass
class Relevance:
    """Keeps the records most similar to the task description and/or seed examples."""

    settings: RelevanceStep
    name: str = "relevance"

    def __call__(self, records: list[Record], ctx: Context) -> Iterator[Verdict]:
        s = self.settings
        queries = ([s.description] if s.description else []) + list(s.seeds)
        if not queries or (s.top_k is None and s.min_score is None):
            raise ConfigError("curate relevance step: give a description or seeds, and top_k or min_score")
        probes = [Record("completion", {"prompt": q, "completion": ""}, "config", 0) for q in queries]
        scores = (ctx.embed(records) @ ctx.embed(probes).T).max(axis=1) if records else np.zeros(0)
        cutoff = s.min_score if s.min_score is not None else -1.0
        if s.top_k is not None and len(records) > s.top_k:
            cutoff = max(cutoff, float(np.sort(scores)[-s.top_k]))
        ctx.notes["relevance_cutoff"] = cutoff
        ranked_in = 0
        for record, score in zip(records, scores, strict=True):
            top_k_full = s.top_k is not None and ranked_in >= s.top_k
            if score >= cutoff and not top_k_full:
                ranked_in += 1
                yield keep(record)
            else:
                reason = f"similarity to the task {score:.3f} < cutoff {cutoff:.3f}"
                yield drop(record, RejectCategory.LOW_RELEVANCE, reason)


@dataclass
class Balance:
    """Stratified, seeded sampling to a per-class cap and/or a total size."""

    settings: BalanceStep
    name: str = "balance"

    def __call__(self, records: list[Record], ctx: Context) -> Iterator[Verdict]:
        rng = random.Random(ctx.seed)
        groups: dict[str, list[int]] = defaultdict(list)
        for i, record in enumerate(records):
            groups[record.label or ""].append(i)
        caps = self._caps({label: len(ix) for label, ix in groups.items()})
        chosen: set[int] = set()
        for label, index in groups.items():
            chosen.update(rng.sample(index, min(caps[label], len(index))))
        for i, record in enumerate(records):
            if i in chosen:
                yield keep(record)
            else:
                label = record.label or "all"
                reason = f"class {label!r} sampled down to {caps[record.label or '']}"
                yield drop(record, RejectCategory.BALANCE_CAPPED, reason)

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

    def __call__(self, records: list[Record], ctx: Context) -> Iterator[Verdict]:
        rng = random.Random(ctx.seed)
        open_ = [i for i, r in enumerate(records) if r.split is None]
        existing = {r.split for r in records} | set(ctx.reference_splits)
        n = len(open_)
        if n == 0:  # every record was dropped earlier: nothing to split, and no reason to stop the report
            yield from map(keep, records)
            return
        n_test = 0 if "test" in existing else _size(self.settings.test, n)
        n_val = 0 if "val" in existing else _size(self.settings.val, n)
        if n_test + n_val >= n:
            raise ConfigError(f"curate split: val {n_val} + test {n_test} leave no training records of {n}")
        groups: dict[str, list[int]] = defaultdict(list)
        for i in open_:
            groups[records[i].label or ""].append(i)
        assigned: dict[int, str] = {}
        labels = sorted(groups)
        sizes = [len(groups[label]) for label in labels]
        # Largest remainders: per-class shares that add up to exactly n_test / n_val.
        for label, k_test, k_val in zip(labels, apportion(n_test, sizes), apportion(n_val, sizes), strict=True):
            index = groups[label]
            rng.shuffle(index)
            assigned.update({i: "test" for i in index[:k_test]})
            assigned.update({i: "val" for i in index[k_test : k_test + k_val]})
        for i, record in enumerate(records):
            split = assigned.get(i, "train") if record.split is None else record.split
            yield keep(replace(record, split=split))


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
