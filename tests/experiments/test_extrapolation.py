"""The bake-off's learning-curve extrapolation on synthetic curves whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest

from tunewise.experiments.extrapolation import (
    ALPHAS,
    CurveFit,
    extrapolate,
    fit_curve,
    metric_bounds,
    probability_best,
    resample_indices,
)


def true_accuracy(n: float) -> float:
    return 0.88 - 0.9 * n ** (-0.45)


def test_a_noise_free_power_law_is_recovered_and_carried_to_the_full_size():
    alpha = float(ALPHAS[20])  # on the grid: the fit can be exact
    sizes = [50, 100, 200, 400]
    values = [0.9 - 1.5 * n ** (-alpha) for n in sizes]
    fit = fit_curve(sizes, values)
    assert fit.form == "power"
    assert fit.predict(3200) == pytest.approx(0.9 - 1.5 * 3200 ** (-alpha), abs=1e-6)


def test_two_sizes_give_a_line_in_log_n_and_one_size_a_flat_curve():
    fit = fit_curve([100, 400], [0.5, 0.6])
    assert fit.form == "log-linear"
    assert fit.predict(1600) == pytest.approx(0.7)  # one more doubling-of-doubling: +0.1
    assert fit_curve([100, 100], [0.4, 0.6]).predict(10_000) == pytest.approx(0.5)


def test_predictions_are_clipped_to_the_metric_range_unless_unbounded():
    steep = fit_curve([10, 20], [0.5, 0.9])
    assert steep.predict(1_000_000) == 1.0
    assert CurveFit("log-linear", (0.5, 0.2), bounds=None).predict(np.e**5) == pytest.approx(1.5)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError):
        fit_curve([], [])
    with pytest.raises(ValueError):
        fit_curve([0, 10], [0.1, 0.2])
    with pytest.raises(ValueError):
        extrapolate([], 100, 10)


def _nested_arms(sizes: list[int], n_val: int, rng: np.random.Generator):
    """Per-example correctness of nested fine-tunes: example i is right once the model's accuracy passes its
    difficulty, so a larger subset is right on a superset of examples (as real nested arms mostly are)."""
    difficulty = rng.random(n_val)
    arms = []
    for n in sizes:
        correct = (difficulty < true_accuracy(n)).astype(float)
        arms.append((n, lambda idx, c=correct: float(c[idx].mean())))
    return arms


def test_the_interval_covers_the_true_full_size_metric_in_most_synthetic_worlds():
    rng = np.random.default_rng(7)
    sizes, target, n_val = [50, 100, 200], 800, 300
    covered, errors = 0, []
    worlds = 20
    for world in range(worlds):
        result = extrapolate(_nested_arms(sizes, n_val, rng), target, n_val, resamples=200, seed=world)
        truth = true_accuracy(target)
        covered += result.low <= truth <= result.high
        errors.append(result.point - truth)
        assert result.low <= result.point <= result.high
    assert covered >= 0.8 * worlds  # a 95% interval may miss now and then, not often
    assert abs(float(np.mean(errors))) < 0.05  # no large systematic bias on a curve of the fitted form


def test_more_validation_examples_narrow_the_interval():
    rng = np.random.default_rng(3)
    widths = []
    for n_val in (100, 1600):
        result = extrapolate(_nested_arms([50, 100, 200], n_val, rng), 800, n_val, resamples=200, seed=1)
        widths.append(result.high - result.low)
    assert widths[1] < widths[0] / 2


def test_resamples_are_shared_so_candidates_are_compared_on_the_same_examples():
    first, second = resample_indices(50, 3, seed=4), resample_indices(50, 3, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_probability_best_is_paired_and_splits_ties():
    clear = probability_best({"a": np.full(100, 0.8), "b": np.full(100, 0.6)})
    assert clear == {"a": 1.0, "b": 0.0}
    assert probability_best({"a": np.full(10, 0.5), "b": np.full(10, 0.5)}) == {"a": 0.5, "b": 0.5}
    lower = probability_best({"a": np.array([1.0, 3.0]), "b": np.array([2.0, 2.0])}, greater_is_better=False)
    assert lower == {"a": 0.5, "b": 0.5}
    assert probability_best({"a": np.array([])}) == {}


def test_to_json_reports_the_curve_and_interval():
    result = extrapolate([(10, lambda idx: 0.5), (20, lambda idx: 0.6)], 40, 5, resamples=100)
    payload = result.to_json()
    assert payload["metric"] == pytest.approx(0.7) and payload["curve"]["form"] == "log-linear"
    assert payload["ci_low"] == pytest.approx(0.7) == payload["ci_high"]  # constant scorers: no spread
    assert [p["n_train"] for p in payload["observed"]] == [10, 20]


def test_each_metric_is_clipped_to_its_own_range():
    assert metric_bounds("macro_f1") == (0.0, 1.0) and metric_bounds("sentence_chrf") == (0.0, 100.0)
    chrf = extrapolate([(10, lambda idx: 30.0), (20, lambda idx: 40.0)], 40, 5, resamples=100, bounds=(0, 100))
    assert chrf.point == pytest.approx(50.0)  # a share's bounds would have clipped it to 1
    perplexity = extrapolate([(10, lambda idx: 30.0), (20, lambda idx: 12.0)], 10**6, 5, resamples=0, bounds=(1, None))
    assert perplexity.point == 1.0  # a log-linear fall would go below 1: no model is better than certain
