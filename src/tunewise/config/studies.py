"""The sections of studies over many runs: the hyperparameter search (`sweep`) and the data ablations
(`ablate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from tunewise.config.section import Section


class SweepParam(Section):
    """A range (low/high, optionally log-scaled; ints stay ints) or a list of choices."""

    low: int | float | None = Field(None, description="lower end of the range; with two ints, only ints are tried")
    high: int | float | None = Field(None, description="upper end of the range")
    log: bool = Field(False, description="sample the range on a log scale (needs low > 0)")
    choices: list[Any] | None = Field(None, description="values to try instead of a range")

    @model_validator(mode="after")
    def _range_or_choices(self) -> SweepParam:
        if (self.choices is None) == (self.low is None or self.high is None):
            raise ValueError("give either low and high, or choices")
        if self.choices is None and self.low is not None and self.high is not None and self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.choices is not None and not self.choices:
            raise ValueError("choices is empty")
        return self


class SweepConfig(Section):
    """A hyperparameter search with Optuna (`tunewise sweep`): each trial is one run with sampled values."""

    params: dict[str, SweepParam] = Field(
        description="dotted config key -> its range or choices, e.g. {train.lr: {low: 1e-5, high: 1e-3, log: true}}"
    )
    n_trials: int = Field(10, gt=0, description="trials in all; running the sweep again resumes up to this many")
    timeout_minutes: float | None = Field(None, gt=0, description="stop starting trials after this long")
    prune: bool = Field(True, description="median pruner on the validation metric at each evaluation")
    warmup_evals: int = Field(1, ge=0, description="evaluations before a trial may be pruned")


class AblateConfig(Section):
    """Data ablations (`tunewise ablate`): a learning curve, and curated against raw data."""

    fractions: list[float] = Field(
        default_factory=lambda: [0.1, 0.25, 0.5, 1.0],
        description="learning curve: fine-tune on nested seeded shares of the training set, each in (0, 1]; "
        "1.0 is always added",
    )
    curated_vs_raw: bool = Field(True, description="equal-budget fine-tune on a random raw sample vs curated")
    raw: Path | None = Field(None, description="raw training file (default: data.train of a curated config)")

    @model_validator(mode="after")
    def _check_fractions(self) -> AblateConfig:
        if any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError("fractions must be in (0, 1]")
        return self


class BakeoffConfig(Section):
    """Base models compared on this task (`tunewise bakeoff`): each candidate's estimate and probe, its prompted
    base model and a learning curve on nested training subsets, scored on the validation split only."""

    models: list[str] = Field(
        default_factory=list,
        description="candidate base models, each a model.name (alias, HF directory, GGUF file or hub id); "
        "`--model` on the command line replaces the list",
    )
    fractions: list[float] = Field(
        default_factory=lambda: [0.0625, 0.125, 0.25],
        description="nested shares of the training set each candidate is fine-tuned on, each in (0, 1); the "
        "validation metric of each is extrapolated to the full training set",
    )
    few_shot: int = Field(3, ge=0, description="solved examples in the few-shot base prompt; 0 = zero-shot only")
    verify_top: int = Field(
        0, ge=0, description="fine-tune this many top candidates on the full training set to check the extrapolation"
    )
    probe_steps: int = Field(3, ge=0, description="training steps of each candidate's measured probe; 0 = none")
    resamples: int = Field(1000, ge=100, description="bootstrap resamples of the validation examples")

    @model_validator(mode="after")
    def _check(self) -> BakeoffConfig:
        if not self.fractions:
            raise ValueError("fractions is empty; give two or three shares such as [0.0625, 0.125, 0.25]")
        if any(not 0 < f < 1 for f in self.fractions):
            raise ValueError("fractions must be in (0, 1): the full training set is the verification run")
        if len(set(self.models)) != len(self.models):
            raise ValueError("models lists a candidate twice")
        return self
