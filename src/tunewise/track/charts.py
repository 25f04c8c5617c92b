"""Figures for the run, sweep and comparison reports; each function returns PNG bytes.

Drawn on `tunewise.core.plots` figures (matplotlib's object-oriented `Figure`, rendered by Agg) rather than
pyplot: no global figure state to leak between plots or threads, and no display backend is ever needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tunewise.core.plots import literal, new_figure, png_bytes

Series = Sequence[tuple[float, float]]  # (step, value)

TRAIN_COLOR, VAL_COLOR, BEST_COLOR, STOP_COLOR, OVERFIT_COLOR = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#f4a6a6"


def _xy(series: Series) -> tuple[list[float], list[float]]:
    return [s for s, _ in series], [v for _, v in series]


def _style(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)


def _mark_steps(ax, best_step: int | None, stop_step: int | None) -> None:
    if best_step is not None:
        ax.axvline(best_step, color=BEST_COLOR, linestyle="--", linewidth=1.5, label=f"best step {best_step}")
    if stop_step is not None:
        ax.axvline(stop_step, color=STOP_COLOR, linestyle=":", linewidth=1.5, label=f"early stop at {stop_step}")


def overfitting_stretches(train: Series, val: Series) -> list[tuple[float, float]]:
    """Step spans between consecutive evaluations where validation loss rose while training loss fell.

    Training loss at an evaluation is the mean of the losses logged since the previous one, as the
    DivergenceMonitor computes it, so one noisy batch does not decide. Adjacent spans are merged.
    """
    means: list[float | None] = []
    previous = -math.inf
    for step, _ in val:
        window = [loss for s, loss in train if previous < s <= step] or [loss for s, loss in train if s <= step][-1:]
        means.append(sum(window) / len(window) if window else None)
        previous = step
    spans: list[tuple[float, float]] = []
    for i in range(1, len(val)):
        (a, val_a), (b, val_b), train_a, train_b = val[i - 1], val[i], means[i - 1], means[i]
        if train_a is None or train_b is None or not (val_b > val_a and train_b < train_a):
            continue
        if spans and spans[-1][1] == a:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return spans


def loss_plot(train: Series, val: Series, best_step: int | None = None, stop_step: int | None = None) -> bytes:
    """Training and validation loss vs step; best/early-stop steps as vertical lines, overfitting shaded."""
    fig = new_figure(8.5, 3.8)
    ax = fig.subplots()
    for i, (start, end) in enumerate(overfitting_stretches(train, val)):  # drawn first so the curves stay on top
        ax.axvspan(start, end, color=OVERFIT_COLOR, alpha=0.4, label="overfitting (val ↑, train ↓)" if i == 0 else None)
    if train:
        ax.plot(*_xy(train), color=TRAIN_COLOR, linewidth=1.3, alpha=0.9, label="training loss")
    if val:
        ax.plot(*_xy(val), color=VAL_COLOR, marker="o", markersize=4, linewidth=2, label="validation loss")
    _mark_steps(ax, best_step, stop_step)
    _style(ax, "step", "loss", "Loss")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)  # outside: never hides a curve
    return png_bytes(fig)


def metric_plot(series: dict[str, Series], best_step: int | None = None, stop_step: int | None = None) -> bytes:
    """Validation task metrics (macro-F1, ROUGE-L, ...) vs step."""
    fig = new_figure(8.5, 3.2)
    ax = fig.subplots()
    for name, values in series.items():
        ax.plot(*_xy(values), marker="o", markersize=4, linewidth=2, label=literal(name))
    _mark_steps(ax, best_step, stop_step)
    _style(ax, "step", "value", "Validation task metric")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    return png_bytes(fig)


def confusion_plot(labels: Sequence[str], rows: Sequence[Sequence[int]], title: str) -> bytes:
    """Counts annotated; colour is the share of the gold row (recall), so small classes stay readable."""
    n = len(labels)
    side = min(2.2 + 0.55 * n, 9.0)
    fig = new_figure(side + 0.8, side)
    ax = fig.subplots()
    shares = [[v / (sum(row) or 1) for v in row] for row in rows]
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fontsize = 10 if n <= 8 else max(5, 10 - (n - 8) // 2)
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            color = "white" if shares[i][j] > 0.55 else "#222"
            ax.text(j, i, str(value), ha="center", va="center", color=color, fontsize=fontsize)
    ticks = [literal(label) for label in labels]
    ax.set_xticks(range(n), ticks, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), ticks)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(literal(title))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of gold row")
    return png_bytes(fig)


def overlay_plot(curves: dict[str, Series], ylabel: str = "validation loss", title: str = "Validation loss") -> bytes:
    """One line per run on shared axes (comparison page)."""
    fig = new_figure(8.5, 3.8)
    ax = fig.subplots()
    for name, values in curves.items():
        ax.plot(*_xy(values), marker="o", markersize=3, linewidth=1.8, label=literal(name))
    _style(ax, "step", ylabel, title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return png_bytes(fig)
