"""`sweep`: Optuna trials on the tiny model (pruning, resume, best.yaml) and its bookkeeping with a fake run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from rich.console import Console

from tunewise import pipeline
from tunewise.config import Config, load_config
from tunewise.errors import ConfigError, DataError
from tunewise.experiments.sweep import sweep

GOOD_LR, BAD_LR = 0.02, 1e-9


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _console() -> Console:
    return Console(record=True, width=200)


def _trials(sweep_dir: Path) -> list[dict[str, Any]]:
    return json.loads((sweep_dir / "trials.json").read_text())


def _train_end(run_dir: str) -> dict[str, Any]:
    lines = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return next(m for m in lines if m.get("event") == "train_end")


def test_tiny_sweep_prunes_a_hopeless_trial_resumes_and_writes_the_best_config(write_config):
    # Seed 0 makes the sampler draw lr = 1e-9, 0.02, 1e-9 (then 1e-9 on resume): the third trial meets a
    # completed good trial and is pruned at its second evaluation (step 4; the first is warm-up).
    path = write_config(
        train={"max_steps": 6, "eval_steps": 2, "seed": 0},
        sweep={"params": {"train.lr": {"choices": [GOOD_LR, BAD_LR]}}, "n_trials": 3, "warmup_evals": 1},
    )
    config = load_config(path)
    sweep_dir = sweep(config, path, _console())

    rows = _trials(sweep_dir)
    assert [r["number"] for r in rows] == [0, 1, 2]
    good_done = False
    for row in rows:  # the rule, whatever the draws: a 1e-9 trial after a finished 0.02 trial is pruned
        lr = row["params"]["train.lr"]
        assert row["state"] == ("PRUNED" if lr == BAD_LR and good_done else "COMPLETE"), rows
        good_done |= lr == GOOD_LR and row["state"] == "COMPLETE"
    assert "PRUNED" in [r["state"] for r in rows]
    pruned = next(r for r in rows if r["state"] == "PRUNED")
    end = _train_end(pruned["run_dir"])
    assert end["stopped_early"] and end["step"] == 4  # stopped by the pruner, not run to max_steps
    assert json.loads((Path(pruned["run_dir"]) / "run.json").read_text())["status"] == "pruned"  # in the run store
    for row in rows:
        if row["state"] == "COMPLETE":  # the objective is the best validation loss of the trial's run
            assert row["value"] == pytest.approx(_train_end(row["run_dir"])["best_metric"])
            assert Path(row["run_dir"]).parent == sweep_dir / "trials" and row["seconds"] > 0

    best = min((r for r in rows if r["state"] == "COMPLETE"), key=lambda r: r["value"])
    assert best["params"]["train.lr"] == GOOD_LR
    best_config = load_config(sweep_dir / "best.yaml")
    assert best_config.train.lr == GOOD_LR and best_config.sweep is None
    assert best_config.model_dump(exclude={"train", "sweep", "output"}) == config.model_dump(
        exclude={"train", "sweep", "output"}
    )
    assert (sweep_dir / "plots" / "history.png").stat().st_size > 0
    assert not (sweep_dir / "plots" / "importance.png").exists()  # one parameter: no importances

    # Resume: the same sweep asked for 4 trials runs exactly one more and keeps the first three.
    again = _console()
    assert sweep(config, path, again, n_trials=4) == sweep_dir
    rows_after = _trials(sweep_dir)
    assert [r["number"] for r in rows_after] == [0, 1, 2, 3] and rows_after[:3] == rows
    assert len(list((sweep_dir / "trials").glob("*-trial-*"))) == 4
    output = again.export_text()
    assert "3 trials already finished, 1 to run" in output and "Sweep trials" in output


def _fake_run(calls: list[Config], fail_on: Any = None, interrupt_on: Any = None):
    """pipeline.train_job stand-in: writes the run dir with a train_end line whose best loss falls with lr."""

    def run(config: Config, config_path: Path, console: Console, **kw: Any) -> SimpleNamespace:
        calls.append(config)
        if config.train.lr == fail_on:
            raise DataError("train.jsonl", 3, "text", "empty")
        if config.train.lr == interrupt_on:
            raise KeyboardInterrupt
        path = config.output.dir / f"run-{config.output.name}"
        path.mkdir(parents=True)
        end = {"event": "train_end", "step": 6, "best_step": 6, "best_metric": 1 / config.train.lr}
        (path / "metrics.jsonl").write_text(json.dumps(end) + "\n")
        return SimpleNamespace(run_dir=path)

    return run


def test_sweep_over_lr_rank_dropout_and_prompt_variant_builds_typed_trial_configs(write_config, monkeypatch):
    params = {
        "train.lr": {"low": 1e-5, "high": 1e-2, "log": True},
        "lora.r": {"low": 2, "high": 16},
        "lora.dropout": {"low": 0.0, "high": 0.3},
        "prompt.variant": {"choices": ["default", "terse"]},
    }
    path = write_config(
        prompt={"template": "Label: {{ text }}", "variants": {"terse": {"template": "{{ text }}"}}},
        sweep={"params": params, "n_trials": 4},
    )
    config = load_config(path)  # the sweep section validates
    calls: list[Config] = []
    monkeypatch.setattr(pipeline, "train_job", _fake_run(calls))
    sweep_dir = sweep(config, path, _console())

    rows = _trials(sweep_dir)
    assert len(calls) == len(rows) == 4 and all(r["state"] == "COMPLETE" for r in rows)
    for row, trial_config in zip(rows, calls, strict=True):
        sampled = row["params"]
        assert isinstance(trial_config.lora.r, int) and trial_config.lora.r == sampled["lora.r"]
        assert 2 <= trial_config.lora.r <= 16 and 0.0 <= trial_config.lora.dropout <= 0.3
        assert 1e-5 <= trial_config.train.lr <= 1e-2 and trial_config.train.lr == sampled["train.lr"]
        template = "{{ text }}" if sampled["prompt.variant"] == "terse" else "Label: {{ text }}"
        assert trial_config.prompt.template == template and set(trial_config.prompt.variants) == {"terse"}
        assert trial_config.sweep is None and trial_config.output.name == f"trial-{row['number']}"
    # the largest lr has the lowest fake loss: best.yaml carries every one of its values
    best = max(rows, key=lambda r: r["params"]["train.lr"])
    best_config = load_config(sweep_dir / "best.yaml")
    assert best_config.train.lr == best["params"]["train.lr"] and best_config.lora.r == best["params"]["lora.r"]
    assert best_config.lora.dropout == best["params"]["lora.dropout"]
    assert (sweep_dir / "plots" / "importance.png").is_file() and (sweep_dir / "plots" / "history.png").is_file()


def test_failed_and_interrupted_trials(write_config, monkeypatch):
    path = write_config(sweep={"params": {"train.lr": {"choices": [1e-3, 1e-2, 1e-1]}}, "n_trials": 3})
    config = load_config(path)
    calls: list[Config] = []
    # A user error fails its trial with the message; the sweep goes on and counts it as finished.
    monkeypatch.setattr(pipeline, "train_job", _fake_run(calls, fail_on=1e-2))
    sweep_dir = sweep(config, path, _console(), n_trials=6)
    rows = _trials(sweep_dir)
    assert len(rows) == 6 and {r["state"] for r in rows} == {"COMPLETE", "FAIL"}
    failed = [r for r in rows if r["state"] == "FAIL"]
    assert failed and all(r["params"]["train.lr"] == 1e-2 and "field 'text': empty" in r["error"] for r in failed)
    assert load_config(sweep_dir / "best.yaml").train.lr == 1e-1

    # Ctrl-C during a trial: trials.json is still written, and the interrupted trial is redone on resume.
    calls.clear()
    monkeypatch.setattr(pipeline, "train_job", _fake_run(calls, interrupt_on=1e-1))
    with pytest.raises(KeyboardInterrupt):
        sweep(config, path, _console(), n_trials=20)
    rows = _trials(sweep_dir)
    interrupted = [r for r in rows if r["error"] == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0] == rows[-1]
    finished_before = len(rows) - 1

    # A process killed mid-trial leaves it RUNNING in the study: resume marks it failed and redoes it.
    storage = f"sqlite:///{sweep_dir / 'study.db'}"
    optuna.load_study(study_name=sweep_dir.name, storage=storage).ask()
    calls.clear()
    monkeypatch.setattr(pipeline, "train_job", _fake_run(calls))
    sweep(config, path, _console(), n_trials=finished_before + 2)
    rows = _trials(sweep_dir)
    assert len(calls) == 2  # two interrupted trials do not count; only the 2 missing ones ran
    assert [r["error"] for r in rows].count("interrupted") == 2
    assert sum(r["error"] != "interrupted" for r in rows) == finished_before + 2


def test_an_unexpected_error_fails_one_trial_and_a_changed_space_is_refused_on_resume(write_config, monkeypatch):
    path = write_config(sweep={"params": {"train.lr": {"choices": [1e-3, 1e-2]}}, "n_trials": 4})
    calls: list[Config] = []
    fake = _fake_run(calls)

    def sometimes_crashes(config: Config, *args: Any, **kw: Any) -> SimpleNamespace:
        if config.train.lr == 1e-3:
            raise RuntimeError("loss is NaN")  # not a user error: still only this trial fails
        return fake(config, *args, **kw)

    monkeypatch.setattr(pipeline, "train_job", sometimes_crashes)
    sweep_dir = sweep(load_config(path), path, _console())
    rows = _trials(sweep_dir)
    assert len(rows) == 4 and "COMPLETE" in {r["state"] for r in rows}
    assert all(r["error"] == "RuntimeError: loss is NaN" for r in rows if r["state"] == "FAIL")

    changed = write_config(sweep={"params": {"train.lr": {"choices": [1e-3, 5e-2]}}, "n_trials": 6})
    with pytest.raises(ConfigError, match=r"sweep.params.train.lr changed since this sweep started"):
        sweep(load_config(changed), changed, _console())


def test_sweep_refuses_bad_settings(write_config):
    no_sweep = write_config()
    with pytest.raises(ConfigError, match="no sweep: section"):
        sweep(load_config(no_sweep), no_sweep, _console())
    log_zero = write_config(sweep={"params": {"lora.dropout": {"low": 0.0, "high": 0.3, "log": True}}})
    with pytest.raises(ConfigError, match="log scale needs low > 0"):
        sweep(load_config(log_zero), log_zero, _console())
    unknown = write_config(sweep={"params": {"train.learning_rate": {"low": 1e-5, "high": 1e-3}}})
    with pytest.raises(ConfigError, match="not a config key"):
        load_config(unknown)


def test_sweep_command_runs_and_resumes_from_the_cli(write_config):
    from typer.testing import CliRunner

    from tunewise.cli import app

    path = write_config(
        train={"max_steps": 2, "eval_steps": 2},
        sweep={"params": {"train.lr": {"low": 1e-4, "high": 1e-2, "log": True}, "lora.r": {"choices": [4, 8]}}},
    )
    runner = CliRunner()
    assert runner.invoke(app, ["sweep", str(path), "--n-trials", "1"], catch_exceptions=False).exit_code == 0
    result = runner.invoke(app, ["sweep", str(path), "--n-trials", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (sweep_dir,) = (path.parent / "runs" / "sweeps").iterdir()
    rows = _trials(sweep_dir)
    assert [r["number"] for r in rows] == [0, 1] and all(r["state"] == "COMPLETE" for r in rows)
    best = load_config(sweep_dir / "best.yaml")
    assert best.sweep is None and best.lora.r in (4, 8)
