"""Paired bootstrap: how sure is a difference between two systems scored on the same examples."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 1000  # what every tunewise comparison uses; also assumed for a difference that omits it


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


def p_floor(resamples: int) -> float:
    """The smallest p `paired_bootstrap` can return: 1 / (resamples + 1), when no resample moved the difference
    as far as the observed one. The true p may be smaller still; more resamples would be needed to tell."""
    return 1 / (resamples + 1)


def stored_resamples(value: object) -> int:
    """The resample count a stored difference (eval.json, eval_matrix.json) records; BOOTSTRAP_RESAMPLES where
    it is absent or not a plausible count (a damaged file)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 1 << 53:
        return value
    return BOOTSTRAP_RESAMPLES


def at_p_floor(p: float, resamples: int) -> bool:
    # Up to rounding: a p read back from eval.json is the float the bootstrap computed, or its JSON repr.
    return p <= p_floor(resamples) * (1 + 1e-9)


def format_p_value(p: float, resamples: int = BOOTSTRAP_RESAMPLES) -> str:
    """The p of a table's p column: `0.012`, or `≤ 0.001` at the floor of `resamples` resamples (`p_floor`,
    rounded up to one significant digit so the bound stays true: 1/1001 shows as ≤ 0.001). "< 0.001" would
    claim more than the resamples show, "0.001" a precision they do not have."""
    floor = p_floor(resamples)
    exponent = math.floor(math.log10(floor))
    shown = math.ceil(floor / 10**exponent - 1e-9) * 10**exponent  # one significant digit, rounded up
    decimals = max(3, math.ceil(-math.log10(shown) - 1e-9))  # enough to show the floor
    if at_p_floor(p, resamples):
        return f"≤ {shown:.{decimals}f}"
    return f"{p:.{decimals}f}"


def format_p(p: float, resamples: int = BOOTSTRAP_RESAMPLES) -> str:
    """The p as a statement, `p = 0.012` or `p ≤ 0.001` (see `format_p_value`): console and HTML report alike."""
    value = format_p_value(p, resamples)
    return f"p {value}" if value.startswith("≤") else f"p = {value}"


def p_floor_note(resamples: int = BOOTSTRAP_RESAMPLES) -> str:
    """What a p at the floor means, for the footnote under a table of differences."""
    return (
        f"p: two-sided, from {resamples:,} paired-bootstrap resamples, which cannot give a p below "
        f"1/{resamples + 1:,}; p {format_p_value(p_floor(resamples), resamples)} means no resample moved the "
        "difference as far as observed, and the true p may be smaller still."
    )


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
