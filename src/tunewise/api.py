"""The Python API: the command line's stages as functions returning typed results (for notebooks and scripts).

    import tunewise
    project = tunewise.Project("config.yaml", overrides={"train.epochs": 2})
    result = project.run()
    result.table()          # one row per model × prompt: metric, Δ vs base with its 95% CI and p-value
    result.run_dir          # the run directory the CLI would have written

`Project` holds a validated config and the file it came from (runs are named after it); the functions below take
a config (a `Config`, a YAML path or a dict) directly.

Every function prints the same progress and tables as the CLI to `console` (pass `Console(quiet=True)` to silence
it). A bad config or bad data raises `tunewise.TunewiseError` with the one-line message the CLI prints.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rich.console import Console
from rich.markup import escape

from tunewise.config import Config, config_from_mapping
from tunewise.config import load_config as _load_config_file
from tunewise.errors import ConfigError, TunewiseError
from tunewise.evaluate.stats import Difference

if TYPE_CHECKING:
    from tunewise.pipeline.estimate_stage import RunEstimate

ConfigSource = Config | str | Path | Mapping[str, Any]
DEFAULT_CONFIG_NAME = "tunewise.yaml"  # names the runs of a config that came from no file (see track.rundir.run_name)
Resume = Literal["auto", "fresh", "newest"] | Path | str | None


@dataclass(frozen=True)
class ModelScore:
    """One row of the evaluation table: a model (× prompt variant) and its metrics on the evaluated split."""

    model: str
    metrics: dict[str, Any]
    vs_base: Difference | None = None  # the primary metric's paired-bootstrap difference against the prompted base


@dataclass(frozen=True)
class RunResult:
    """What `run`, `train` and `evaluate` return: the run directory and the evaluation with confidence intervals."""

    run_dir: Path
    task: str
    primary_metric: str
    scores: list[ModelScore]
    differences: dict[str, Difference] = field(default_factory=dict)  # fine-tuned vs base, every metric compared
    train: dict[str, Any] | None = None  # steps, best step and validation metric, adapter path, …

    def score(self, model: str = "fine-tuned", metric: str | None = None) -> float:
        """The metric (default: the primary one) of one row, e.g. `score("base")`."""
        row = next((s for s in self.scores if s.model == model), None)
        if row is None:
            raise KeyError(f"no model {model!r} in this result; rows: {', '.join(s.model for s in self.scores)}")
        return float(row.metrics[metric or self.primary_metric])

    @property
    def delta(self) -> Difference | None:
        """Fine-tuned minus base on the primary metric, with its 95% CI and p-value (None without both)."""
        return self.differences.get(self.primary_metric)

    @property
    def adapter(self) -> Path | None:
        """The best LoRA adapter the run saved, when it trained."""
        return Path(self.train["adapter"]) if self.train and self.train.get("adapter") else None

    def table(self) -> list[dict[str, Any]]:
        """Rows for `pandas.DataFrame(result.table())`: model, the primary metric, Δ vs base, CI, p-value."""
        rows = []
        for score in self.scores:
            diff = score.vs_base
            rows.append(
                {
                    "model": score.model,
                    self.primary_metric: score.metrics.get(self.primary_metric),
                    "delta_vs_base": diff.delta if diff else None,
                    "ci_low": diff.low if diff else None,
                    "ci_high": diff.high if diff else None,
                    "p_value": diff.p_value if diff else None,
                }
            )
        return rows


@dataclass(frozen=True)
class CurationResult:
    """What `curate` returns: the curated split files, the reports, and every step's counts."""

    splits: dict[str, Path]
    report_json: Path
    report_html: Path
    n_input: int
    n_kept: int
    steps: list[dict[str, Any]]  # per step: name, records in, kept, dropped by reason
    rejected: dict[str, int]  # records left out, by category


def load_config(
    source: str | Path | Mapping[str, Any], overrides: Sequence[str] | Mapping[str, Any] | None = ()
) -> Config:
    """A validated config from a YAML file or a dict, with dotted overrides (`["train.lr=1e-4"]` or
    `{"train.lr": 1e-4}`). Relative data paths resolve against the file's folder (a dict: the working directory)."""
    as_strings = _override_strings(overrides)
    if isinstance(source, Mapping):
        return config_from_mapping(dict(source), as_strings, base_dir=Path.cwd())
    return _load_config_file(Path(source), as_strings)


def curate(
    config: ConfigSource,
    *,
    console: Console | None = None,
    engine: Literal["local", "ray"] | str | None = None,
    address: str | None = None,
) -> CurationResult:
    """Run the config's `curate:` steps: write the curated splits and curation_report.{json,html}. `engine`
    and `address` override curate.engine and curate.ray_address."""
    from tunewise.curate.stage import curate as curate_stage

    resolved = _config(config)
    if engine is not None or address is not None:
        if resolved.curate is None:
            raise ConfigError("the config has no curate: section; add one (see configs/ and examples/)")
        if engine not in (None, "local", "ray"):
            raise ConfigError(f"unknown curation engine {engine!r}: use local or ray")
        update = {"engine": engine or resolved.curate.engine, "ray_address": address or resolved.curate.ray_address}
        resolved = resolved.model_copy(update={"curate": resolved.curate.model_copy(update=update)})
    outcome = curate_stage(resolved, console or Console())
    result = outcome.result
    rejected = dict(result.reject_counts)
    steps = [
        {"name": s.name, "n_in": s.n_in, "kept": s.kept, "dropped": dict(s.dropped), "changed": s.changed}
        for s in result.steps
    ]
    return CurationResult(
        outcome.splits, outcome.report_json, outcome.report_html, result.n_input, result.kept_count, steps, rejected
    )


def run(
    config: ConfigSource,
    *,
    resume: Resume = "auto",
    allow_code_execution: bool = False,
    allow_unconfined_code: bool = False,
    console: Console | None = None,
    config_path: Path | None = None,
) -> RunResult:
    """Curate if configured, evaluate the prompted base model, fine-tune with LoRA, evaluate the fine-tune, compare.

    `resume`: "auto" continues an unfinished run of the same config and data if there is one, "newest" must
    continue one (an error if none can be), "fresh" starts a new run, a run directory continues that run."""
    from tunewise.pipeline import run_job

    cfg, path = _config_and_path(config, config_path)
    with _code_permission(allow_code_execution, allow_unconfined_code):
        outcome = run_job(cfg, path, console or Console(), resume=resume_request(resume))
    result = _run_result(outcome)
    # The run's `export:` section: ship it now, measured like `tunewise export` (by rank 0 alone, of several).
    if cfg.export is not None and outcome.leader:
        try:
            export(outcome.run_dir, settings=cfg.export, console=console, overwrite=True)
        except TunewiseError as exc:  # the run itself succeeded: keep its result, say what to do about the export
            (console or Console()).print(
                f"[yellow]the run is complete, its export failed: {escape(str(exc))}; fix that, then run "
                f"tunewise export {escape(str(outcome.run_dir))}[/]"
            )
    return result


def launch(command: Sequence[str], nproc: int, config: ConfigSource) -> int:
    """Run the command line `tunewise COMMAND...` (e.g. `["run", "config.yaml", "train.lr=1e-4"]`) in `nproc`
    data-parallel training processes on this machine, as `torchrun --standalone --nproc-per-node N -m tunewise.cli
    COMMAND...` would; `config` is the command's config, checked for the launch before any process starts.

    Returns 0 when every process succeeded, else the exit code of one that stopped with an error it printed (2) or
    an interruption (130). Raises TunewiseError naming a process that died without a word (killed, crashed).
    In each process `run` and `train` work as usual: rank 0 runs the whole run, the other ranks join its training
    stage and return a result with the run directory and their training summary only."""
    from tunewise.pipeline.launch import launch as launch_processes

    if nproc < 1:
        raise TunewiseError(f"nproc must be 1 or more, not {nproc}")
    return launch_processes([str(part) for part in command], nproc, _config(config))


def export(
    run_dir: str | Path,
    *,
    formats: Sequence[str] | None = None,
    out: str | Path | None = None,
    dtype: str | None = None,
    gguf_type: str | None = None,
    overwrite: bool = False,
    settings: Any = None,
    console: Console | None = None,
) -> ExportResult:
    """Ship a finished run: merged safetensors, a GGUF with its Ollama Modelfile and/or the adapter, with a model
    card and export.json holding each artifact's fidelity. Unset options come from the run config's `export:`
    section, else the defaults (merged + gguf, float32, f16). Published to `out` (default RUN_DIR/export) whole."""
    from tunewise.config import ExportConfig
    from tunewise.export.job import export_run
    from tunewise.export.run_source import read_run_source

    given = {"formats": list(formats) if formats else None, "dtype": dtype, "gguf_type": gguf_type}
    given = {key: value for key, value in given.items() if value}
    _export_settings(given)  # the caller's options, checked before the run is read
    run_path = Path(run_dir)
    base = settings or read_run_source(run_path).config.export or ExportConfig()
    chosen = _export_settings({**base.model_dump(), **given})
    outcome = export_run(run_path, chosen, console or Console(), out=Path(out) if out else None, overwrite=overwrite)
    return ExportResult(outcome.out_dir, outcome.artifacts, outcome.report)


@dataclass(frozen=True)
class ExportResult:
    """What `export` returns: the export directory, each artifact's path and export.json's content (fidelity)."""

    out_dir: Path
    artifacts: dict[str, Path]
    report: dict[str, Any]

    @property
    def checks(self) -> list[dict[str, Any]]:
        """One entry per artifact: logits against its source, task score and its difference to the adapter."""
        return list(self.report.get("checks", []))


def _export_settings(raw: dict[str, Any]) -> Any:
    """ExportConfig from options, or the config's one-line error naming the option as an `export:` key."""
    from tunewise.config import ExportConfig
    from tunewise.config.error_messages import check

    settings, problems = check(ExportConfig, raw)
    if settings is None:
        raise TunewiseError(f"export: {next(iter(problems.values()))}")
    return settings


def train(
    config: ConfigSource, *, resume: Resume = "auto", console: Console | None = None, config_path: Path | None = None
) -> RunResult:
    """Fine-tune only: the run directory with the best adapter (`result.adapter`) and metrics.jsonl."""
    from tunewise.pipeline import train_job

    cfg, path = _config_and_path(config, config_path)
    return _run_result(train_job(cfg, path, console or Console(), resume=resume_request(resume)))


def evaluate(
    config: ConfigSource,
    adapters: Sequence[str | Path] = (),
    *,
    allow_code_execution: bool = False,
    allow_unconfined_code: bool = False,
    console: Console | None = None,
    config_path: Path | None = None,
) -> RunResult:
    """Evaluate the base model and each LoRA adapter (a run's `adapter/`) on the same split, every prompt variant."""
    from tunewise.pipeline import eval_job

    cfg, path = _config_and_path(config, config_path)
    with _code_permission(allow_code_execution, allow_unconfined_code):
        outcome = eval_job(cfg, path, console or Console(), adapters=[Path(a) for a in adapters])
    return _run_result(outcome)


def predict(
    config: ConfigSource,
    input: str | Path,
    *,
    adapter: str | Path | None = None,
    output: str | Path | None = None,
    console: Console | None = None,
) -> Path:
    """Each input row with the model's prediction in `pred`, as JSONL; returns the file written
    (default `<input stem>.predictions.jsonl` beside the input)."""
    from tunewise.evaluate.predict import predict as predict_rows

    out = Path(output) if output is not None else None
    model_adapter = Path(adapter) if adapter is not None else None
    return predict_rows(_config(config), Path(input), out, model_adapter, console or Console())


def sweep(
    config: ConfigSource,
    *,
    n_trials: int | None = None,
    allow_code_execution: bool = False,
    allow_unconfined_code: bool = False,
    console: Console | None = None,
    config_path: Path | None = None,
) -> Path:
    """The config's `sweep:` (Optuna, median-pruned, resumable); returns the sweep directory with best.yaml."""
    from tunewise.experiments.sweep import sweep as run_sweep

    cfg, path = _config_and_path(config, config_path)
    with _code_permission(allow_code_execution, allow_unconfined_code):
        return run_sweep(cfg, path, console or Console(), n_trials)


def ablate(
    config: ConfigSource,
    *,
    allow_code_execution: bool = False,
    allow_unconfined_code: bool = False,
    console: Console | None = None,
    config_path: Path | None = None,
) -> Path:
    """The config's `ablate:` (learning curve, curated vs raw); returns the directory with ablation.json."""
    from tunewise.experiments.ablate import ablate as run_ablation

    cfg, path = _config_and_path(config, config_path)
    with _code_permission(allow_code_execution, allow_unconfined_code):
        return run_ablation(cfg, path, console or Console())


def bakeoff(
    config: ConfigSource,
    models: Sequence[str] = (),
    *,
    allow_code_execution: bool = False,
    allow_unconfined_code: bool = False,
    console: Console | None = None,
    config_path: Path | None = None,
) -> Path:
    """Compare base models on this task (the config's `bakeoff:`, or `models`); returns the directory with
    bakeoff.json, bakeoff.html and best.yaml."""
    from tunewise.experiments.bakeoff import bakeoff as run_bakeoff

    cfg, path = _config_and_path(config, config_path)
    with _code_permission(allow_code_execution, allow_unconfined_code):
        return run_bakeoff(cfg, path, console or Console(), models=list(models) or None)


def estimate(
    config: ConfigSource,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    probe_steps: int = 3,
    console: Console | None = None,
) -> RunEstimate:
    """The model's size and the configured LoRA run's peak memory and time, in seconds and without training: the
    arithmetic of docs/estimate.md, checked by `probe_steps` real training steps in a child process (0: none).
    Prints the breakdown to `console`; the result's `to_json()` holds every figure."""
    from tunewise.pipeline.estimate_stage import estimate_run, print_estimate

    if probe_steps < 0:
        raise TunewiseError(f"probe_steps must be 0 (no probe) or more, not {probe_steps}")
    if isinstance(config, Config) and overrides:
        raise TunewiseError("overrides apply to a config file or dict; edit the Config object directly")
    cfg = config if isinstance(config, Config) else load_config(config, overrides)
    out = console or Console()
    result = estimate_run(cfg, out, probe_steps)
    print_estimate(out, result)
    return result


class Project:
    """A validated config and the file it came from, with the command line's stages as methods.

    `Project("config.yaml", overrides=["train.lr=1e-4"])`, or a dict for the config (relative paths then resolve
    against the working directory). Each method prints what the CLI prints to `console` and returns a typed result.
    """

    def __init__(
        self,
        config: ConfigSource,
        overrides: Sequence[str] | Mapping[str, Any] = (),
        *,
        console: Console | None = None,
    ) -> None:
        if isinstance(config, Config):
            if overrides:
                raise TunewiseError("overrides apply to a config file or dict; edit the Config object directly")
            self.config = config
        else:
            self.config = load_config(config, overrides)
        self.config_path = Path(config) if isinstance(config, str | Path) else Path.cwd() / DEFAULT_CONFIG_NAME
        self.console = console or Console()

    def curate(self) -> CurationResult:
        return curate(self.config, console=self.console)

    def run(self, *, resume: Resume = "auto", allow_code_execution: bool = False) -> RunResult:
        return run(
            self.config,
            resume=resume,
            allow_code_execution=allow_code_execution,
            console=self.console,
            config_path=self.config_path,
        )

    def train(self, *, resume: Resume = "auto") -> RunResult:
        return train(self.config, resume=resume, console=self.console, config_path=self.config_path)

    def evaluate(self, adapters: Sequence[str | Path] = (), *, allow_code_execution: bool = False) -> RunResult:
        return evaluate(
            self.config,
            adapters,
            allow_code_execution=allow_code_execution,
            console=self.console,
            config_path=self.config_path,
        )

    def predict(
        self, input: str | Path, *, adapter: str | Path | None = None, output: str | Path | None = None
    ) -> Path:
        return predict(self.config, input, adapter=adapter, output=output, console=self.console)

    def sweep(self, *, n_trials: int | None = None) -> Path:
        return sweep(self.config, n_trials=n_trials, console=self.console, config_path=self.config_path)

    def bakeoff(self, models: Sequence[str] = ()) -> Path:
        return bakeoff(self.config, models, console=self.console, config_path=self.config_path)

    def ablate(self) -> Path:
        return ablate(self.config, console=self.console, config_path=self.config_path)


def resume_request(resume: Resume) -> Any:
    """The run-directory choice of `--resume [RUN_DIR]` / `--fresh` / neither, from the API's `resume` value."""
    from tunewise.track.resume_target import ResumeRequest

    if resume is None or resume == "auto":
        return ResumeRequest("auto")
    if resume == "fresh":
        return ResumeRequest("fresh")
    if resume == "newest":  # `--resume` without a run: the newest unfinished run of this config, or an error
        return ResumeRequest("resume", None)
    run_dir = Path(resume)
    if not run_dir.is_dir():
        raise TunewiseError(f"resume {run_dir}: no such run directory")
    return ResumeRequest("resume", run_dir)


def _config(config: ConfigSource) -> Config:
    return config if isinstance(config, Config) else load_config(config)


def _config_and_path(config: ConfigSource, config_path: Path | None = None) -> tuple[Config, Path]:
    """The config and the file it came from: runs are named after it unless `output.name` is set."""
    if isinstance(config, str | Path) and config_path is None:
        config_path = Path(config)
    return _config(config), config_path or Path.cwd() / DEFAULT_CONFIG_NAME


def _override_strings(overrides: Sequence[str] | Mapping[str, Any] | None) -> list[str]:
    if not overrides:
        return []
    if isinstance(overrides, Mapping):  # JSON is YAML: each value parses back to itself, type included
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    if isinstance(overrides, str):
        return [overrides]
    return list(overrides)


@contextmanager
def _code_permission(allowed: bool, unconfined: bool) -> Iterator[None]:
    from tunewise.evaluate.code_permission import code_execution_allowed

    if unconfined and not allowed:
        raise TunewiseError(
            "unconfined code execution (--allow-unconfined-code) only widens code execution "
            "(--allow-code-execution); pass both"
        )
    with code_execution_allowed(allowed, unconfined):
        yield


def _run_result(outcome: Any) -> RunResult:
    comparison = outcome.comparison
    scores = [
        ModelScore(cell, dict(metrics), comparison.vs_reference.get(cell) if comparison.reference == "base" else None)
        for cell, metrics in outcome.evaluation.results.items()
    ]
    return RunResult(
        outcome.run_dir, outcome.task, outcome.primary_metric, scores, dict(comparison.differences), outcome.train
    )
