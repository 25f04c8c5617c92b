"""What a bake-off leaves: the ranked table on the console, bakeoff.json, an HTML page with the learning curves,
and best.yaml (the user's config with the recommended model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunewise.config import Config
from tunewise.core.format import duration
from tunewise.core.html import render_page, write_page
from tunewise.core.plots import data_uri, literal, new_figure, png_bytes
from tunewise.core.safeio import replace_text

HEADER = ("rank", "model", "params", "zero-shot", "few-shot", "fine-tuned", "P(best)", "train time", "peak memory")
# The console's columns (its label -> the HEADER column): no rank (rows are in rank order) and no size.
CONSOLE_COLUMNS = {
    "model": "model",
    "zero-shot": "zero-shot",
    "few-shot": "few-shot",
    "fine-tuned": "fine-tuned",
    "P(best)": "P(best)",
    "time": "train time",
    "memory": "peak memory",
}


def print_table(console: Console, payload: dict[str, Any]) -> None:
    """The ranked candidates: base scores, the extrapolation and the estimated costs; then each learning curve."""
    metric = payload["primary_metric"]
    title = f"Bake-off: {metric} on {payload['n_val']} validation examples (95% CI)"
    caption = (
        f"fine-tuned: extrapolated to all {payload['n_train']} training examples; time (training) and peak memory: "
        "estimated for that run"
    )
    # Ranked order, no rank or size column, intervals under the values: the table fits an 80-column terminal.
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, pad_edge=False)
    widths = {"model": 14, "zero-shot": 9, "few-shot": 9, "fine-tuned": 10, "memory": 7}
    for label in CONSOLE_COLUMNS:
        justify = "left" if label == "model" else "right"
        table.add_column(label, justify=justify, overflow="fold", min_width=widths.get(label))
    positions = [HEADER.index(column) for column in CONSOLE_COLUMNS.values()]
    for row in payload["candidates"]:
        full = cells(row, short=True)
        table.add_row(*(full[i] for i in positions))
    console.print(table)
    for row in payload["candidates"]:
        name = escape(row["model"])
        if row["failure"]:
            console.print(f"[yellow]{name} left out: {escape(row['failure'])}[/]")
        elif row["learning_curve"]:
            console.print(f"{name}: fine-tuned on subsets: {escape(curve_text(row))}")
        check = row.get("verification") or {}
        if "measured" in check:
            console.print(escape(verification_text(row["model"], check)))
    if payload["recommendation"]:
        console.print(f"[bold]recommended: {escape(payload['recommendation']['text'])}[/]")


def recommendation(ranked: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """The top candidate and how sure the bake-off is of it: its probability of being best at the full size."""
    if not ranked:
        return None
    top = min(ranked, key=lambda r: r["rank"])
    chance = top["probability_best"]
    value = top["extrapolated"]
    interval = f"{value['metric']:.4f} [{value['ci_low']:.4f}, {value['ci_high']:.4f}]"
    if len(ranked) == 1:
        sureness, words = "only candidate", "the only candidate left"
    elif chance is None:
        sureness = "unknown"
        words = "no per-example scores to resample, so no interval and no probability of being best"
    elif chance is not None and chance >= 0.95:
        sureness, words = "clear", f"best in {chance:.0%} of the bootstrap resamples"
    elif chance is not None and chance >= 0.75:
        sureness, words = (
            "likely",
            f"best in {chance:.0%} of the bootstrap resamples; more validation data would settle it",
        )
    else:
        sureness = "uncertain"
        words = (
            f"best in only {(chance or 0):.0%} of the bootstrap resamples: the candidates are not separable on this "
            "validation set; add validation examples, or prefer the cheapest contender"
        )
        contenders = [r for r in ranked if (r["probability_best"] or 0) >= 0.1 and _train_seconds(r)]
        if contenders:
            cheapest = min(contenders, key=_train_seconds)
            words += f" ({cheapest['model']}, est. {duration(_train_seconds(cheapest))} of training)"
    text = f"{top['model']}: extrapolated {metric} at the full training set {interval}; {words}"
    return {"model": top["model"], "sureness": sureness, "probability_best": chance, "text": text}


def _train_seconds(row: dict[str, Any]) -> float:
    return float((row.get("estimate") or {}).get("train_seconds") or 0)


def cells(row: dict[str, Any], short: bool = False) -> list[str]:
    """One candidate's table cells, as the console (`short`: the model's short name) and the HTML page show them."""
    estimate = row.get("estimate") or {}
    params = (estimate.get("model") or {}).get("n_params")
    chance = row.get("probability_best")
    return [
        str(row["rank"]) if row["rank"] else "-",
        row["slug"] if short else row["model"],
        _params(params) if params else "-",
        _score(row["base"].get("zero-shot"), short),
        _score(row["base"].get("few-shot"), short),
        _score(row.get("extrapolated"), short) if not row["failure"] else "failed",
        f"{chance:.0%}" if chance is not None else "-",
        duration(estimate["train_seconds"]) if estimate.get("train_seconds") else "-",
        f"{estimate['peak_memory_bytes'] / 2**30:.1f} GiB" if estimate.get("peak_memory_bytes") else "-",
    ]


def curve_text(row: dict[str, Any]) -> str:
    return ", ".join(f"n={a['n_train']}: {a['metric']:.4f}" for a in row["learning_curve"])


def _params(n: int) -> str:
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def verification_text(model: str, check: dict[str, Any]) -> str:
    measured = check["measured"]
    inside = "inside" if check["inside_interval"] else "outside"
    text = (
        f"{model}, full fine-tune: measured {measured['metric']:.4f} vs extrapolated {check['extrapolated']:.4f} "
        f"(error {check['error']:+.4f}, {inside} the interval)"
    )
    for key, what in (("time_error", "time"), ("memory_error", "peak memory")):
        if key in check:
            text += f"; estimated {what} {check[key]:+.0%} off"
    return text


def _score(entry: dict[str, Any] | None, two_lines: bool = False) -> str:
    """`0.669 [0.58, 0.75]`; for the console, whose table must fit 80 columns, `0.669` over `0.58–0.75`."""
    if not entry:
        return "-"
    low, high = entry.get("ci_low"), entry.get("ci_high")
    if low is None or high is None:
        return f"{entry['metric']:.3f}"
    return (
        f"{entry['metric']:.3f}\n{low:.2f}–{high:.2f}"
        if two_lines
        else f"{entry['metric']:.3f} [{low:.2f}, {high:.2f}]"
    )


def write_outputs(payload: dict[str, Any], out: Path) -> None:
    """bakeoff.json and bakeoff.html (with the learning-curve plot) in `out`."""
    replace_text(out / "bakeoff.json", json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    plot = data_uri(png_bytes(learning_curves(payload)))
    header = [*HEADER[:5], f"fine-tuned, extrapolated to {payload['n_train']}", "P(best)", "train time (est.)"]
    header.append("peak memory (est.)")
    rows = [cells(row) for row in payload["candidates"]]
    notes = [row for row in payload["candidates"] if row["failure"]]
    checks = [verification_text(r["model"], r["verification"]) for r in payload["candidates"] if _verified(r)]
    curves = [(row["model"], curve_text(row)) for row in payload["candidates"] if row["learning_curve"]]
    context = {"p": payload, "header": header, "rows": rows, "plot": plot, "notes": notes, "checks": checks}
    html = render_page(PAGE, context | {"curves": curves})
    write_page(out / "bakeoff.html", html)


def _verified(row: dict[str, Any]) -> bool:
    return "measured" in (row.get("verification") or {})


def learning_curves(payload: dict[str, Any]) -> Any:
    """Each candidate's measured points, its fitted curve and the extrapolated interval at the full size."""
    fig = new_figure(7, 4.5)
    ax = fig.subplots()
    full = payload["n_train"]
    for row in payload["candidates"]:
        curve, extrapolated = row["learning_curve"], row.get("extrapolated")
        if not curve or not extrapolated:
            continue
        sizes = [a["n_train"] for a in curve]
        line = ax.plot(sizes, [a["metric"] for a in curve], "o", label=literal(row["model"]))[0]
        xs = np.geomspace(min(sizes), full, 50)
        ax.plot(xs, [_curve_value(extrapolated["curve"], x) for x in xs], "-", color=line.get_color(), alpha=0.6)
        low, high = extrapolated["ci_low"], extrapolated["ci_high"]
        yerr = [[max(0.0, extrapolated["metric"] - low)], [max(0.0, high - extrapolated["metric"])]]
        ax.errorbar([full], [extrapolated["metric"]], yerr=yerr, fmt="s", color=line.get_color(), capsize=4)
        if "zero-shot" in row["base"]:
            ax.axhline(row["base"]["zero-shot"]["metric"], linestyle=":", color=line.get_color(), alpha=0.7)
    ax.set_xscale("log")
    ax.set_xlabel("training examples (square: extrapolated to the full set; dotted: base zero-shot)")
    ax.set_ylabel(f"{payload['primary_metric']} on {payload['n_val']} validation examples")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return fig


def _curve_value(curve: dict[str, Any], n: float) -> float:
    if curve["form"] == "power":
        return curve["c"] - curve["b"] * n ** (-curve["alpha"])
    if curve["form"] == "log-linear":
        return curve["a"] + curve["slope"] * np.log(n)
    return curve["value"]


def write_best_config(config: Config, model: str, payload: dict[str, Any], path: Path) -> Path:
    """The user's config (raw data and curation: it reproduces the whole run) with the recommended model and
    without the bakeoff section: `tunewise run best.yaml` fine-tunes the winner."""
    raw = config.model_dump(mode="json", exclude={"bakeoff"})
    raw["model"]["name"] = model
    recommendation = payload["recommendation"] or {}
    header = f"# Bake-off {payload['name']}: {recommendation.get('text', model)}\n"
    replace_text(path, header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return path


PAGE = """{% extends "base.html" %}
{% block title %}Bake-off {{ p.name }}{% endblock %}
{% block body %}
<h1>Bake-off: {{ p.name }}</h1>
<p class="sub">{{ p.task }} task; {{ p.primary_metric }} on {{ p.n_val }} validation examples (the test split is not
used); fine-tuned on nested subsets of {{ p.subsets | join(", ") }} of the {{ p.n_train }} training examples and
extrapolated to all of them, with 95% bootstrap intervals.</p>
{% if p.recommendation %}<p class="note">Recommended: {{ p.recommendation.text }}</p>{% endif %}
<table><tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in rows %}<tr{% if loop.first and p.recommendation %} class="best"{% endif %}>
{% for cell in row %}<td{% if loop.index != 2 %} class="n"{% endif %}>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% for row in notes %}<p class="note">{{ row.model }} was left out: {{ row.failure }}</p>{% endfor %}
{% for text in checks %}<p>{{ text }}</p>{% endfor %}
<h2>Learning curves</h2><img alt="learning curves" src="{{ plot }}">
<ul>{% for model, text in curves %}<li>{{ model }}: {{ text }}</li>{% endfor %}</ul>
<p class="muted">Curve: m(n) = c &minus; b&middot;n<sup>&minus;&alpha;</sup> with three or more subsets, a line in
log n with two. The interval resamples the validation examples, so it holds the validation set's noise and how far
the fit moves with it, not the error of the curve's form; P(best) is each candidate's share of those resamples in
which it is best.</p>
{% endblock %}
"""
