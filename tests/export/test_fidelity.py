"""logit_fidelity: max |Δ|, pooled NMSE and top-1 agreement, computed by hand here, and llama.cpp's verdicts."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tunewise.export.fidelity import NMSE_EXCELLENT, NMSE_PASS, LogitFidelity, logit_fidelity


def test_identical_logits_are_excellent():
    logits = [np.array([[0.5, -1.0, 2.0], [3.0, 0.0, -2.0]]), np.array([[1.0, 4.0, 0.0]])]
    result = logit_fidelity(logits, [a.copy() for a in logits])
    assert result == LogitFidelity(max_abs_diff=0.0, nmse=0.0, top1_agreement=1.0, positions=3)
    assert result.verdict == "excellent"


def test_a_known_perturbation_gives_the_nmse_by_hand():
    # Σ(cand − ref)² = 1, Σref² = 3² + 4² = 25; both arg-maxes are the 4/5 token.
    result = logit_fidelity([np.array([[3.0, 4.0]])], [np.array([[3.0, 5.0]])])
    assert result.nmse == pytest.approx(1 / 25)
    assert result.max_abs_diff == pytest.approx(1.0)
    assert result.top1_agreement == 1.0 and result.positions == 1
    assert result.verdict == "fail"


def test_nmse_is_pooled_over_prompts_not_averaged_per_prompt():
    # Prompt 1: error 1² + 1² = 2 on Σref² = 1, and the arg-max flips; prompt 2: exact, Σref² = 100.
    # Pooled: 2 / 101 (a per-prompt mean would be 1.0).
    reference = [np.array([[1.0, 0.0]]), np.array([[10.0, 0.0]])]
    candidate = [np.array([[0.0, 1.0]]), np.array([[10.0, 0.0]])]
    result = logit_fidelity(reference, candidate)
    assert result.nmse == pytest.approx(2 / 101)
    assert result.top1_agreement == 0.5
    assert result.max_abs_diff == pytest.approx(1.0)
    assert result.positions == 2


def test_one_dimensional_arrays_are_one_position():
    result = logit_fidelity([np.array([3.0, 4.0])], [np.array([3.0, 5.0])])
    assert result.positions == 1
    assert result.nmse == pytest.approx(1 / 25)


def test_a_lazy_candidate_is_consumed_one_prompt_at_a_time():
    reference = [np.full((2, 4), float(i + 1)) for i in range(3)]
    produced: list[int] = []

    def lazily() -> Iterator[np.ndarray]:
        for i, ref in enumerate(reference):
            produced.append(i)
            yield ref + 0.5

    result = logit_fidelity(reference, lazily())
    assert produced == [0, 1, 2]
    assert result.max_abs_diff == pytest.approx(0.5)
    # Σ0.5² over 24 cells over Σref² = 8 · (1 + 4 + 9)
    assert result.nmse == pytest.approx(24 * 0.25 / (8 * 14))
    assert result.positions == 6


def test_mismatched_shapes_are_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        logit_fidelity([np.zeros((2, 5))], [np.zeros((3, 5))])
    with pytest.raises(ValueError, match="shapes differ"):
        logit_fidelity([np.zeros((2, 5))], [np.zeros((2, 6))])


@pytest.mark.parametrize("candidates", [1, 3])
def test_a_different_number_of_prompts_is_an_error(candidates: int):
    reference = [np.ones((1, 3)), np.ones((1, 3))]
    with pytest.raises(ValueError):
        logit_fidelity(reference, [np.ones((1, 3))] * candidates)


def test_nothing_to_compare_is_an_error():
    with pytest.raises(ValueError, match="no logits"):
        logit_fidelity([], [])


def test_an_all_zero_reference_is_exact_only_when_the_candidate_is_zero_too():
    assert logit_fidelity([np.zeros((1, 3))], [np.zeros((1, 3))]).nmse == 0.0
    assert logit_fidelity([np.zeros((1, 3))], [np.array([[0.0, 0.1, 0.0]])]).verdict == "fail"


@pytest.mark.parametrize(
    ("nmse", "verdict"),
    [
        (0.0, "excellent"),
        (NMSE_EXCELLENT * 0.999, "excellent"),
        (NMSE_EXCELLENT, "pass"),  # the thresholds are strict: llama.cpp's "below 1e-4"
        (NMSE_PASS * 0.999, "pass"),
        (NMSE_PASS, "fail"),
        (1.0, "fail"),
    ],
)
def test_verdict_boundaries(nmse: float, verdict: str):
    assert NMSE_EXCELLENT == 1e-4 and NMSE_PASS == 1e-2
    assert LogitFidelity(0.0, nmse, 1.0, 1).verdict == verdict


def test_to_json_holds_every_field():
    fidelity = LogitFidelity(0.25, 1e-5, 0.75, 8)
    assert fidelity.to_json() == {"max_abs_diff": 0.25, "nmse": 1e-5, "top1_agreement": 0.75, "positions": 8}
