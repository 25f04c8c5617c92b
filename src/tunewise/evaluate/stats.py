"""Paired bootstrap: how sure is a difference between two systems scored on the same examples."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# The resample count is shared with how a p reads (`p ≤ 0.001` at the floor 1 / (resamples + 1)): core.format.
from tunewise.core.format import BOOTSTRAP_RESAMPLES


@dataclass(frozen=True)
class Difference:
    delta: float  # metric(b) - metric(a) on all examples
    low: float  # 95% (by default) bootstrap confidence interval of the delta
    high: float
    p_value: float  # two-sided, from the bootstrap distribution centred on the observed delta
    n: int
    resamples: int

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_json(self) -> dict[str, float | int | bool]:
        return {
            "delta": self.delta,
            "ci_low": self.low,
            "ci_high": self.high,
            "p_value": self.p_value,
            "significant": self.significant,
            "n": self.n,
            "resamples": self.resamples,
        }


def paired_bootstrap(
    metric: Callable[[np.ndarray], tuple[float, float]],
    n: int,
    resamples: int = BOOTSTRAP_RESAMPLES,
    alpha: float = 0.05,
    seed: int = 0,
) -> Difference:
    """`metric(indices)` returns (score_a, score_b) on those example indices; resampled together."""
    rng = np.random.default_rng(seed)
    a, b = metric(np.arange(n))
    observed = b - a
    deltas = np.empty(resamples)
    for i in range(resamples):
        sa, sb = metric(rng.integers(0, n, n))
        deltas[i] = sb - sa
    low, high = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    # Under the null the centred bootstrap deltas show how far chance alone moves the difference.
    p_value = (1 + np.sum(np.abs(deltas - observed) >= abs(observed))) / (resamples + 1)
    return Difference(float(observed), float(low), float(high), float(p_value), n, resamples)


def mean_difference(scores_a: list[float], scores_b: list[float], **kw) -> Difference:
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    return paired_bootstrap(lambda idx: (float(a[idx].mean()), float(b[idx].mean())), len(a), **kw)


def macro_f1_from_indices(gold: np.ndarray, pred: np.ndarray, n_labels: int, n_scored: int | None = None) -> float:
    """Macro-F1 over label ids from one confusion matrix: fast enough to recompute per resample.
    Ids from `n_scored` on (e.g. an unparsed answer) count as errors but get no F1 of their own."""
    matrix = np.bincount(gold * n_labels + pred, minlength=n_labels * n_labels).reshape(n_labels, n_labels)
    tp = np.diag(matrix).astype(float)
    denominator = matrix.sum(0) + matrix.sum(1)
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return float(f1[: n_scored or n_labels].mean())


def macro_f1_difference(gold: list[str], pred_a: list[str], pred_b: list[str], labels: list[str], **kw) -> Difference:
    index = {label: i for i, label in enumerate(labels)}
    other = len(labels)  # any prediction outside the label set (an unparsed answer)
    g = np.array([index[x] for x in gold])
    a = np.array([index.get(x, other) for x in pred_a])
    b = np.array([index.get(x, other) for x in pred_b])
    k, scored = len(labels) + 1, len(labels)
    return paired_bootstrap(
        lambda idx: (
            macro_f1_from_indices(g[idx], a[idx], k, scored),
            macro_f1_from_indices(g[idx], b[idx], k, scored),
        ),
        len(g),
        **kw,
    )
