"""curation_report.json and a self-contained curation_report.html (plots embedded as PNG data: URIs)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tunewise.config import Config
from tunewise.core.html import render_page, write_page
from tunewise.core.plots import data_uri, literal, new_figure, png_bytes
from tunewise.curate.engine import CurationResult
from tunewise.data.records import Record

MIN_PER_CLASS = 300  # below a few hundred examples per class, fine-tunes rarely beat few-shot prompting
MIN_GENERATIVE = 2000
DOMINANT_SHARE = 0.6
MAX_PLOTTED_CLASSES = 30
MAX_TICK_CHARS = 24
PNG_DPI = 110


def build_report(
    result: CurationResult, config: Config, given: list[Record] = (), given_rejected: int = 0
) -> dict[str, Any]:
    split_sizes = result.split_sizes + Counter(r.split or "train" for r in given)
    train_size = split_sizes.get("train", 0)
    steps = config.curate.steps if config.curate is not None else []
    report: dict[str, Any] = {
        "totals": {"input": result.n_input, "kept": result.kept_count, "rejected": result.rejected},
        "eval_files": {"records": len(given), "rejected": given_rejected},
        "steps": [vars(s) for s in result.steps],
        "executed_order": result.executed_order,
        "reordered": result.reordered,
        "split_sizes": {k: split_sizes[k] for k in ("train", "val", "test") if k in split_sizes},
        "class_balance": {"before": _sorted(result.labels_before), "after": _sorted(result.labels_train)},
        "cluster_sizes": {k: v[:50] for k, v in result.context.cluster_sizes.items()},
        "notes": result.context.notes,
        "advice": advice(result.labels_train, train_size, config.data.kind, steps),
    }
    report["plots"] = {
        "class_balance": _bar_png(report["class_balance"]) if report["class_balance"]["before"] else None,
        "lengths": _hist_png(np.asarray(result.lengths_before), np.asarray(result.lengths_train)),
    }
    return report


def advice(counts: Counter[str], train_size: int, kind: str, steps: Sequence[Any] = ()) -> list[str]:
    """Dataset-size advice on the curated training set, aware of the configured steps: no "consider the
    balance step" when one is configured, but what it could and could not do."""
    balance = next((s for s in steps if s.step == "balance" and s.enabled), None)
    notes = []
    if kind == "classification":
        cap = getattr(balance, "per_class", None)
        for label, n in sorted(counts.items()):
            if n < MIN_PER_CLASS:
                why = " (the balance step's per_class)" if n == cap else ""
                notes.append(f"class '{label}' has {n} training examples{why}; aim for a few hundred per class")
        total = sum(counts.values())
        if total and counts and max(counts.values()) / total > DOMINANT_SHARE:
            label, n = counts.most_common(1)[0]
            notes.append(f"class '{label}' is {n / total:.0%} of the training set{_balance_note(balance)}")
    elif train_size < MIN_GENERATIVE:
        notes.append(f"{train_size} training examples; generation tasks usually want a few thousand")
    return notes


def _balance_note(balance: Any) -> str:
    """Why one class still dominates, given the configured balance step (None: there is none)."""
    if balance is None:
        return "; consider the balance step"
    if balance.per_class is None and balance.total is None:
        return "; the balance step has no per_class or total to sample to"
    return (
        " after the balance step: the other classes have fewer records than its cap; lower per_class or total"
        " to even them out (fewer examples), or add records of the other classes"
    )


def write_report(report: dict[str, Any], output: Path) -> tuple[Path, Path]:
    """curation_report.json (everything but the plots) and curation_report.html in `output`."""
    output.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in report.items() if k != "plots"}
    json_path = output / "curation_report.json"
    json_path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    html_path = write_page(output / "curation_report.html", render_page(TEMPLATE, {"r": report}))
    return json_path, html_path


def _sorted(counts: Counter[str]) -> dict[str, int]:
    return dict(sorted(counts.items()))


def _bar_png(balance: dict[str, dict[str, int]]) -> str:
    """Records per class in the input and in the curated training set, as a PNG data: URI."""
    labels = sorted(set(balance["before"]) | set(balance["after"]))
    if len(labels) > MAX_PLOTTED_CLASSES:  # the largest classes; hundreds of bars are unreadable and slow
        by_size = sorted(labels, key=lambda k: -balance["before"].get(k, 0))
        labels = sorted(by_size[:MAX_PLOTTED_CLASSES])
    fig = new_figure(6, 3)
    ax = fig.subplots()
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], [balance["before"].get(k, 0) for k in labels], 0.4, label="input")
    ax.bar([i + 0.2 for i in x], [balance["after"].get(k, 0) for k in labels], 0.4, label="curated train")
    ax.set_xticks(list(x), [_tick(label) for label in labels])
    ax.set_yscale("log")
    ax.set_ylabel("records (log)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: tall bars must stay visible
    ax.set_title("Class balance")
    return data_uri(png_bytes(fig, dpi=PNG_DPI))


def _tick(label: str) -> str:
    """A label as plain tick text: cut short, and with `$` escaped (matplotlib parses $...$ as math, and a
    label like "$x^$" from the data would fail the whole report)."""
    return literal(label if len(label) <= MAX_TICK_CHARS else label[: MAX_TICK_CHARS - 1] + "…")


def _hist_png(lengths_before: np.ndarray, lengths_after: np.ndarray) -> str:
    """Text lengths in words, input vs curated training set, as a PNG data: URI."""
    fig = new_figure(6, 3)
    ax = fig.subplots()
    longest_before = int(lengths_before.max()) if len(lengths_before) else 1
    longest = max(longest_before, int(lengths_after.max()) if len(lengths_after) else 1, 1)
    bins = range(0, longest + 2, max(1, longest_before // 40))
    # Shares, not counts: the curated set is often 1-5% of the input and would not show on one axis.
    if len(lengths_before):
        ax.hist(lengths_before, bins=bins, alpha=0.5, label=f"input ({len(lengths_before)})", density=True)
    if len(lengths_after):  # an empty set has no distribution (and density would divide by zero)
        ax.hist(lengths_after, bins=bins, alpha=0.6, label=f"curated train ({len(lengths_after)})", density=True)
    ax.set_xlabel("words")
    ax.set_ylabel("share of records")
    if len(lengths_before) or len(lengths_after):
        ax.legend()
    ax.set_title("Length distribution")
    return data_uri(png_bytes(fig, dpi=PNG_DPI))


# A child of tunewise.core.html's base page: its Content-Security-Policy, shared CSS and autoescaping.
TEMPLATE = """{% extends "base.html" %}{% block title %}tunewise curation report{% endblock %}
{% block style %}td,th{overflow-wrap:anywhere}.ex{font-size:.85em;color:#444}{% endblock %}{% block body %}
<h1>Curation report</h1>
<p><b>{{ r.totals.input }}</b> input records = <b>{{ r.totals.kept }}</b> kept +
<b>{{ r.totals.rejected }}</b> rejected (every rejection is in rejects.jsonl with its reason).
Splits: {% for name, n in r.split_sizes.items() %}{{ name }} {{ n }}{% if not loop.last %}, {% endif %}{% endfor %}.</p>
{% if r.advice %}<div class="note"><b>Dataset-size advice</b><ul>
{% for a in r.advice %}<li>{{ a }}</li>{% endfor %}</ul></div>{% endif %}
<h2>Steps</h2>
<p>Steps ran in this order: {{ r.executed_order|join(' → ') }}.{% if r.reordered %} This differs from the order of
the config's list: steps that remove records run first, then split, then decontaminate, and the steps that sample
the training set run last (# is the step's place in the list).{% endif %}</p>
<table><tr><th class="n">#</th><th>step</th><th>category</th><th class="n">in</th><th class="n">kept</th>
<th class="n">dropped</th><th>reasons</th><th>changed</th><th class="n">seconds</th></tr>
{% for s in r.steps %}<tr><td class="n">{{ s.position or '' }}</td>
<td>{{ s.name }}{% if not s.enabled %} (off){% endif %}</td><td>{{ s.category }}</td>
<td class="n">{{ s.n_in }}</td><td class="n">{{ s.kept }}</td><td class="n">{{ s.dropped.values()|sum }}</td>
<td>{% for k, v in s.dropped.items() %}{{ k }}: {{ v }}<br>{% endfor %}</td>
<td>{{ s.changed }}{% for k, v in s.changes.items() %}<br>{{ k }}: {{ v }}{% endfor %}</td>
<td class="n">{{ s.seconds|seconds }}</td></tr>{% endfor %}
</table>
{% if r.plots.class_balance %}<h2>Class balance</h2>
<img alt="class balance before and after" src="{{ r.plots.class_balance }}">{% endif %}
<h2>Lengths</h2><img alt="length histogram" src="{{ r.plots.lengths }}">
<h2>Examples of each drop reason</h2>
<table style="table-layout:fixed"><tr><th style="width:18%">step / reason</th><th>record</th>
<th style="width:28%">why</th></tr>
{% for s in r.steps %}{% for category, examples in s.examples.items() %}{% for e in examples %}
<tr><td>{{ s.name }}<br><span class="ex">{{ category }}</span></td><td class="ex">{{ e.where }}<br>{{ e.text }}</td>
<td class="ex">{{ e.reason }}</td></tr>{% endfor %}{% endfor %}{% endfor %}
</table>
{% if r.cluster_sizes %}<h2>Duplicate clusters</h2><ul>
{% for name, sizes in r.cluster_sizes.items() %}<li>{{ name }}: {{ sizes|length }} clusters;
largest {{ sizes[:10]|join(', ') }}</li>{% endfor %}</ul>{% endif %}
{% endblock %}"""
