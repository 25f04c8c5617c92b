"""Paired bootstrap: the observed difference, its interval and p from resampling the same examples together, and
macro-F1 recomputed fast per resample."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from tunewise.core.format import BOOTSTRAP_RESAMPLES, p_floor
from tunewise.evaluate.stats import (
    Difference,
    macro_f1_difference,
    macro_f1_from_indices,
    mean_difference,
    paired_bootstrap,
)


def test_the_difference_is_b_minus_a_with_an_interval_around_it():
    rng = np.random.default_rng(0)
    a = rng.normal(0.5, 0.1, 200)
    b = a + rng.normal(0.05, 0.05, 200)
    diff = mean_difference(a.tolist(), b.tolist(), seed=1)
    assert diff.delta == pytest.approx(float(b.mean() - a.mean()))
    assert diff.low < diff.delta < diff.high and diff.significant and diff.p_value == p_floor(BOOTSTRAP_RESAMPLES)
    assert (diff.n, diff.resamples) == (200, BOOTSTRAP_RESAMPLES)


def test_resamples_keep_the_pairs_together():
    # b is a plus a constant: every resample has the same difference, however noisy a itself is
    a = np.random.default_rng(2).normal(0, 10, 50)
    diff = mean_difference(a.tolist(), (a + 0.25).tolist(), resamples=200)
    assert diff.low == pytest.approx(0.25) and diff.high == pytest.approx(0.25)


def test_no_difference_is_not_significant_and_has_p_one():
    scores = [0.0, 1.0, 1.0, 0.0, 1.0] * 10
    diff = mean_difference(scores, scores, resamples=300)
    assert (diff.delta, diff.low, diff.high, diff.p_value, diff.significant) == (0.0, 0.0, 0.0, 1.0, False)


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    rng = np.random.default_rng(3)
    a, b = rng.random(40).tolist(), rng.random(40).tolist()
    assert mean_difference(a, b, seed=5) == mean_difference(a, b, seed=5)
    assert mean_difference(a, b, seed=5).low != mean_difference(a, b, seed=6).low


def test_alpha_sets_the_width_of_the_interval():
    rng = np.random.default_rng(4)
    a, b = rng.random(60), rng.random(60)
    metric = lambda idx: (float(a[idx].mean()), float(b[idx].mean()))  # noqa: E731
    wide, narrow = paired_bootstrap(metric, 60, alpha=0.01), paired_bootstrap(metric, 60, alpha=0.2)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_a_difference_serialises_with_its_verdict():
    diff = Difference(delta=0.1, low=-0.02, high=0.2, p_value=0.3, n=10, resamples=500)
    assert diff.to_json() == {
        "delta": 0.1,
        "ci_low": -0.02,
        "ci_high": 0.2,
        "p_value": 0.3,
        "significant": False,
        "n": 10,
        "resamples": 500,
    }
    assert Difference(-0.1, -0.2, -0.01, 0.01, 10, 500).significant


def test_macro_f1_from_indices_is_sklearns():
    rng = np.random.default_rng(7)
    gold, pred = rng.integers(0, 3, 80), rng.integers(0, 3, 80)
    expected = f1_score(gold, pred, labels=[0, 1, 2], average="macro", zero_division=0)
    assert macro_f1_from_indices(gold, pred, 3) == pytest.approx(expected)


def test_an_id_past_the_scored_labels_is_an_error_without_its_own_f1():
    gold = np.array([0, 1, 2, 0, 1, 2])
    pred = np.array([0, 1, 3, 3, 1, 2])  # 3: an answer that named no label
    expected = f1_score(gold, pred, labels=[0, 1, 2], average="macro", zero_division=0)
    assert macro_f1_from_indices(gold, pred, 4, n_scored=3) == pytest.approx(expected)


def test_macro_f1_difference_counts_unknown_predictions_as_errors():
    labels = ["a", "b", "c"]
    gold = ["a", "b", "c"] * 8
    pred_a = ["a"] * 24
    pred_b = [*gold[:16], *["(unparsed)"] * 8]
    diff = macro_f1_difference(gold, pred_a, pred_b, labels, resamples=200)
    f1 = [f1_score(gold, p, labels=labels, average="macro", zero_division=0) for p in (pred_a, pred_b)]
    assert diff.delta == pytest.approx(f1[1] - f1[0]) and diff.resamples == 200 and diff.n == 24
