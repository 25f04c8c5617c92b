"""`import tunewise`: a light import exposing `Project` and `load_config`; a project runs the CLI's stages and returns
typed results that agree with the files the run writes; configs come from files or dicts; errors raise, never exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

import tunewise
from tunewise import api
from tunewise.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
QUIET = Console(quiet=True)


def test_import_tunewise_is_light_and_exposes_the_api() -> None:
    code = "import sys, tunewise; assert 'torch' not in sys.modules; print(tunewise.Project.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "Project"
    assert tunewise.load_config is api.load_config and tunewise.TunewiseError.__name__ == "TunewiseError"


def test_a_project_runs_and_its_result_matches_eval_json(write_config) -> None:
    path = write_config(train={"epochs": 1})
    result = tunewise.Project(path, overrides={"train.seed": 3}, console=QUIET).run()

    written = json.loads((result.run_dir / "eval.json").read_text())
    assert result.primary_metric == written["primary_metric"] == "macro_f1"
    assert result.score("base") == written["models"]["base"]["macro_f1"]
    assert result.score() == written["models"]["fine-tuned"]["macro_f1"]
    assert result.delta.delta == pytest.approx(written["differences"]["macro_f1"]["delta"])
    assert result.delta.low <= result.delta.delta <= result.delta.high
    rows = {row["model"]: row for row in result.table()}
    assert rows["fine-tuned"]["ci_low"] == result.delta.low and rows["base"]["delta_vs_base"] is None
    assert result.adapter == result.run_dir / "adapter" and result.adapter.is_dir()
    assert yaml.safe_load((result.run_dir / "config.yaml").read_text())["train"]["seed"] == 3
    assert result.run_dir.name.endswith("-" + path.parent.name)  # named as the CLI names it: examples/<x>/config.yaml

    again = tunewise.Project(path, console=QUIET).evaluate([result.adapter])
    assert again.score("fine-tuned") == pytest.approx(result.score())
    with pytest.raises(KeyError, match="no model 'tuned'"):
        again.score("tuned")


def test_a_dict_config_with_overrides_resolves_paths_against_the_working_directory(
    write_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = yaml.safe_load(write_config().read_text())
    raw["data"]["train"] = "data/train.jsonl"  # relative: to the working directory for a dict
    monkeypatch.chdir(tmp_path)
    config = tunewise.load_config(raw, ["train.lr=1e-3"])
    assert config.data.train == tmp_path / "data" / "train.jsonl" and config.train.lr == 1e-3
    with pytest.raises(ConfigError, match="train.nope"):
        tunewise.load_config(raw, {"train.nope": 1})


def test_curate_returns_the_counts_of_every_step(write_config, tmp_path: Path) -> None:
    path = write_config(curate={"output": str(tmp_path / "curated"), "steps": [{"step": "exact_dedup"}]})
    with (tmp_path / "data" / "train.jsonl").open("a", encoding="utf-8") as f:
        f.write((tmp_path / "data" / "train.jsonl").read_text().splitlines()[0] + "\n")  # one exact duplicate
    curation = tunewise.Project(path, console=QUIET).curate()

    assert curation.n_input == 97 and curation.n_kept <= 96
    assert curation.rejected.get("dedup:exact") == 1
    assert curation.report_json.is_file() and set(curation.splits) >= {"train"}
    step = next(s for s in curation.steps if s["name"] == "exact_dedup")
    assert sum(step["dropped"].values()) == 1


def test_api_errors_raise_instead_of_exiting(write_config, tmp_path: Path) -> None:
    with pytest.raises(tunewise.TunewiseError, match="config file not found"):
        tunewise.Project(tmp_path / "missing.yaml")
    with pytest.raises(tunewise.TunewiseError, match="no such run directory"):
        tunewise.Project(write_config(), console=QUIET).train(resume=tmp_path / "nowhere")
    with pytest.raises(tunewise.TunewiseError, match="only widens"):
        api.run(write_config(), allow_unconfined_code=True, console=QUIET)
