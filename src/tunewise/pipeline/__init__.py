"""The stages of `tunewise run` (prepare data, evaluate the base model, train, evaluate the fine-tune, write
results) and the jobs composed of them: `run_job`, `train_job`, `eval_job`.

The jobs load on first use, so a stage used alone (`estimate_stage`) does not import the whole run's stack."""

from __future__ import annotations

from typing import Any

__all__ = ["RunOutcome", "eval_job", "run_job", "train_job"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tunewise.pipeline import jobs

        return getattr(jobs, name)
    raise AttributeError(f"module 'tunewise.pipeline' has no attribute {name!r}")
