"""`tunewise sweep`: an Optuna study over config keys, one fine-tune per trial, resumable from its SQLite file.

Pruning: each trial reports the validation metric (`train.metric`) at every evaluation, with the
evaluation's index (0, 1, 2, ...) as the Optuna step, not the optimizer step: so `sweep.warmup_evals`
is `n_warmup_steps` directly (that many evaluations are never pruned), and trials that sweep
batch size or eval_steps are still compared evaluation by evaluation.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, Trial, TrialState
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from transformers import TrainerCallback

from tunewise import pipeline
from tunewise.config import Config, SweepParam, greater_is_better, validate_config
from tunewise.core.plots import save_png
from tunewise.data.variants import DEFAULT_PROMPT
from tunewise.errors import ConfigError, TunewiseError
from tunewise.experiments import curated_once, experiment_name, set_dotted
from tunewise.track.store import index_run, read_info, write_info

VARIANT_KEY = "prompt.variant"
ERROR_ATTR, INTERRUPTED_ATTR, RUN_DIR_ATTR = "error", "interrupted", "run_dir"


def sweep(config: Config, config_path: Path, console: Console, n_trials: int | None = None) -> Path:
    """Run (or resume) the sweep; returns `<output.dir>/sweeps/<name>/` with trials.json, best.yaml, plots/."""
    if config.sweep is None:
        raise ConfigError("the config has no sweep: section (sweep.params: {train.lr: {low: 1e-5, high: 1e-3}})")
    settings = config.sweep
    _check_params(settings.params)
    target = n_trials if n_trials is not None else settings.n_trials
    name = experiment_name(config, config_path)
    sweep_dir = config.output.dir / "sweeps" / name
    sweep_dir.mkdir(parents=True, exist_ok=True)
    metric = config.train.metric
    study = _open_study(config, target, name, sweep_dir, metric)
    _check_space_unchanged(study, settings.params)
    finished = sum(_counts_as_finished(t) for t in study.trials)
    remaining = max(0, target - finished)
    console.print(
        f"sweep {escape(name)}: {finished} trials already finished, {remaining} to run; "
        f"study in {escape(str(sweep_dir))}"
    )

    trial_base = curated_once(config, console)  # curate once: every trial trains on the same curated splits
    objective = _Objective(trial_base, settings.params, config_path, console, sweep_dir / "trials")
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # we print one line per trial; no tracebacks for user errors
    try:
        if remaining:
            timeout = settings.timeout_minutes * 60 if settings.timeout_minutes else None
            study.optimize(
                objective, n_trials=remaining, timeout=timeout, catch=(Exception,), callbacks=[_announce(console)]
            )
    finally:  # an interrupted sweep still leaves an accurate trials.json
        optuna.logging.set_verbosity(previous)
        rows = _trial_rows(study)
        (sweep_dir / "trials.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    best = study.best_trial if any(t.state == TrialState.COMPLETE for t in study.trials) else None
    if best is not None:
        _write_best(config, best, name, sweep_dir / "best.yaml")
    _plot(study, len(settings.params), sweep_dir / "plots", console)
    _print_table(console, rows, list(settings.params), best, metric)
    return sweep_dir


def _check_params(params: dict[str, SweepParam]) -> None:
    for key, param in params.items():
        if param.log and param.low is not None and param.low <= 0:
            raise ConfigError(f"sweep.params.{key}: log scale needs low > 0 (got {param.low})")
        primitive = (type(None), bool, int, float, str)
        if param.choices is not None and not all(isinstance(c, primitive) for c in param.choices):
            raise ConfigError(f"sweep.params.{key}: choices must be numbers, strings, booleans or null")


def _open_study(config: Config, n_trials: int, name: str, sweep_dir: Path, metric: str) -> optuna.Study:
    """Create the study, or load it to resume: finished trials are kept, interrupted ones marked failed."""
    greater = greater_is_better(metric, config.train.greater_is_better)  # the Trainer's rule
    settings = config.sweep
    assert settings is not None
    startup = min(5, max(1, n_trials // 4))  # prune only once a few trials (a quarter of the budget, 1-5) completed
    pruner = optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=settings.warmup_evals)
    storage = f"sqlite:///{(sweep_dir / 'study.db').resolve()}"
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        load_if_exists=True,
        direction="maximize" if greater else "minimize",
        sampler=optuna.samplers.TPESampler(seed=config.train.seed),
        pruner=pruner if settings.prune else optuna.pruners.NopPruner(),
    )
    known = study.user_attrs.get("metric")
    if known is not None and known != metric:
        raise ConfigError(f"{sweep_dir}: this study optimizes {known}, not {metric}; set another output.name")
    study.set_user_attr("metric", metric)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # Left RUNNING by a killed process (a single-process sweep has nothing else running): redo it.
        running = Trial(study, trial._trial_id)
        running.set_user_attr(INTERRUPTED_ATTR, True)
        study.tell(running, state=TrialState.FAIL)
    if study.trials:
        # A fresh sampler with the same seed would replay the first trials' parameters on resume.
        study.sampler = optuna.samplers.TPESampler(seed=config.train.seed + len(study.trials))
    return study


def _counts_as_finished(trial: FrozenTrial) -> bool:
    """Completed, pruned, or failed with a user error; an interrupted trial is run again."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and ERROR_ATTR in trial.user_attrs


class PruningCallback(TrainerCallback):
    """Reports the validation metric to the trial at each evaluation and stops training when Optuna
    says prune. Stopping (not raising) lets the Trainer save the run dir; the objective raises after."""

    def __init__(self, trial: Trial, metric: str) -> None:
        self.trial, self.metric = trial, metric
        self.evaluations = 0
        self.pruned_at: int | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        # args.output_dir is <run dir>/checkpoints: known here even if the trial fails later.
        self.trial.set_user_attr(RUN_DIR_ATTR, str(Path(args.output_dir).parent))

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        value = (metrics or {}).get(self.metric)
        if value is None:
            return
        self.trial.report(float(value), self.evaluations)
        self.evaluations += 1
        if self.pruned_at is None and self.trial.should_prune():
            self.pruned_at = state.global_step
            control.should_training_stop = True


class _Objective:
    """One trial: sample, build the trial's config, train (no test evaluation), return the best validation value."""

    def __init__(
        self, base: Config, space: dict[str, SweepParam], config_path: Path, console: Console, trials_dir: Path
    ) -> None:
        self.base, self.space, self.config_path = base, space, config_path
        self.console, self.trials_dir = console, trials_dir

    def __call__(self, trial: Trial) -> float:
        params = {key: _suggest(trial, key, param) for key, param in self.space.items()}
        self.console.rule(f"trial {trial.number}: {_format_params(params)}")
        callback = PruningCallback(trial, self.base.train.metric)
        try:
            trial_config = trial_config_for(self.base, params, self.trials_dir, f"trial-{trial.number}")
            outcome = pipeline.train_job(trial_config, self.config_path, self.console, callbacks=[callback])
            trial.set_user_attr(RUN_DIR_ATTR, str(outcome.run_dir))
            best = _best_validation(outcome.run_dir / "metrics.jsonl")
        except TunewiseError as exc:
            trial.set_user_attr(ERROR_ATTR, str(exc))
            raise
        except KeyboardInterrupt:
            trial.set_user_attr(INTERRUPTED_ATTR, True)
            raise
        except Exception as exc:  # e.g. out of memory or NaN: this trial failed, the sweep goes on
            trial.set_user_attr(ERROR_ATTR, f"{type(exc).__name__}: {exc}")
            raise
        if callback.pruned_at is not None:
            _mark_pruned(outcome.run_dir, trial_config.output.dir)
            raise optuna.TrialPruned(f"pruned at step {callback.pruned_at}")
        return best


def _mark_pruned(run_path: Path, workspace: Path) -> None:
    """The run itself ended normally; the run store should still say the sweep cut it short."""
    info = read_info(run_path)
    if info is not None:
        info.status = "pruned"
        write_info(run_path, info)
        index_run(workspace, run_path)


def _check_space_unchanged(study: optuna.Study, space: dict[str, SweepParam]) -> None:
    """A resumed study must sample from a space Optuna can continue (e.g. the same choices)."""
    for trial in study.trials:
        for key, stored in trial.distributions.items():
            if key not in space:
                continue
            try:
                new = _distribution(space[key])
                optuna.distributions.check_distribution_compatibility(stored, new)
            except ValueError as exc:
                raise ConfigError(
                    f"sweep.params.{key} changed since this sweep started ({exc}); "
                    "keep the old search space to resume, or set output.name to start a new sweep"
                ) from None


def _distribution(param: SweepParam) -> optuna.distributions.BaseDistribution:
    if param.choices is not None:
        return optuna.distributions.CategoricalDistribution(param.choices)
    if isinstance(param.low, int) and isinstance(param.high, int):
        return optuna.distributions.IntDistribution(param.low, param.high, log=param.log)
    return optuna.distributions.FloatDistribution(float(param.low), float(param.high), log=param.log)  # type: ignore[arg-type]


def _suggest(trial: Trial, key: str, param: SweepParam) -> Any:
    if param.choices is not None:
        return trial.suggest_categorical(key, param.choices)
    low, high = param.low, param.high
    if isinstance(low, int) and isinstance(high, int):  # lora.r: 4..32 stays an int
        return trial.suggest_int(key, low, high, log=param.log)
    return trial.suggest_float(key, float(low), float(high), log=param.log)  # type: ignore[arg-type]


def trial_config_for(base: Config, params: dict[str, Any], output_dir: Path | None, name: str | None) -> Config:
    """`base` with the sampled values set, without the sweep section; `prompt.variant` picks a variant's
    prompt (its variants kept, so a run still evaluates them); output goes to `output_dir`/`name`."""
    raw = base.model_dump(mode="json")
    raw.pop("sweep", None)
    variant = params.get(VARIANT_KEY)
    if variant is not None and variant != DEFAULT_PROMPT:
        chosen = base.prompt.variant(variant).model_dump(mode="json")
        raw["prompt"] = {**chosen, "variants": raw["prompt"]["variants"]}
    for key, value in params.items():
        if key != VARIANT_KEY:
            set_dotted(raw, key, value)
    if output_dir is not None:
        raw["output"]["dir"] = str(output_dir)
    raw["output"]["name"] = name
    return validate_config(raw, source=f"sweep {name}")


def _best_validation(metrics_path: Path) -> float:
    ends = [json.loads(line) for line in metrics_path.read_text(encoding="utf-8").splitlines() if '"train_end"' in line]
    best = ends[-1].get("best_metric") if ends else None
    if best is None:
        raise TunewiseError(f"{metrics_path}: training ended without a validation metric")
    return float(best)


def _announce(console: Console) -> Callable[[optuna.Study, FrozenTrial], None]:
    def report(study: optuna.Study, trial: FrozenTrial) -> None:
        value = f" {trial.value:.4f}" if trial.value is not None else ""
        error = f": {trial.user_attrs[ERROR_ATTR]}" if ERROR_ATTR in trial.user_attrs else ""
        console.print(f"trial {trial.number}: {trial.state.name.lower()}{value}{escape(error)}")

    return report


def _trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    rows = []
    for trial in sorted(study.trials, key=lambda t: t.number):
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "params": trial.params,
                "value": trial.value,
                "run_dir": trial.user_attrs.get(RUN_DIR_ATTR),
                "seconds": round(trial.duration.total_seconds(), 2) if trial.duration else None,
                "error": trial.user_attrs.get(ERROR_ATTR)
                or ("interrupted" if trial.user_attrs.get(INTERRUPTED_ATTR) else None),
            }
        )
    return rows


def _write_best(config: Config, best: FrozenTrial, name: str, path: Path) -> None:
    """The original config (raw data and curate section: it reproduces the whole run) with the best values.
    It keeps the sweep's output.dir, so `tunewise run best.yaml` writes where the user's runs go."""
    best_config = trial_config_for(config, best.params, None, f"{name}-best")
    raw = best_config.model_dump(mode="json")
    header = f"# Best trial {best.number} of sweep {name}: {config.train.metric} = {best.value}\n"
    path.write_text(header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _plot(study: optuna.Study, n_params: int, plots_dir: Path, console: Console) -> None:
    import matplotlib.pyplot as plt  # optuna's plots use pyplot; without a display it falls back to Agg
    from optuna.visualization import matplotlib as optuna_plots

    completed = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    plots: dict[str, Any] = {}
    if completed:
        plots["history.png"] = optuna_plots.plot_optimization_history
    if completed >= 2 and n_params > 1:  # importance of a single parameter, or from one trial, means nothing
        plots["importance.png"] = optuna_plots.plot_param_importances
    plots_dir.mkdir(exist_ok=True)
    for file_name, plot in plots.items():
        try:  # rc_context: optuna's plots switch the process-wide style to ggplot; this restores it
            with warnings.catch_warnings(), plt.rc_context():
                warnings.simplefilter("ignore")  # optuna's matplotlib plots are marked experimental
                ax = plot(study)
                save_png(ax.figure, plots_dir / file_name)
            plt.close(ax.figure)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. all trials sampled the same values
            console.print(f"[yellow]{file_name} skipped: {escape(str(exc))}[/]")


def _format_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{key}={_format_value(value)}" for key, value in params.items())


def _format_value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _print_table(
    console: Console, rows: list[dict[str, Any]], keys: list[str], best: FrozenTrial | None, metric: str
) -> None:
    table = Table(title=f"Sweep trials ({escape(metric)}; * best)")
    for column in ("#", "state", *keys, metric, "seconds"):
        table.add_column(escape(column), justify="left" if column == "state" else "right")
    for row in rows:
        mark = " *" if best is not None and row["number"] == best.number else ""
        params = [_format_value(row["params"][k]) if k in row["params"] else "-" for k in keys]
        value = f"{row['value']:.4f}{mark}" if row["value"] is not None else "-"
        seconds = f"{row['seconds']:.0f}" if row["seconds"] is not None else "-"
        table.add_row(str(row["number"]), row["state"].lower(), *map(escape, params), value, seconds)
    console.print(table)
    if best is None:
        console.print("[yellow]no trial completed: no best.yaml[/]")
    else:
        console.print(
            f"best: trial {best.number}, {escape(metric)} = {best.value:.4f} ({escape(_format_params(best.params))})"
        )
