"""Learning curves carried to the full training set: a validation metric measured after fine-tuning on nested
subsets, fitted, evaluated at the full size, with a bootstrap interval over the validation examples.

The curve: with three or more subset sizes, a saturating power law `m(n) = c - b·n^(-α)` (the form of data
scaling laws, with α searched on a grid from 0.05 to 1 and c, b fitted by least squares for each α); with two
sizes, a line in log n; with one, flat. Predictions are clipped to the metric's range.

The interval: the validation examples are resampled with replacement (the same resample for every subset, since
all were scored on the same examples), each subset's metric is recomputed on the resample, the curve refitted and
evaluated at the full size. The 2.5th and 97.5th percentiles of those predictions are the 95% interval: it holds
the noise of a finite validation set and how far a curve fitted on small subsets can move, not the error of the
curve's form itself (the bake-off's verification runs measure that).

Paired across candidates (same validation examples, same resamples), the draws also give each candidate's
probability of being the best at the full size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The power-law exponents tried: from nearly logarithmic growth (0.05) to the error falling as 1/n (1). Data-scaling
# studies measure exponents well below 1; allowing more lets one noisy dip make a curve look saturated.
ALPHAS = np.geomspace(0.05, 1.0, 48)

Scorer = Callable[[np.ndarray], float]  # a subset's metric on a resample (indices) of the validation examples


Bounds = tuple[float | None, float | None] | None

# The range of each task metric (`config.tasks.TASK_METRICS`): chrF is on sacrebleu's 0-100 scale, perplexity is at
# least 1, the others are shares.
METRIC_RANGES: dict[str, Bounds] = {"sentence_chrf": (0.0, 100.0), "chrf": (0.0, 100.0), "bleu": (0.0, 100.0)}
METRIC_RANGES["perplexity"] = (1.0, None)


def metric_bounds(metric: str) -> Bounds:
    """The range a curve of `metric` is clipped to: a share in [0, 1] unless METRIC_RANGES says otherwise."""
    return METRIC_RANGES.get(metric, (0.0, 1.0))


@dataclass(frozen=True)
class CurveFit:
    """A fitted learning curve; `predict(n)` is the metric after fine-tuning on n examples."""

    form: str  # "power", "log-linear" or "flat"
    params: tuple[float, ...]
    bounds: Bounds = (0.0, 1.0)

    def predict(self, n: float) -> float:
        if self.form == "power":
            c, b, alpha = self.params
            value = c - b * n ** (-alpha)
        elif self.form == "log-linear":
            a, slope = self.params
            value = a + slope * np.log(n)
        else:
            value = self.params[0]
        return float(np.clip(value, *self.bounds)) if self.bounds else float(value)

    def to_json(self) -> dict[str, Any]:
        names = {"power": ("c", "b", "alpha"), "log-linear": ("a", "slope"), "flat": ("value",)}[self.form]
        return {"form": self.form, **{k: round(v, 6) for k, v in zip(names, self.params, strict=True)}}


def fit_curve(sizes: Sequence[int], values: Sequence[float], bounds: Bounds = (0.0, 1.0)) -> CurveFit:
    """The least-squares curve through (size, metric) points; the form depends on how many distinct sizes."""
    n = np.asarray(sizes, dtype=float)
    y = np.asarray(values, dtype=float)
    if len(n) != len(y) or not len(n):
        raise ValueError("fit_curve needs one metric value per subset size")
    if np.any(n <= 0):
        raise ValueError("subset sizes must be positive")
    distinct = len(np.unique(n))
    if distinct == 1:
        return CurveFit("flat", (float(y.mean()),), bounds)
    if distinct == 2:
        slope, intercept = np.polyfit(np.log(n), y, 1)
        return CurveFit("log-linear", (float(intercept), float(slope)), bounds)
    best: tuple[float, tuple[float, float, float]] | None = None
    for alpha in ALPHAS:
        design = np.column_stack([np.ones_like(n), -(n**-alpha)])
        (c, b), *_ = np.linalg.lstsq(design, y, rcond=None)
        sse = float(np.sum((design @ np.array([c, b]) - y) ** 2))
        if best is None or sse < best[0] - 1e-15:
            best = (sse, (float(c), float(b), float(alpha)))
    assert best is not None
    return CurveFit("power", best[1], bounds)


@dataclass
class Extrapolation:
    """The metric expected after fine-tuning on `n_target` examples, with its 95% bootstrap interval."""

    n_target: int
    point: float
    low: float
    high: float
    fit: CurveFit
    observed: list[tuple[int, float]]
    draws: np.ndarray = field(repr=False)  # one prediction per bootstrap resample, paired across candidates

    def to_json(self) -> dict[str, Any]:
        return {
            "n_target": self.n_target,
            "metric": round(self.point, 6),
            "ci_low": round(self.low, 6),
            "ci_high": round(self.high, 6),
            "curve": self.fit.to_json(),
            "observed": [{"n_train": n, "metric": round(m, 6)} for n, m in self.observed],
            "resamples": len(self.draws),
        }


def extrapolate(
    arms: Sequence[tuple[int, Scorer]],
    n_target: int,
    n_examples: int,
    *,
    resamples: int = 1000,
    seed: int = 0,
    bounds: Bounds = (0.0, 1.0),
) -> Extrapolation:
    """Fit the curve through each arm's (training size, metric on all validation examples) and evaluate it at
    `n_target`; the interval from `resamples` paired resamples of the `n_examples` validation examples."""
    if not arms:
        raise ValueError("extrapolate needs at least one fine-tuned subset")
    sizes = [size for size, _ in arms]
    everything = np.arange(n_examples)
    observed = [(size, float(score(everything))) for size, score in arms]
    fit = fit_curve(sizes, [m for _, m in observed], bounds)
    draws = np.empty(resamples)
    for r, idx in enumerate(resample_indices(n_examples, resamples, seed)):
        draws[r] = fit_curve(sizes, [score(idx) for _, score in arms], bounds).predict(n_target)
    point = fit.predict(n_target)
    low, high = np.percentile(draws, [2.5, 97.5]) if resamples else (point, point)
    return Extrapolation(n_target, point, float(low), float(high), fit, observed, draws)


def resample_indices(n_examples: int, resamples: int, seed: int) -> list[np.ndarray]:
    """The bootstrap resamples: a pure function of (n, count, seed), so every candidate sees the same ones."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n_examples, n_examples) for _ in range(resamples)]


def probability_best(draws: dict[str, np.ndarray], greater_is_better: bool = True) -> dict[str, float]:
    """Each candidate's share of the paired resamples in which it has the best extrapolated metric (ties
    split evenly)."""
    draws = {name: values for name, values in draws.items() if len(values)}  # no resamples: no probability
    if not draws:
        return {}
    names = list(draws)
    table = np.vstack([draws[name] for name in names])  # [candidates, resamples]
    best = table.max(axis=0) if greater_is_better else table.min(axis=0)
    winners = np.isclose(table, best[None, :], rtol=0, atol=1e-12)
    shares = (winners / winners.sum(axis=0, keepdims=True)).mean(axis=1)
    return {name: float(share) for name, share in zip(names, shares, strict=True)}
