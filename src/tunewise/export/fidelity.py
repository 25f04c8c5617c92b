"""How closely an exported model reproduces the model that was evaluated: its logits on the same token ids."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# llama.cpp's own conversion check: NMSE below 1e-2 passes, below 1e-4 is excellent.
NMSE_PASS = 1e-2
NMSE_EXCELLENT = 1e-4


@dataclass(frozen=True)
class LogitFidelity:
    """Logits of a candidate against the reference, over every compared position of every prompt."""

    max_abs_diff: float  # the largest |Δlogit| anywhere
    nmse: float  # Σ(candidate − reference)² / Σ reference²
    top1_agreement: float  # share of positions whose arg-max token is the same
    positions: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def verdict(self) -> str:
        """llama.cpp's wording for an NMSE: excellent, pass or fail."""
        if self.nmse < NMSE_EXCELLENT:
            return "excellent"
        return "pass" if self.nmse < NMSE_PASS else "fail"


def logit_fidelity(reference: Sequence[np.ndarray], candidate: Iterable[np.ndarray]) -> LogitFidelity:
    """Compare two models' logits prompt by prompt; each array is (positions, vocab) or (vocab,). `candidate` may
    be lazy (a generator computing one prompt's logits at a time), so only one candidate array is held at once."""
    if not reference:
        raise ValueError("no logits to compare")
    max_abs, squared_error, squared_reference, agree, positions = 0.0, 0.0, 0.0, 0, 0
    for ref, cand in zip(reference, candidate, strict=True):  # strict: a count mismatch is an error
        ref, cand = np.atleast_2d(np.asarray(ref, np.float64)), np.atleast_2d(np.asarray(cand, np.float64))
        if ref.shape != cand.shape:
            raise ValueError(f"logit shapes differ: {ref.shape} vs {cand.shape}")
        diff = cand - ref
        max_abs = max(max_abs, float(np.abs(diff).max()))
        squared_error += float((diff**2).sum())
        squared_reference += float((ref**2).sum())
        agree += int((ref.argmax(-1) == cand.argmax(-1)).sum())
        positions += ref.shape[0]
    nmse = squared_error / squared_reference if squared_reference else float(squared_error > 0)
    return LogitFidelity(max_abs, nmse, agree / positions, positions)
