"""The console summaries of a run (rich): the data line, the base vs fine-tuned table with its paired-bootstrap CI
and p, the confusion matrix and the models x prompts matrix. User text (labels, model and cell names, paths) is
printed as written, never read as rich markup."""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console

from tunewise.config import validate_config
from tunewise.core.format import p_floor, p_floor_note
from tunewise.data.records import Record, Reject, RejectCategory
from tunewise.data.splits import DataSplits
from tunewise.evaluate.stats import Difference
from tunewise.pipeline.summary import print_comparison, print_data_summary, print_matrix, split_sizes

FLOOR = p_floor(1000)  # the smallest p 1,000 resamples can give


def _console() -> Console:
    return Console(record=True, width=120)


def _records(n: int, source: str) -> list[Record]:
    return [Record("classification", {"text": f"text {i}", "label": "a"}, source, i + 1) for i in range(n)]


def _reject(source: str, line: int) -> Reject:
    return Reject(source, line, "label", "empty value", category=RejectCategory.EMPTY_FIELD)


def _cells(text: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first`."""
    for line in text.splitlines():
        cells = [c.strip() for c in re.split("[│┃]", line.strip().strip("│┃"))]  # ┃: the header row
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{text}")


def _flat(text: str) -> str:
    return " ".join(text.split())  # a long footnote wraps at the console's width


# --- the data line


def test_data_summary_prints_sizes_rejects_and_labels_escaped():
    splits = DataSplits(
        _records(3, "train.jsonl"),
        _records(2, "val.jsonl"),
        _records(2, "test.jsonl"),
        labels=["[/]", "[bold]pos", "neg"],
        rejects=[_reject("train.jsonl", 4)],
        read_counts={"train": 4, "val": 2, "test": 2},
    )
    console = _console()
    print_data_summary(console, splits, "runs/[bold]x/rejects.jsonl")
    lines = console.export_text().splitlines()
    assert lines == [
        "data: train 3 of 4 (1 rejected), val 2, test 2; rejected: 1",
        "1 records rejected, with reasons, in runs/[bold]x/rejects.jsonl",
        "labels: [/], [bold]pos, neg",
    ]


def test_data_summary_without_rejects_or_labels_is_one_line():
    splits = DataSplits(
        _records(2, "t.jsonl"), _records(1, "v.jsonl"), _records(1, "e.jsonl"), read_counts={"train": 2, "val": 1}
    )
    console = _console()
    print_data_summary(console, splits, "unused")
    assert console.export_text() == "data: train 2, val 1, test 1 (split off train); rejected: 0\n"


def test_split_sizes_say_why_a_split_is_smaller_than_its_file():
    # val and test carved off the training file, which also lost one rejected row
    carved = DataSplits(
        _records(1200, "train.jsonl"),
        _records(150, "train.jsonl"),
        _records(300, "train.jsonl"),
        rejects=[_reject("train.jsonl", 7)],
        read_counts={"train": 1651},
    )
    assert split_sizes(carved) == [
        "train 1,200 of 1,651 (1 rejected; val, test split off)",
        "val 150 (split off train)",
        "test 300 (split off train)",
    ]
    # a training-file cap only the data config can tell apart from what was split off
    data = validate_config({"data": {"train": "train.jsonl", "max_train_examples": 1200}}).data
    assert (
        split_sizes(carved, data)[0]
        == "train 1,200 of 1,651 (1 rejected; val, test split off; data.max_train_examples)"
    )
    # a given val file sampled down: the cap shows without the config too
    capped = DataSplits(
        _records(5, "t.jsonl"),
        _records(4, "v.jsonl"),
        _records(3, "e.jsonl"),
        read_counts={"train": 5, "val": 10, "test": 3},
    )
    assert split_sizes(capped) == ["train 5", "val 4 of 10 (data.max_val_examples)", "test 3"]


# --- base vs fine-tuned


def _metrics(macro_f1: float, accuracy: float, f1: dict[str, float]) -> dict[str, Any]:
    return {
        "n": 40,  # an int: a count, not a row of the table
        "macro_f1": macro_f1,
        "accuracy": accuracy,
        "per_class": {label: {"f1": value, "support": 20} for label, value in f1.items()},
    }


def test_comparison_shows_both_models_the_delta_the_ci_and_the_p():
    base = _metrics(0.5, 0.6, {"[/]": 0.4, "spam": 0.6})
    tuned = _metrics(0.75, 0.62, {"[/]": 0.7, "spam": 0.8})
    tuned["confusion_matrix"] = {"labels": ["[/]", "spam"], "rows_gold_cols_pred": [[14, 6], [4, 16]]}
    differences = {
        "macro_f1": Difference(0.25, 0.1, 0.4, 0.004, 40, 1000),
        "accuracy": Difference(0.02, -0.05, 0.09, 0.61, 40, 1000),
    }
    console = _console()
    print_comparison(console, {"base": base, "fine-tuned [bold]v2": tuned}, "macro_f1", differences)
    text = console.export_text()

    header = _cells(text, "metric")
    assert header == ["metric", "base", "fine-tuned [bold]v2", "Δ", "95% CI (paired bootstrap)"]
    # the primary metric first, then the other float metrics, then each class's F1
    rows = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│ ")]
    assert rows[:4] == ["macro_f1", "accuracy", "F1 [/]", "F1 spam"]
    assert _cells(text, "macro_f1")[1:] == ["0.5000", "0.7500", "+0.2500 *", "[+0.1000, +0.4000] p = 0.004"]
    assert _cells(text, "accuracy")[1:] == ["0.6000", "0.6200", "+0.0200", "[-0.0500, +0.0900] p = 0.610"]
    assert _cells(text, "F1 [/]")[1:] == ["0.4000", "0.7000", "+0.3000", ""]  # no difference computed: no CI
    assert "* the 95% confidence interval of the difference excludes 0" in text
    assert "cannot give a p below" not in text  # no p at the floor, no note about it

    assert "Confusion matrix (fine-tuned [bold]v2; rows gold, columns predicted)" in _flat(text)
    assert _cells(text, "[/]")[1:] == ["14", "6"] and _cells(text, "spam")[1:] == ["4", "16"]


def test_comparison_at_the_p_floor_says_what_the_floor_means():
    results = {"base": {"macro_f1": 0.2}, "fine-tuned": {"macro_f1": 0.9}}
    console = _console()
    print_comparison(console, results, "macro_f1", {"macro_f1": Difference(0.7, 0.6, 0.8, FLOOR, 40, 1000)})
    text = console.export_text()
    assert _cells(text, "macro_f1")[-1] == "[+0.6000, +0.8000] p ≤ 0.001"
    assert p_floor_note(1000) in _flat(text)


def test_comparison_of_one_model_or_a_missing_metric_has_no_delta():
    console = _console()
    print_comparison(console, {"fine-tuned": {"rougeL": 0.31, "bleu": 0.1}}, "rougeL")
    text = console.export_text()
    assert _cells(text, "metric") == ["metric", "fine-tuned"]
    assert _cells(text, "rougeL") == ["rougeL", "0.3100"] and _cells(text, "bleu") == ["bleu", "0.1000"]
    assert "Δ" not in text and "excludes 0" not in text and "Confusion matrix" not in text

    console = _console()
    print_comparison(console, {"base": {"rougeL": 0.2, "bleu": 0.1}, "fine-tuned": {"rougeL": 0.3}}, "rougeL")
    text = console.export_text()
    assert _cells(text, "rougeL")[1:] == ["0.2000", "0.3000", "+0.1000", ""]
    assert _cells(text, "bleu")[1:] == ["0.1000", "-", "", ""]  # one side missing: no difference to show


# --- models x prompts


def _vs(delta: float, low: float, high: float, p: float, **extra: Any) -> dict[str, Any]:
    return {"delta": delta, "ci_low": low, "ci_high": high, "p_value": p, "significant": low > 0 or high < 0, **extra}


def test_matrix_shows_each_cell_against_the_reference():
    matrix = {
        "reference": "base · [/]",
        "cells": {
            "base · [/]": {"macro_f1": 0.5},
            "base · [bold]terse": {"macro_f1": 0.48, "vs_reference": _vs(-0.02, -0.08, 0.04, 0.52, resamples=1000)},
            "fine-tuned · [/]": {"macro_f1": 0.81, "vs_reference": _vs(0.31, 0.22, 0.4, 0.002, resamples=1000)},
        },
    }
    console = _console()
    print_matrix(console, matrix, "macro_f1")
    text = console.export_text()
    assert "Models x prompts: macro_f1 (Δ against base · [/])" in _flat(text)
    assert _cells(text, "model · prompt") == ["model · prompt", "macro_f1", "Δ", "95% CI", "p"]
    assert _cells(text, "base · [/]") == ["base · [/]", "0.5000", "", "", ""]  # the reference itself
    assert _cells(text, "base · [bold]terse")[1:] == ["0.4800", "-0.0200", "[-0.0800, +0.0400]", "0.520"]
    assert _cells(text, "fine-tuned · [/]")[1:] == ["0.8100", "+0.3100 *", "[+0.2200, +0.4000]", "0.002"]
    assert "cannot give a p below" not in text


def test_matrix_p_floor_uses_the_resamples_each_difference_records():
    matrix = {
        "reference": "base",
        "cells": {
            "base": {"rougeL": 0.2},
            "tuned": {"rougeL": 0.4, "vs_reference": _vs(0.2, 0.15, 0.25, p_floor(200), resamples=200)},
            "old file": {"rougeL": 0.3, "vs_reference": _vs(0.1, 0.05, 0.15, FLOOR)},  # no count: 1,000 assumed
        },
    }
    console = _console()
    print_matrix(console, matrix, "rougeL")
    text = console.export_text()
    assert _cells(text, "tuned")[-1] == "≤ 0.005" and _cells(text, "old file")[-1] == "≤ 0.001"
    assert p_floor_note(200) in _flat(text)  # the footnote of the first difference at its floor
