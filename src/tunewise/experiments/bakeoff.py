"""`tunewise bakeoff`: candidate base models compared on the user's own task, with the costs of each.

For every candidate, on the same curated data and the same prompt:
1. the estimate of the full run (model size, peak memory, time) and its measured probe (`tunewise estimate`);
   a candidate whose estimate does not fit the machine's memory stops there, with the reason;
2. the prompted base model on the validation split, zero-shot and few-shot (one run: `tunewise eval`);
3. fine-tunes on nested shares of the training set (normal runs), each scored on the validation split, and the
   learning curve extrapolated to the full training set with a bootstrap interval (extrapolation.py);
4. optionally (`bakeoff.verify_top`) the full fine-tune of the top candidates, to check the extrapolation.

The test split is never used: the arms' `data.test` is the validation file, the test records are not copied where
the arms can read them, and every score is on validation.
Arms do not stop early (`train.patience: 0`), so each gets the budget its share of the data gives. A candidate
that fails (it does not load, its prompt does not render, a run breaks) is reported with the reason; the
others continue.
"""

from __future__ import annotations

import copy
import gc
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from tunewise import pipeline
from tunewise.config import BakeoffConfig, Config, greater_is_better, validate_config
from tunewise.errors import ConfigError, TunewiseError
from tunewise.evaluate.tasks import EvalTask
from tunewise.experiments import experiment_data, metric_ci, resampled_score, set_dotted, write_records
from tunewise.experiments.ablate import nested_subsets
from tunewise.experiments.bakeoff_report import print_table, recommendation, write_best_config, write_outputs
from tunewise.experiments.extrapolation import Extrapolation, extrapolate, metric_bounds, probability_best
from tunewise.pipeline.estimate_stage import estimate_run
from tunewise.train.probe import available_memory_bytes, training_device

FEW_SHOT_KINDS = {"classification", "completion", "alpaca"}  # the kinds prompt.few_shot supports
FEW_SHOT = "few-shot"


@dataclass
class Candidate:
    """One candidate's results; `failure` says why it stopped early (the others continue)."""

    model: str
    slug: str
    estimate: dict[str, Any] | None = None
    base: dict[str, dict[str, Any]] = field(default_factory=dict)  # prompt ("zero-shot", "few-shot") -> score
    arms: list[dict[str, Any]] = field(default_factory=list)
    extrapolation: Extrapolation | None = None
    verification: dict[str, Any] | None = None
    failure: str | None = None
    scorers: list[Any] = field(default_factory=list, repr=False)


@dataclass
class Setup:
    """What every candidate shares: the config template, the data files, the task and its examples."""

    settings: BakeoffConfig
    template: dict[str, Any]
    train_files: dict[float, tuple[Path, int]]  # fraction -> (file, examples); 1.0 is the full training set
    n_val: int
    task: EvalTask
    name: str
    out: Path
    seed: int
    kind: str
    user_model: str  # the config's own model.name: only it keeps the config's trust_remote_code, revision, gguf_file
    available_bytes: int | None  # memory free before the first candidate: every candidate is judged against it
    bounds: tuple[float | None, float | None] | None  # the primary metric's range, for the curve


def bakeoff(config: Config, config_path: Path, console: Console, models: list[str] | None = None) -> Path:
    """Run the bake-off; returns `<output.dir>/bakeoffs/<name>/` with bakeoff.json, bakeoff.html and best.yaml."""
    settings = config.bakeoff or BakeoffConfig()
    candidates = list(dict.fromkeys(models or settings.models))
    if not candidates:
        raise ConfigError("no candidate models: pass --model A --model B, or set bakeoff.models in the config")
    setup = _setup(config, config_path, settings, console)
    results = [_run_candidate(setup, model, slug, config_path, console) for model, slug in _slugs(candidates)]
    ranking = _rank(setup, results)
    for candidate in [c for c in ranking if c.extrapolation is not None][: settings.verify_top]:
        _verify(setup, candidate, config_path, console)
    payload = _payload(setup, results, ranking)
    write_outputs(payload, setup.out)
    if ranking:
        write_best_config(config, ranking[0].model, payload, setup.out / "best.yaml")
    print_table(console, payload)
    return setup.out


def _setup(config: Config, config_path: Path, settings: BakeoffConfig, console: Console) -> Setup:
    shared = experiment_data(config, config_path, "bakeoffs", console)
    name, out, curated, splits, task = shared.name, shared.out, shared.config, shared.splits, shared.task
    seed = curated.train.seed
    val_path = write_records(out / "data" / "val.jsonl", splits.val)
    fractions = sorted({*settings.fractions, 1.0})
    train_files = {
        fraction: (write_records(out / "data" / f"train-{fraction:g}.jsonl", subset), len(subset))
        for fraction, subset in nested_subsets(splits.train, fractions, seed).items()
    }
    raw = curated.model_dump(mode="json", exclude={"sweep", "ablate", "bakeoff", "export"})
    caps = dict.fromkeys(("max_train_examples", "max_val_examples", "max_test_examples"))  # already applied
    # data.test is the validation file: the held-out test split is not even written where the arms can read it.
    raw["data"].update(val=str(val_path), test=str(val_path), fields={}, format="jsonl", encoding="utf-8", **caps)
    raw["data"]["labels"] = splits.labels or None  # a small subset may miss a label
    raw["eval"].update(split="val", calibrate=False)
    raw["train"]["patience"] = 0
    raw["prompt"]["variants"] = {}
    raw["output"] = {"dir": str(out / "runs"), "name": None}
    console.print(
        f"bake-off {escape(name)}: {len(splits.train)} training examples, subsets of "
        + ", ".join(str(n) for f, (_, n) in train_files.items() if f < 1)
        + f"; every score on the {len(splits.val)} validation examples (the test split is not used)"
    )
    return Setup(
        settings=settings,
        template=raw,
        train_files=train_files,
        n_val=len(splits.val),
        task=task,
        name=name,
        out=out,
        seed=seed,
        kind=curated.data.kind,
        user_model=config.model.name,
        available_bytes=available_memory_bytes(training_device(config.model.device)),
        bounds=metric_bounds(task.primary_metric),
    )


def _run_candidate(setup: Setup, model: str, slug: str, config_path: Path, console: Console) -> Candidate:
    candidate = Candidate(model, slug)
    console.rule(f"candidate {escape(model)}")
    try:
        _estimate(setup, candidate, console)
        if candidate.failure is None:
            _evaluate_base(setup, candidate, config_path, console)
            _learning_curve(setup, candidate, config_path, console)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a candidate that breaks (load, prompt, memory, a library) must not stop the rest
        candidate.failure = failure_text(exc)
    if candidate.failure:
        console.print(f"[red]candidate {escape(model)} left out: {escape(candidate.failure)}[/]")
    release_memory()
    return candidate


def _arm_config(
    setup: Setup, candidate: Candidate, fraction: float, label: str, edits: dict[str, Any] | None = None
) -> Config:
    """The shared template for this candidate, trained on the `fraction` subset, with dotted `edits`."""
    raw = copy.deepcopy(setup.template)
    edits = {
        "model.name": candidate.model,
        "data.train": str(setup.train_files[fraction][0]),
        "output.name": f"{setup.name}-{candidate.slug}-{label}",
        **(edits or {}),
    }
    if candidate.model != setup.user_model:  # the user reviewed and pinned their own model, not the candidates
        edits |= {"model.trust_remote_code": False, "model.revision": None, "model.gguf_file": None}
    max_steps = raw["train"]["max_steps"]
    if max_steps > 0:  # a fixed budget shrinks with the data, like the epochs rule
        share = setup.train_files[fraction][1] / setup.train_files[1.0][1]
        edits["train.max_steps"] = max(1, math.ceil(max_steps * share))
    for key, value in edits.items():
        set_dotted(raw, key, value)
    return validate_config(raw, source=f"bake-off candidate {candidate.model} ({label})")


def _estimate(setup: Setup, candidate: Candidate, console: Console) -> None:
    config = _arm_config(setup, candidate, 1.0, "estimate")
    estimate = estimate_run(
        config, console, probe_steps=setup.settings.probe_steps, available_bytes=setup.available_bytes
    )
    candidate.estimate = estimate.to_json()
    if not estimate.fits:
        candidate.failure = estimate.reason


def _evaluate_base(setup: Setup, candidate: Candidate, config_path: Path, console: Console) -> None:
    """Zero-shot and few-shot on validation, in one `tunewise eval` run of the base model."""
    shots = setup.settings.few_shot if setup.kind in FEW_SHOT_KINDS else 0
    variants = {FEW_SHOT: {"few_shot": shots}} if shots else {}
    edits = {"eval.base": True, "prompt.variants": variants, "prompt.few_shot": 0}  # the default cell: zero-shot
    config = _arm_config(setup, candidate, 1.0, "base", edits)
    outcome = pipeline.eval_job(config, config_path, console)
    for cell, prompt in (("base", "zero-shot"), (f"base · {FEW_SHOT}", FEW_SHOT)):
        if cell in outcome.evaluation.results:
            rows = _aligned(setup, outcome.evaluation.predictions.get(cell, []))
            metric = outcome.evaluation.results[cell][setup.task.primary_metric]
            candidate.base[prompt] = _scored(setup, rows, metric) | {"run_dir": str(outcome.run_dir)}


def _learning_curve(setup: Setup, candidate: Candidate, config_path: Path, console: Console) -> None:
    for fraction, (_, n_train) in setup.train_files.items():
        if fraction == 1.0:
            continue
        arm = _fine_tune(setup, candidate, fraction, f"n{n_train}", config_path, console)
        candidate.arms.append(arm)
    full = setup.train_files[1.0][1]
    scored = all(score is not None for score in candidate.scorers)
    # Without per-example scores (corpus perplexity) the curve goes through the points, with no interval.
    arms = [
        (arm["n_train"], score if scored else _constant(arm["metric"]))
        for arm, score in zip(candidate.arms, candidate.scorers, strict=True)
    ]
    resamples = setup.settings.resamples if scored else 0
    candidate.extrapolation = extrapolate(
        arms, full, setup.n_val, resamples=resamples, seed=setup.seed, bounds=setup.bounds
    )


def _fine_tune(
    setup: Setup, candidate: Candidate, fraction: float, label: str, config_path: Path, console: Console
) -> dict[str, Any]:
    config = _arm_config(setup, candidate, fraction, label, {"eval.base": False})
    outcome = pipeline.run_job(config, config_path, console)
    rows = _aligned(setup, outcome.evaluation.predictions.get("fine-tuned", []))
    metric = outcome.evaluation.results["fine-tuned"][setup.task.primary_metric]
    candidate.scorers.append(resampled_score(setup.task, rows) if rows else None)
    train = outcome.train or {}
    return {
        "fraction": fraction,
        "n_train": setup.train_files[fraction][1],
        **_scored(setup, rows, metric),
        "steps": train.get("steps"),
        "train_seconds": train.get("train_seconds"),
        "peak_memory_gib": train.get("peak_memory_gib"),
        "run_dir": str(outcome.run_dir),
    }


def _verify(setup: Setup, candidate: Candidate, config_path: Path, console: Console) -> None:
    """The full fine-tune of a top candidate: the extrapolation's error, and the estimate's."""
    try:
        full = _fine_tune(setup, candidate, 1.0, "full", config_path, console)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # the extrapolation stands; the check is reported as not done
        candidate.verification = {"failure": failure_text(exc)}
        return
    predicted = candidate.extrapolation
    assert predicted is not None
    estimate = candidate.estimate or {}
    check = {
        "measured": full,
        "extrapolated": predicted.point,
        "error": full["metric"] - predicted.point,
        "inside_interval": predicted.low <= full["metric"] <= predicted.high,
    }
    if full.get("train_seconds") and estimate.get("train_seconds"):
        check["time_error"] = estimate["train_seconds"] / full["train_seconds"] - 1
    if full.get("peak_memory_gib") and estimate.get("peak_memory_bytes"):
        check["memory_error"] = estimate["peak_memory_bytes"] / 2**30 / full["peak_memory_gib"] - 1
    candidate.verification = check


def _rank(setup: Setup, results: list[Candidate]) -> list[Candidate]:
    """Candidates with a learning curve, best extrapolated validation metric first."""
    ranked = [c for c in results if c.extrapolation is not None and c.failure is None]
    greater = greater_is_better(setup.task.primary_metric)
    return sorted(ranked, key=lambda c: c.extrapolation.point if greater else -c.extrapolation.point, reverse=True)


def _payload(setup: Setup, results: list[Candidate], ranking: list[Candidate]) -> dict[str, Any]:
    greater = greater_is_better(setup.task.primary_metric)
    draws = {c.model: c.extrapolation.draws for c in ranking if c.extrapolation}
    # Comparable only when every ranked candidate has resamples (per-example scores on the same examples).
    comparable = all(len(d) for d in draws.values())
    chances = probability_best(draws, greater) if comparable else {}
    rows = []
    for candidate in results:
        row: dict[str, Any] = {
            "model": candidate.model,
            "slug": candidate.slug,
            "rank": ranking.index(candidate) + 1 if candidate in ranking else None,
            "failure": candidate.failure,
            "estimate": candidate.estimate,
            "base": candidate.base,
            "learning_curve": candidate.arms,
            "extrapolated": candidate.extrapolation.to_json() if candidate.extrapolation else None,
            "probability_best": chances.get(candidate.model),
            "verification": candidate.verification,
        }
        rows.append(row)
    full = setup.train_files[1.0][1]
    return {
        "name": setup.name,
        "task": setup.task.name,
        "primary_metric": setup.task.primary_metric,
        "greater_is_better": greater,
        "split": "val",
        "n_val": setup.n_val,
        "n_train": full,
        "subsets": [n for f, (_, n) in setup.train_files.items() if f < 1],
        "seed": setup.seed,
        "candidates": sorted(rows, key=lambda r: (r["rank"] is None, r["rank"] or 0)),
        "recommendation": recommendation([r for r in rows if r["rank"]], setup.task.primary_metric),
    }


# -- helpers ------------------------------------------------------------------------------------------------


def release_memory() -> None:
    """What this candidate's runs left: Python garbage, and on a GPU torch's cached blocks, which the next
    candidate's probe (another process) could not use."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def failure_text(exc: BaseException) -> str:
    """One line: tunewise's own errors are already worded for the user; anything else is named by its type."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    return text if isinstance(exc, TunewiseError) and text else f"{type(exc).__name__}: {text}".rstrip(": ")


def _slugs(models: list[str]) -> list[tuple[str, str]]:
    """A short, file-safe, unique name per candidate for its run directories."""
    taken: set[str] = set()
    named = []
    for model in models:
        stem = Path(model.rstrip("/")).name or "model"
        stem = re.sub(r"\.gguf$", "", stem, flags=re.IGNORECASE)
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:40] or "model"
        slug, n = base, 1
        while slug in taken:
            n += 1
            slug = f"{base}-{n}"
        taken.add(slug)
        named.append((model, slug))
    return named


def _aligned(setup: Setup, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prediction rows in the order of the validation file's lines, so resample i means the same examples for
    every arm and every candidate. Every arm reads the same file; rows that do not cover it give no rows
    (then no interval), never a misaligned one."""
    lines = [_line_of(row.get("source")) for row in rows]
    if len(rows) != setup.n_val or None in lines or len(set(lines)) != len(lines):
        return []
    return [row for _, row in sorted(zip(lines, rows, strict=True), key=lambda pair: pair[0])]


def _line_of(source: Any) -> int | None:
    """The line number of a prediction's `source` ("path:line")."""
    head, _, line = str(source).rpartition(":")
    return int(line) if head and line.isdigit() else None


def _scored(setup: Setup, rows: list[dict[str, Any]], metric: float) -> dict[str, Any]:
    ci = metric_ci(setup.task, rows, setup.seed) if rows else None
    return {"metric": float(metric), "ci_low": ci and ci.low, "ci_high": ci and ci.high}


def _constant(value: float) -> Any:
    return lambda _idx: float(value)
