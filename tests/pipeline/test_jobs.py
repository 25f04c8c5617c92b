"""The jobs compose the stages they need: `run_job` trains and scores both models, `train_job` trains and scores
none, `eval_job` scores the base model and each adapter; the outcome carries the run directory and the comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from tunewise.config import load_config
from tunewise.errors import DataError
from tunewise.pipeline.jobs import eval_job, run_job, train_job
from tunewise.track.runinfo import read_info

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _quiet() -> Console:
    return Console(quiet=True)


def test_run_job_scores_base_and_fine_tuned_and_records_the_comparison(write_config) -> None:
    path = write_config(train={"epochs": 1})
    outcome = run_job(load_config(path), path, _quiet())

    assert set(outcome.evaluation.results) == {"base", "fine-tuned"}
    assert outcome.primary_metric == "macro_f1" and outcome.comparison.reference == "base"
    diff = outcome.comparison.differences["macro_f1"]
    written = json.loads((outcome.run_dir / "eval.json").read_text())
    assert written["differences"]["macro_f1"]["delta"] == pytest.approx(diff.delta)
    assert outcome.comparison.vs_reference["fine-tuned"] is diff
    assert outcome.train is not None and written["train"] == outcome.train
    assert Path(outcome.train["adapter"]) == outcome.run_dir / "adapter"
    assert read_info(outcome.run_dir).status == "completed"
    assert not (outcome.run_dir / "base_eval.json").exists()  # kept only while the run could be resumed


def test_train_job_trains_without_scoring_the_test_split(write_config) -> None:
    path = write_config(train={"epochs": 1})
    outcome = train_job(load_config(path), path, _quiet())

    assert outcome.evaluation.results == {} and outcome.comparison.reference is None
    assert (outcome.run_dir / "adapter" / "adapter_config.json").is_file()
    assert not (outcome.run_dir / "eval.json").exists()
    info = read_info(outcome.run_dir)
    assert info.status == "completed" and info.best_validation == outcome.train["best_metric"]


def test_eval_job_scores_the_base_model_and_a_given_adapter(write_config) -> None:
    path = write_config(train={"epochs": 1})
    trained = train_job(load_config(path), path, _quiet())
    outcome = eval_job(load_config(path), path, _quiet(), adapters=[trained.run_dir / "adapter"])

    assert set(outcome.evaluation.results) == {"base", "fine-tuned"}
    assert outcome.train is None and "macro_f1" in outcome.comparison.differences
    written = json.loads((outcome.run_dir / "eval.json").read_text())
    assert written["adapters"] == {"fine-tuned": str(trained.run_dir / "adapter")}


def test_a_failing_stage_marks_the_run_failed_and_propagates(write_config, tmp_path: Path) -> None:
    empty = tmp_path / "data" / "val.jsonl"
    empty.write_text("", encoding="utf-8")
    path = write_config()
    with pytest.raises(DataError):
        run_job(load_config(path), path, _quiet())
    (run,) = [d for d in (tmp_path / "runs").iterdir() if d.is_dir()]
    info = read_info(run)
    assert info.status == "failed" and "DataError" in (info.error or "")


def test_a_sharded_multi_process_run_scores_the_saved_adapter_on_a_fresh_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FSDP / DeepSpeed leave rank 0 a shard of the weights once the other ranks are gone."""
    from types import SimpleNamespace

    import tunewise.pipeline.jobs as jobs
    from tunewise.config import Config
    from tunewise.pipeline.eval_stages import Evaluation
    from tunewise.train.distributed import Ranks

    calls: list[object] = []
    monkeypatch.setattr(jobs, "load_model_for_run", lambda config, splits, console, adapters: calls.append(adapters))
    monkeypatch.setattr(jobs, "evaluate_adapters", lambda *args: calls.append("adapters") or Evaluation())
    monkeypatch.setattr(jobs, "evaluate_model", lambda *args: calls.append("in memory") or Evaluation())
    data = SimpleNamespace(splits=None)
    trained = SimpleNamespace(model="trained", adapter_dir=tmp_path / "adapter")
    loaded = SimpleNamespace(model="base")
    plain = Config(data={"train": str(tmp_path / "t.jsonl")})
    sharded = Config(data={"train": str(tmp_path / "t.jsonl")}, train={"fsdp": True})
    jobs._evaluate_fine_tuned(sharded, data, loaded, trained, Ranks(0, 2, 0), None)
    assert calls == [[tmp_path / "adapter"], "adapters"] and loaded.model == "base"
    calls.clear()
    jobs._evaluate_fine_tuned(plain, data, loaded, trained, Ranks(0, 2, 0), None)  # DDP: rank 0 holds all weights
    jobs._evaluate_fine_tuned(sharded, data, loaded, trained, None, None)  # one process: its weights are whole
    assert calls == ["in memory", "in memory"] and loaded.model == "trained"
