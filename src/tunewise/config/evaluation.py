"""The sections of what a run reports and where: evaluation (`eval`), the run folders (`output`) and experiment
trackers (`track`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from tunewise.config.section import Section


class EvalConfig(Section):
    """Evaluation of the base and the fine-tuned model on the same split with the same prompt."""

    split: Literal["test", "val"] = Field("test", description="the split evaluated")
    base: bool = Field(True, description="also evaluate the base model with the same prompt")
    batch_size: int = Field(16, gt=0, description="examples per evaluation batch")
    task: Literal["auto", "classification", "summarization", "qa", "generation", "code", "perplexity"] = Field(
        "auto", description="auto: label likelihood for classification, chrF/BLEU on generated text otherwise"
    )
    max_new_tokens: int = Field(128, gt=0, description="most tokens generated per answer")
    label_mode: Literal["likelihood", "generate"] = Field(
        "likelihood", description="classification: score each label, or generate freely and parse the label"
    )
    stop: list[str] = Field(default_factory=list, description="generation stops at the first of these")
    perplexity: bool = Field(True, description="also report reference perplexity for generative tasks")
    samples: int = Field(1, gt=0, description="code task: completions per problem (sampled when > 1)")
    k: list[int] = Field(default_factory=lambda: [1], description="code task: report pass@k for these k")
    timeout: float = Field(5.0, gt=0, description="code task: seconds per program")
    calibrate: bool = Field(
        False,
        description="classification with label_mode likelihood, evaluated on split test: also report base · "
        "calibrated and fine-tuned · calibrated rows, with per-label score offsets fitted on the validation split "
        "only to maximise macro-F1; the uncalibrated rows stay",
    )


class OutputConfig(Section):
    """Where runs are written."""

    dir: Path = Field(
        Path("runs"), description="workspace of runs, sweeps and ablations; relative to the current folder"
    )
    name: str | None = Field(
        None,
        description="name of runs, sweeps and ablations (default: the config file's name; config.yaml: its folder's)",
    )


TRACKERS = ("mlflow", "tensorboard", "wandb", "trackio")


class TrackConfig(Section):
    """Experiment trackers that receive each run besides its run directory."""

    report_to: list[Literal["mlflow", "tensorboard", "wandb", "trackio"]] = Field(
        default_factory=list, description="also send params, metrics and artifacts to these trackers"
    )
    experiment: str | None = Field(None, description="tracker experiment/project name (default: output.name)")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI (default: sqlite:///<output.dir>/mlflow.db)")
