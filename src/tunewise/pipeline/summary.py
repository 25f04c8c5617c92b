"""Console summaries (rich): data counts and the base vs fine-tuned table.

Rich parses markup in every string it prints, table cells and headers included: a label like `[/]` or a path
like `runs/[bold]` from the user is escaped, or it would be styled, swallowed or raise `MarkupError`."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunewise.config import DataConfig
from tunewise.core.format import at_p_floor, format_p, format_p_value, p_floor_note, stored_resamples
from tunewise.data.records import Record
from tunewise.data.splits import SPLITS, DataSplits
from tunewise.evaluate.stats import Difference


def print_data_summary(console: Console, splits: DataSplits, rejects_path: Any, data: DataConfig | None = None) -> None:
    """One line of split sizes as used (`split_sizes`), then where the rejects are and the labels."""
    sizes = ", ".join(split_sizes(splits, data))
    console.print(f"data: {escape(sizes)}; rejected: {len(splits.rejects)}")
    if splits.rejects:
        console.print(
            f"[yellow]{len(splits.rejects)} records rejected, with reasons, in {escape(str(rejects_path))}[/]"
        )
    if splits.labels:
        console.print(f"labels: {escape(', '.join(map(str, splits.labels)))}")


def split_sizes(splits: DataSplits, data: DataConfig | None = None) -> list[str]:
    """Each split as the number of records used; with its file's row count and why, when they differ:
    `train 900 of 1,000 (val, test split off)`, `val 96 of 1,200 (data.max_val_examples)`, `test 30 (split
    off train)`. `data`, the data config the splits were loaded with, names a data.max_train_examples cap
    on a training file that val or test were split off too; every other cap shows in the counts alone."""
    carved = [name for name in ("val", "test") if name not in splits.read_counts]
    sizes = []
    for name in SPLITS:
        records: list[Record] = getattr(splits, name)
        used, read = len(records), splits.read_counts.get(name)
        if read == used:
            sizes.append(f"{name} {used:,}")
            continue
        reasons = ["split off train"] if read is None else []
        rejected = sum(1 for r in splits.rejects if records and r.source == records[0].source)
        if read is not None and rejected:
            reasons.append(f"{rejected:,} rejected")
        if name == "train" and carved:
            reasons.append(f"{', '.join(carved)} split off")
        # A file's usable records all stay unless capped; the training file also gives up what was split off.
        capped = read is not None and not (name == "train" and carved) and used < read - rejected
        if capped or (data is not None and getattr(data, f"max_{name}_examples") == used):
            reasons.append(f"data.max_{name}_examples")
        count = f"{name} {used:,}" + ("" if read is None else f" of {read:,}")
        sizes.append(f"{count} ({'; '.join(reasons)})" if reasons else count)
    return sizes


def print_comparison(
    console: Console, results: dict[str, dict[str, Any]], primary: str, differences: dict[str, Difference] | None = None
) -> None:
    names = list(results)
    differences = differences or {}
    table = Table(title="Evaluation", show_lines=False)
    table.add_column("metric")
    for name in names:
        table.add_column(escape(name), justify="right")
    if len(names) == 2:
        table.add_column("Δ", justify="right")
        table.add_column("95% CI (paired bootstrap)", justify="right")
    for metric, label in _rows(results[names[0]], primary):
        values = [_get(results[n], metric) for n in names]
        cells = [f"{v:.4f}" if v is not None else "-" for v in values]
        if len(names) == 2 and None not in values:
            diff = differences.get(metric)
            star = " *" if diff is not None and diff.significant else ""
            cells.append(f"{values[1] - values[0]:+.4f}{star}")
            cells.append(
                f"[{diff.low:+.4f}, {diff.high:+.4f}] {format_p(diff.p_value, diff.resamples)}" if diff else ""
            )
        table.add_row(escape(label), *cells)
    console.print(table)
    if differences:
        console.print("* the 95% confidence interval of the difference excludes 0")
        floored = [d.resamples for d in differences.values() if at_p_floor(d.p_value, d.resamples)]
        if floored:
            console.print(p_floor_note(floored[0]))
    last = results[names[-1]]
    if "confusion_matrix" in last:
        matrix = last["confusion_matrix"]
        cm = Table(title=f"Confusion matrix ({escape(names[-1])}; rows gold, columns predicted)")
        cm.add_column("")
        for label in matrix["labels"]:
            cm.add_column(escape(str(label)), justify="right")
        for label, row in zip(matrix["labels"], matrix["rows_gold_cols_pred"], strict=True):
            cm.add_row(escape(str(label)), *map(str, row))
        console.print(cm)


def print_matrix(console: Console, matrix: dict[str, Any], metric: str) -> None:
    table = Table(title=f"Models x prompts: {metric} (Δ against {escape(matrix['reference'])})")
    for column in ("model · prompt", metric, "Δ", "95% CI", "p"):
        table.add_column(column, justify="left" if column == "model · prompt" else "right")
    floored: list[int] = []
    for cell, entry in matrix["cells"].items():
        diff = entry.get("vs_reference")
        if diff is None:
            table.add_row(escape(cell), f"{entry[metric]:.4f}", "", "", "")
            continue
        star = " *" if diff["significant"] else ""
        resamples = stored_resamples(diff.get("resamples"))
        floored += [resamples] if at_p_floor(diff["p_value"], resamples) else []
        table.add_row(
            escape(cell),
            f"{entry[metric]:.4f}",
            f"{diff['delta']:+.4f}{star}",
            f"[{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}]",
            format_p_value(diff["p_value"], resamples),
        )
    console.print(table)
    if floored:
        console.print(p_floor_note(floored[0]))


def _rows(metrics: dict[str, Any], primary: str) -> list[tuple[str, str]]:
    rows = [(primary, primary)]
    rows += [(k, k) for k, v in metrics.items() if isinstance(v, float) and k != primary]
    for label in metrics.get("per_class", {}):
        rows.append((f"per_class.{label}.f1", f"F1 {label}"))
    return rows


def _get(metrics: dict[str, Any], dotted: str) -> float | None:
    node: Any = metrics
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) else None
