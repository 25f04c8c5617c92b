"""The training stage on its own: encoded data in, a LoRA adapter and its summary out, with no orchestrator
around it (the seam a multi-process run uses)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from support.tiny import make_classification_rows
from tunewise.config import load_config
from tunewise.data.prompt import PromptRenderer
from tunewise.data.records import Record
from tunewise.data.splits import DataSplits
from tunewise.errors import DataError
from tunewise.pipeline.train_stage import encode_training_data, train_model, validation_scorer
from tunewise.track import RunDir

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _splits(n_train: int = 40, n_val: int = 12) -> DataSplits:
    rows = make_classification_rows(n_train + n_val, seed=3)
    records = [
        Record("classification", {"text": r["text"], "label": r["label"]}, "mem.jsonl", i + 1)
        for i, r in enumerate(rows)
    ]
    labels = sorted({r["label"] for r in rows})
    return DataSplits(train=records[:n_train], val=records[n_train:], test=[], labels=labels, rejects=[])


def _setup(write_config, tiny_model_dir: Path, tmp_path: Path, on_error: str = "raise", **train: object):
    config = load_config(write_config(train={"epochs": 1, **train}, data={"on_error": on_error}))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    splits = _splits()
    renderer = PromptRenderer(config.prompt, "classification", tokenizer, splits.labels)
    run_dir = RunDir(tmp_path / "run")
    run_dir.path.mkdir(parents=True)
    return config, tokenizer, splits, renderer, run_dir


def test_the_training_stage_runs_on_encoded_data_alone(write_config, tiny_model_dir, tmp_path: Path) -> None:
    config, tokenizer, splits, renderer, run_dir = _setup(write_config, tiny_model_dir, tmp_path)
    data = encode_training_data(config, splits, renderer, tokenizer, run_dir, Console(quiet=True))
    assert len(data.train) == 40 and len(data.val) == 12

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    result = train_model(config, model, tokenizer, data, run_dir, Console(quiet=True))

    summary = result.summary
    assert summary.steps == summary.planned_steps > 0 and summary.metric == config.train.metric
    assert Path(summary.adapter) == result.adapter_dir == run_dir.path / "adapter"
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    events = [json.loads(line) for line in (run_dir.path / "metrics.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "train_end" and events[-1]["step"] == summary.steps


def test_examples_over_max_length_are_rejects_and_an_empty_split_is_an_error(
    write_config, tiny_model_dir, tmp_path: Path
) -> None:
    config, tokenizer, splits, renderer, run_dir = _setup(write_config, tiny_model_dir, tmp_path, max_length=9)
    with pytest.raises(DataError, match=r"mem\.jsonl:1: answer cut entirely by train\.max_length=9"):
        encode_training_data(config, splits, renderer, tokenizer, run_dir, Console(quiet=True))

    config, tokenizer, splits, renderer, run_dir = _setup(
        write_config, tiny_model_dir, tmp_path / "skip", on_error="skip", max_length=9
    )
    with pytest.raises(DataError, match="no training examples left after the max_length check"):
        encode_training_data(config, splits, renderer, tokenizer, run_dir, Console(quiet=True))
    rejects = [json.loads(line) for line in (run_dir.path / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 52 and all(r["line"] for r in rejects)


def test_a_task_metric_is_scored_on_a_seeded_validation_sample(write_config, tiny_model_dir, tmp_path: Path) -> None:
    config, tokenizer, splits, renderer, _ = _setup(write_config, tiny_model_dir, tmp_path)
    assert validation_scorer(config, tokenizer, splits, renderer) is None  # eval_loss: the Trainer's own
    config = config.model_copy(update={"train": config.train.model_copy(update={"metric": "macro_f1"})})
    scorer = validation_scorer(config, tokenizer, splits, renderer)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    first, again = scorer(model), scorer(model)
    assert first == again and 0.0 <= first["macro_f1"] <= 1.0
