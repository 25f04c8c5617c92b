"""bench/gpu_check.py without a GPU: the no-CUDA exit, the tweet slice and its configs, the report table."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = _module("gpu_check")
gpu_arms = _module("gpu_arms")


def test_without_a_cuda_device_it_says_so_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py"), "--out", str(out)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "no CUDA device found" in done.stdout
    assert not out.exists()  # nothing measured: no report that could replace a real one


def test_the_report_goes_under_OUT_when_it_is_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu_check.default_out() == tmp_path / "gpu_check.json"
    monkeypatch.delenv("OUT")
    assert gpu_check.default_out() == BENCH / "results" / "gpu_check.json"


def test_arguments() -> None:
    args = gpu_check.parse_args(["--dry-run-cpu", "--steps-only", "trl-sft", "--records", "90"])
    assert (args.dry_run_cpu, args.steps_only, args.records, args.worker) == (True, ["trl-sft"], 90, None)
    assert gpu_check.parse_args([]).steps_only == list(gpu_check.STEPS)
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--steps-only", "nonsense"])


def test_the_slice_has_each_label_equally_often_and_is_seeded() -> None:
    lines = [json.dumps({"text": f"t{i}", "label": "positive" if i % 10 == 0 else "negative"}) for i in range(500)]
    plan = {"records": 60, "seed": 3}
    chosen = gpu_check.stratified_slice(lines, plan)
    labels = [json.loads(line)["label"] for line in chosen]
    assert labels.count("positive") == labels.count("negative") == 30
    assert chosen == gpu_check.stratified_slice(lines, plan)


def test_jsonl_lines_keeps_records_with_unicode_line_breaks(tmp_path: Path) -> None:
    path = tmp_path / "raw.jsonl"
    rows = [{"text": "one\u2028two", "label": "a"}, {"text": "three", "label": "b"}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    assert [json.loads(line) for line in gpu_check.jsonl_lines(path)] == rows


def _steps(config: dict[str, Any]) -> list[dict[str, Any]]:
    return config["curate"]["steps"]


def test_the_slice_config_scales_the_example_and_reads_its_curated_splits(tmp_path: Path) -> None:
    plan = {**gpu_check.SIZES["cpu"], "device": "cpu", "seed": 0}
    config, _ = gpu_check.slice_config(plan, tmp_path / "slice.jsonl", tmp_path)
    split = next(s for s in _steps(config) if s["step"] == "split")
    assert (split["val"], split["test"]) == (plan["val"], plan["test"])
    assert [s for s in _steps(config) if s["step"] == "balance"][-1]["per_class"] == plan["per_class"]
    assert config["data"]["train"] == str(tmp_path / "slice.jsonl")
    assert not {"sweep", "ablate", "bakeoff"} & set(config)
    curated = gpu_check.curated_config(config)
    assert "curate" not in curated
    assert curated["data"]["test"] == str(tmp_path / "data" / "curated" / "test.jsonl")


def test_both_configs_are_valid_tunewise_configs(tmp_path: Path) -> None:
    from tunewise import api

    plan = {**gpu_check.SIZES["cuda"], "device": "cuda", "seed": 0}
    curating, _ = gpu_check.slice_config(plan, tmp_path / "slice.jsonl", tmp_path)
    for name, config in (("tweets.yaml", curating), ("curated.yaml", gpu_check.curated_config(curating))):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        loaded = api.load_config(path, gpu_arms.overrides(plan, "tunewise-qlora"))
        assert (loaded.model.device, loaded.model.quantize, loaded.train.precision) == ("cuda", "4bit", "bf16")
        assert (loaded.train.max_steps, loaded.train.eval_steps, loaded.train.packing) == (30, 30, True)


def test_curation_steps_whose_packages_are_missing_are_left_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = importlib.util.find_spec
    missing = {"lingua", gpu_check.EMBEDDER}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a))
    plan = {**gpu_check.SIZES["cuda"], "device": "cuda", "seed": 0}
    config, notes = gpu_check.slice_config(plan, tmp_path / "slice.jsonl", tmp_path)
    names = [s["step"] for s in _steps(config)]
    assert "semantic_dedup" not in names and "label_errors" not in names
    assert "languages" not in next(s for s in _steps(config) if s["step"] == "quality")
    assert len(notes) == 3


def test_throughput_counts_whole_epochs_exactly() -> None:
    figures = gpu_arms.throughput([10, 30], steps=3, batch_size=2, loop_s=2.0)
    assert (figures["tokens"], figures["tokens_exact"], figures["tokens_per_s"]) == (120, True, 60.0)
    assert gpu_arms.throughput([10, 20, 30], steps=1, batch_size=2, loop_s=1.0)["tokens_exact"] is False


def test_final_loss_is_the_last_steps_log_else_the_runs_mean() -> None:
    rows = [{"step": 1, "loss": 3.0}, {"step": 5, "loss": 2.0}, {"step": 5, "train_loss": 2.5}]
    assert gpu_arms.final_loss(rows, 5) == 2.0
    assert gpu_arms.final_loss(rows[:1] + rows[2:], 5) == 2.5  # nothing logged at the last step
    assert gpu_arms.final_loss([], 5) is None


def test_the_table_names_each_failed_step_and_its_error() -> None:
    report = {
        "plan": {"device": "cuda"},
        "steps": [
            {"step": "tunewise-bf16", "status": "ok", "steps": 60, "tokens_per_s": 5000.0, "peak_gib": 1.5,
             "wall_s": 70.0, "metric": {"name": "macro_f1", "base": 0.2, "fine-tuned": 0.6}},
            {"step": "trl-sft", "status": "failed", "error": "ModuleNotFoundError: No module named 'trl'"},
        ],
    }  # fmt: skip
    text = gpu_check.table(report)
    assert "| tunewise-bf16 | ok | 60 | 5000 |" in text and "macro_f1 base 0.200 -> fine-tuned 0.600" in text
    assert "FAILED trl-sft: ModuleNotFoundError: No module named 'trl'" in text
    assert "peak GPU GiB" in text
