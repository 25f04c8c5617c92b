"""`tunewise runs list|show|compare` as console tables (track/views.py), on run directories written here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from tunewise.track.store import RunInfo, write_info
from tunewise.track.views import compare_runs, config_diff, list_runs, show_run

STARTED = 1_700_000_000.0


def make_run(
    workspace: Path, name: str, *, seconds: float = 187.4, lr: float = 1e-3, macro_f1: float = 0.75, **info: Any
) -> Path:
    path = workspace / f"20240101-000000-{name}"
    path.mkdir(parents=True)
    fields = {"status": "completed", "task": "classification", "started": STARTED, "finished": STARTED + seconds}
    fields |= {"pid": -1, "primary_metric": "macro_f1", "best_metric": macro_f1} | info
    write_info(path, RunInfo(name=path.name, **fields))
    (path / "config.yaml").write_text(yaml.safe_dump({"train": {"lr": lr, "epochs": 2}, "model": {"name": "m"}}))
    models = {"base": {"macro_f1": 0.5}, "fine-tuned": {"macro_f1": macro_f1}}
    difference = {"delta": macro_f1 - 0.5, "ci_low": 0.05, "ci_high": 0.45, "p_value": 1 / 1001, "resamples": 1000}
    evaluation = {"task": "classification", "primary_metric": "macro_f1", "split": "test", "n_examples": 20}
    evaluation |= {"models": models, "differences": {"macro_f1": difference}}
    (path / "eval.json").write_text(json.dumps(evaluation))
    end = {"step": 12, "event": "train_end", "best_step": 8, "best_metric": 1.2, "stopped_early": True}
    (path / "metrics.jsonl").write_text(json.dumps({"step": 4, "loss": 2.0}) + "\n" + json.dumps(end) + "\n")
    return path


def printed(action, *args: Any) -> tuple[str, Any]:
    console = Console(record=True, width=200, color_system=None)
    result = action(console, *args)
    return console.export_text(), result


def test_list_shows_each_run_with_its_metric_and_duration(tmp_path: Path):
    workspace = tmp_path / "runs"
    make_run(workspace, "short", seconds=42.9, macro_f1=0.8125)
    make_run(workspace, "long", seconds=3725.6, validation_metric="eval_loss", best_validation=1.2)
    text, runs = printed(list_runs, workspace)
    assert len(runs) == 2 and f"Runs in {workspace} (2)" in text
    lines = {line.split()[1]: line for line in text.splitlines() if "20240101" in line}
    assert "macro_f1 0.8125" in lines["20240101-000000-short"] and lines["20240101-000000-short"].count("42s") == 1
    assert "62m05s" in lines["20240101-000000-long"] and "loss 1.2000" in lines["20240101-000000-long"]


def test_show_prints_status_cells_the_difference_with_its_p_and_training(tmp_path: Path):
    run = make_run(tmp_path / "runs", "one")
    text, _ = printed(show_run, run)
    assert "status completed, duration 3m07s" in text
    assert "classification on 20 test examples" in " ".join(text.split())  # the table's title may wrap
    assert next(line for line in text.splitlines() if "fine-tuned " in line).split()[-2] == "0.7500"
    assert "Δ macro_f1 (fine-tuned − base) +0.2500, 95% CI [+0.0500, +0.4500], p ≤ 0.001" in text
    assert "training: 12 steps, best step 8 (1.2), stopped early: True" in text


def test_show_of_a_running_run_has_no_duration_and_a_damaged_eval_json_is_named(tmp_path: Path):
    run = make_run(tmp_path / "runs", "live", status="running", finished=None)
    (run / "eval.json").write_text("[1, 2]")
    text, _ = printed(show_run, run)
    assert "duration -" in text and "eval.json is damaged or not a tunewise evaluation; not shown" in text


def test_markup_and_control_characters_from_run_files_are_shown_literally(tmp_path: Path):
    run = make_run(tmp_path / "runs", "odd", error="[bold]boom[/] \x1b[2J")
    text, _ = printed(show_run, run)
    assert "[bold]boom[/] \\x1b[2J" in text and "\x1b" not in text


def test_compare_puts_metrics_side_by_side_and_lists_config_differences(tmp_path: Path):
    workspace = tmp_path / "runs"
    a = make_run(workspace, "a", lr=1e-3, macro_f1=0.75)
    b = make_run(workspace, "b", lr=5e-4, macro_f1=0.7, seconds=61)
    text, result = printed(compare_runs, [a, b])
    assert result["metrics"]["macro_f1 · fine-tuned"] == ["0.7500", "0.7000"]
    assert result["metrics"]["best validation metric"] == ["1.2000", "1.2000"]
    assert result["metrics"]["duration"] == ["3m07s", "1m01s"]
    assert result["config_diff"] == {"train.lr": [0.001, 0.0005]}
    assert "Config differences (1 keys)" in text and "0.0005" in text


def test_config_diff_names_keys_only_one_run_has(tmp_path: Path):
    workspace = tmp_path / "runs"
    a, b = make_run(workspace, "a"), make_run(workspace, "b")
    (b / "config.yaml").write_text(
        yaml.safe_dump({"train": {"lr": 1e-3, "epochs": 2, "seed": 7}, "model": {"name": "m"}})
    )
    assert config_diff([a, b]) == {"train.seed": [None, 7]}
    assert config_diff([a, a]) == {}


def test_compare_leaves_cells_empty_where_a_run_has_nothing(tmp_path: Path):
    workspace = tmp_path / "runs"
    a = make_run(workspace, "a")
    bare = workspace / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_text("train: {lr: 0.001}\n")
    _, result = printed(compare_runs, [a, bare])
    assert result["metrics"]["macro_f1 · fine-tuned"] == ["0.7500", ""]
    assert result["metrics"]["duration"][1] == ""
