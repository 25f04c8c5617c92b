"""`tunewise ablate`: what the data is worth, on the same (curated, decontaminated) test split with bootstrap
CIs: a learning curve over nested fractions of the curated training set, and curated vs raw samples.

Budget: no arm stops early (`train.patience: 0`: early stopping would give arms different budgets by chance).
Learning-curve arms keep the epochs rule, so smaller sets get proportionally fewer steps (a fixed
`train.max_steps` is scaled by the fraction). The full-data arm (fraction 1.0, always run) is the curated arm
of curated vs raw; the raw arms ("raw": the raw corpus's class mix; "raw-balanced": the curated training set's
label counts), decontaminated by the curated arm's rule and of the same size (see raw_arms.py), get
`train.max_steps` = the steps the full arm planned. Comparing the three tells balancing from cleaning.
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tunewise import pipeline
from tunewise.config import Config, validate_config
from tunewise.core.format import format_p
from tunewise.core.plots import save_png
from tunewise.data.records import Record
from tunewise.data.splits import DataSplits
from tunewise.errors import ConfigError
from tunewise.evaluate.stats import Difference
from tunewise.evaluate.tasks import EvalTask
from tunewise.experiments import experiment_data, metric_ci, write_records
from tunewise.experiments.raw_arms import RawDraws, draw_json, draw_raw_arms, label_counts, report_lines


def ablate(config: Config, config_path: Path, console: Console) -> Path:
    """Run the ablations; returns `<output.dir>/ablations/<name>/` with ablation.json and plots/."""
    if config.ablate is None:
        raise ConfigError("the config has no ablate: section (ablate: {fractions: [0.25, 0.5, 1.0]})")
    raw_source = _raw_source(config) if config.ablate.curated_vs_raw else None
    shared = experiment_data(config, config_path, "ablations", console)
    name, out, curated, splits, task = shared.name, shared.out, shared.config, shared.splits, shared.task
    seed = curated.train.seed
    metric = task.primary_metric
    # Every arm reads these val/test files, so none re-splits its own (smaller) training file.
    fixed = {split: write_records(out / "data" / f"{split}.jsonl", getattr(splits, split)) for split in ("val", "test")}
    template = _arm_template(curated, splits.labels, fixed, out / "runs")
    draws = draw_raw_arms(raw_source, config, splits, seed) if raw_source is not None else None

    def run_arm(label: str, train: list[Record], eval_base: bool, max_steps: int, **data: Any) -> dict[str, Any]:
        raw = copy.deepcopy(template)
        raw["data"].update(train=str(write_records(out / "data" / f"train-{label}.jsonl", train)), **data)
        raw["eval"]["base"] = eval_base
        raw["train"]["max_steps"] = max_steps
        raw["output"]["name"] = f"{name}-{label}"
        arm_config = validate_config(raw, source=f"ablation arm {label}")
        outcome = pipeline.run_job(arm_config, config_path, console)
        return _arm_result(outcome.run_dir, label, len(train), task, seed)

    fractions = sorted({*config.ablate.fractions, 1.0})  # the full set is every arm's reference
    arms = []
    for i, (fraction, subset) in enumerate(nested_subsets(splits.train, fractions, seed).items()):
        steps = curated.train.max_steps
        if steps > 0:  # a fixed budget shrinks with the data, like the epochs rule
            steps = max(1, math.ceil(steps * len(subset) / len(splits.train)))
        arms.append({"fraction": fraction, **run_arm(f"{fraction:g}", subset, i == 0, steps)})  # base: once
    base, full = arms[0].pop("base"), arms[-1]
    for arm in arms:  # arm - full, paired on the same test examples
        diff = None if arm is full else task.compare(full["_predictions"], arm["_predictions"], seed=seed).get(metric)
        arm["vs_full"] = diff.to_json() if diff else None

    comparison = None
    if draws is not None:

        def run_raw(label: str, train: list[Record]) -> dict[str, Any]:
            # Raw records over max_length are skipped (curation would have dropped them) instead of stopping.
            return run_arm(label, train, False, full["planned_steps"], on_error="skip")

        comparison = {"raw_source": str(raw_source), **_versus_raw(draws, splits, task, full, run_raw, seed)}

    payload = {
        "name": name,
        "task": task.name,
        "primary_metric": metric,
        "split": "test",
        "n_test": len(splits.test),
        "n_train": len(splits.train),
        "seed": seed,
        "base": base,
        "learning_curve": [_public(arm) for arm in arms],
        "last_step": _last_step(task, arms, metric, seed) if len(arms) > 1 else None,
        "curated_vs_raw": comparison,
    }
    (out / "ablation.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _plot(payload, out / "plots" / "learning_curve.png")
    _print(console, payload)
    return out


def _raw_source(config: Config) -> Path:
    if config.ablate and config.ablate.raw is not None:
        return config.ablate.raw
    if config.curate is not None:
        return config.data.train  # the file curation reads
    raise ConfigError(
        "ablate.curated_vs_raw needs raw data: set ablate.raw, or add a curate: section "
        "(its data.train is the raw file); or set ablate.curated_vs_raw: false"
    )


def nested_subsets(records: list[Record], fractions: list[float], seed: int) -> dict[float, list[Record]]:
    """Prefixes of one seeded shuffle: each smaller subset lies inside every larger one, so the curve
    measures more data, not different data."""
    order = list(records)
    random.Random(seed).shuffle(order)
    return {f: order[: max(1, round(f * len(order)))] for f in sorted(fractions)}


def _arm_template(curated: Config, labels: list[str], fixed: dict[str, Path], runs_dir: Path) -> dict[str, Any]:
    """The raw config every arm starts from: the fixed val/test files, labels pinned (a small subset may
    miss one), the default prompt only (the ablation is about data), the test split, no early stopping."""
    raw = curated.model_dump(mode="json", exclude={"sweep", "ablate"})
    caps = dict.fromkeys(("max_train_examples", "max_val_examples", "max_test_examples"))  # applied when loaded
    files = {split: str(path) for split, path in fixed.items()}
    raw["data"].update(files, fields={}, format="jsonl", encoding="utf-8", labels=labels or None, **caps)
    raw["prompt"]["variants"] = {}
    raw["eval"]["split"] = "test"
    raw["train"]["patience"] = 0
    raw["output"] = {"dir": str(runs_dir), "name": None}
    return raw


def _arm_result(run_dir: Path, label: str, n_train: int, task: EvalTask, seed: int) -> dict[str, Any]:
    report = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))
    path = run_dir / "predictions.jsonl"  # absent when the task has no per-example scores (perplexity)
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    rows = [json.loads(line) for line in lines]
    scores = {}
    for model in report["models"]:  # "fine-tuned", and "base" in the arm that also scored the base model
        ci = metric_ci(task, [r for r in rows if r["model"] == model], seed)
        metric = report["models"][model][task.primary_metric]
        scores[model] = {"metric": metric, "ci_low": ci and ci.low, "ci_high": ci and ci.high, "run_dir": str(run_dir)}
    train = report["train"]
    result = {"arm": label, "n_train": n_train, "steps": train["steps"], "planned_steps": train["planned_steps"]}
    result |= scores.pop("fine-tuned") | scores
    return {**result, "_predictions": [r for r in rows if r["model"] == "fine-tuned"]}


# Verdicts when the difference is significantly positive, significantly negative, or not significant.
CURVE_VERDICTS = {
    "more data still helping": "significant; more data of this kind still helps",
    "more data hurt": "significantly worse with more data; look at what the extra data adds",
    "not significant": "not significant; more data of this kind may not help",
}
RAW_VERDICTS = {
    "curated better": "curated beats raw at equal budget",
    "raw better": "the raw sample beats curated at equal budget; curation hurt here",
    "no significant difference": "no significant difference between curated and raw; curation did not measurably "
    "help at this budget",
}


def _last_step(task: EvalTask, arms: list[dict[str, Any]], metric: str, seed: int) -> dict[str, Any] | None:
    """Is the largest fraction still better than the next one down: does more data of this kind help?"""
    smaller, larger = arms[-2], arms[-1]
    diff = task.compare(smaller["_predictions"], larger["_predictions"], seed=seed).get(metric)
    if diff is None:
        return None
    verdict = _verdict(diff, CURVE_VERDICTS)
    step = f"{smaller['fraction']:.0%} -> {larger['fraction']:.0%}"
    text = f"{step}: {_interval_text(diff, 3)}: {CURVE_VERDICTS[verdict]}"
    return {"from": smaller["fraction"], "to": larger["fraction"], **diff.to_json(), "verdict": verdict, "text": text}


def _versus_raw(
    draws: RawDraws,
    splits: DataSplits,
    task: EvalTask,
    curated: dict[str, Any],
    run_raw: Callable[[str, list[Record]], dict[str, Any]],
    seed: int,
) -> dict[str, Any]:
    """Curated vs the raw arms, all trained for the same steps and scored on the same test records."""
    kind = draws.kind
    raw = run_raw("raw", draws.raw.records) | draw_json(draws.raw, kind)
    balanced = None
    if draws.balanced is not None:
        balanced = run_raw("raw-balanced", draws.balanced.records) | draw_json(draws.balanced, kind)
    if kind == "classification":
        curated = {**curated, "label_counts": label_counts(splits.train)}
    metric = task.primary_metric
    for arm in filter(None, (raw, balanced)):  # arm - curated 100%, the table's last column
        vs_full = task.compare(curated["_predictions"], arm["_predictions"], seed=seed).get(metric)
        arm["vs_full"] = vs_full.to_json() if vs_full else None
    differences = task.compare(raw["_predictions"], curated["_predictions"], seed=seed)  # curated - raw
    diff = differences.get(metric)
    verdict = _verdict(diff, RAW_VERDICTS) if diff else None
    text = f"curated {curated['metric']:.4f} vs raw {raw['metric']:.4f} {metric}; no per-example scores for a CI"
    if diff and verdict:
        text = f"{RAW_VERDICTS[verdict]}: {metric} {_interval_text(diff, 4)}, {format_p(diff.p_value, diff.resamples)}"
    return {
        "max_steps": raw["planned_steps"],
        "curated": _public(curated),
        "raw": _public(raw),
        "raw_balanced": _public(balanced) if balanced else None,
        "raw_balanced_note": draws.balanced_note,
        "difference": diff.to_json() if diff else None,
        "differences": {name: d.to_json() for name, d in differences.items()},
        "verdict": verdict,
        "text": text,
        "attribution": attribution(task, curated, raw, balanced, seed) if balanced else None,
        **draws.pool.counts,
        "n_raw_sample": len(draws.raw.records),
        "decontamination": draws.pool.rule.to_json(),
        "curated_leakage": draws.curated_leakage,
    }


# What each step of curated vs raw isolates: balancing = raw · balanced - raw, cleaning = curated - raw · balanced.
ATTRIBUTION_STEPS = {"balancing": "raw · balanced − raw", "cleaning": "curated − raw · balanced"}


def attribution(
    task: EvalTask, curated: dict[str, Any], raw: dict[str, Any], balanced: dict[str, Any], seed: int
) -> dict[str, Any] | None:
    """Which part of curation made the difference: the class mix alone (raw -> raw · balanced, same raw
    quality), or everything else curation did (raw · balanced -> curated, same class mix)."""
    metric = task.primary_metric
    found = {
        "balancing": task.compare(raw["_predictions"], balanced["_predictions"], seed=seed).get(metric),
        "cleaning": task.compare(balanced["_predictions"], curated["_predictions"], seed=seed).get(metric),
    }
    effects = {name: d for name, d in found.items() if d is not None}
    if len(effects) < len(found):  # no per-example scores to pair
        return None
    moved = {name: d for name, d in effects.items() if d.significant}
    verdict = "both" if len(moved) == 2 else next(iter(moved), "neither")
    said = [f"{name} {'helped' if d.delta > 0 else 'hurt'}" for name, d in moved.items()]
    summary = " and ".join(said) or "neither balancing nor cleaning made a significant difference"
    if verdict in effects:  # one of the two
        summary += f"; {next(name for name in effects if name not in moved)} made no significant difference"
    details = "; ".join(
        f"{name} ({ATTRIBUTION_STEPS[name]}) {metric} {_interval_text(d, 4)}, {format_p(d.p_value, d.resamples)}"
        for name, d in effects.items()
    )
    return {**{name: d.to_json() for name, d in effects.items()}, "verdict": verdict, "text": f"{summary}: {details}"}


def _verdict(diff: Difference, verdicts: dict[str, str]) -> str:
    better, worse, same = verdicts
    return same if not diff.significant else better if diff.delta > 0 else worse


def _interval_text(diff: Difference, digits: int) -> str:
    return f"{diff.delta:+.{digits}f} [{diff.low:+.{digits}f}, {diff.high:+.{digits}f}]"


def _public(arm: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in arm.items() if not k.startswith("_")}


def _plot(payload: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure  # object-oriented: no pyplot state, no display backend

    path.parent.mkdir(parents=True, exist_ok=True)
    curve = payload["learning_curve"]
    ax = (fig := Figure(figsize=(6, 4))).subplots()
    x = [arm["n_train"] for arm in curve]
    ax.errorbar(x, [a["metric"] for a in curve], yerr=_yerr(curve), marker="o", capsize=3, label="curated subsets")
    ax.axhline(payload["base"]["metric"], linestyle="--", color="gray", label="base model")
    comparison = payload["curated_vs_raw"] or {}
    for key, nudge, marker, label in (("raw", 1.04, "x", "raw sample"), ("raw_balanced", 1.08, "+", "raw · balanced")):
        if arm := comparison.get(key):  # nudged right: same size as the full arm, which would hide it
            x_arm = [arm["n_train"] * nudge]
            ax.errorbar(
                x_arm, [arm["metric"]], yerr=_yerr([arm]), marker=marker, capsize=3, label=f"{label} (same size)"
            )
    if len(set(x)) > 1:
        ax.set_xscale("log")
    ax.set_xticks(x, [str(n) for n in x])
    ax.minorticks_off()
    ax.set_xlabel("training examples")
    ax.set_ylabel(f"{payload['primary_metric']} on {payload['n_test']} test examples (95% CI)")
    ax.set_title(f"Learning curve: {payload['name']}")
    ax.grid(alpha=0.3)
    ax.legend()
    save_png(fig, path)


def _yerr(arms: list[dict[str, Any]]) -> list[list[float]] | None:
    if any(a["ci_low"] is None for a in arms):
        return None
    # A bootstrap interval may not contain the point estimate for skewed metrics; clip to keep bars valid.
    return [[max(0.0, a["metric"] - a["ci_low"]) for a in arms], [max(0.0, a["ci_high"] - a["metric"]) for a in arms]]


def _print(console: Console, payload: dict[str, Any]) -> None:
    metric = payload["primary_metric"]
    table = Table(title=f"Ablation: {metric} on {payload['n_test']} test examples")
    for column in ("arm", "train examples", "steps", metric, "95% CI", "Δ vs 100% [95% CI]"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    base = payload["base"]
    table.add_row("base model", "0", "0", f"{base['metric']:.4f}", _interval(base), "")
    comparison = payload["curated_vs_raw"]
    rows = [(f"curated {arm['fraction']:.0%}", arm) for arm in payload["learning_curve"]]
    if comparison:
        rows.append(("raw sample", comparison["raw"]))
        if comparison["raw_balanced"]:
            rows.append(("raw · balanced", comparison["raw_balanced"]))
    for label, arm in rows:
        vs = arm.get("vs_full")
        delta = f"{vs['delta']:+.4f} [{vs['ci_low']:+.4f}, {vs['ci_high']:+.4f}]" if vs else ""
        table.add_row(label, str(arm["n_train"]), str(arm["steps"]), f"{arm['metric']:.4f}", _interval(arm), delta)
    console.print(table)
    if payload["last_step"]:
        console.print(f"learning curve: {payload['last_step']['text']}")
    if comparison:
        _print_versus_raw(console, comparison)


def _print_versus_raw(console: Console, comparison: dict[str, Any]) -> None:
    for line in report_lines(comparison):
        console.print(line)
    steps = comparison["max_steps"]
    console.print(f"curated vs raw ({steps} steps each): {comparison['text']}")
    if comparison["attribution"]:
        console.print(f"balancing vs cleaning ({steps} steps each): {comparison['attribution']['text']}")


def _interval(entry: dict[str, Any]) -> str:
    return f"[{entry['ci_low']:.4f}, {entry['ci_high']:.4f}]" if entry.get("ci_low") is not None else "-"
