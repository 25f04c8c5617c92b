"""What sweeps and ablations share (tunewise.experiments): the experiment's name, curating once, dotted config
edits that keep Python types, and the one-sample bootstrap CI of a run's primary metric."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from sklearn.metrics import f1_score

from support.tiny import make_classification_rows, write_jsonl
from tunewise.config import Config, EvalConfig, apply_override, validate_config
from tunewise.evaluate.tasks import ClassificationTask, PerplexityTask, task_for
from tunewise.experiments import curated_once, experiment_name, metric_ci, set_dotted

LABELS = ["negative", "neutral", "positive"]


def _config(**sections: Any) -> Config:
    return validate_config({"data": {"kind": "classification", "train": "train.jsonl"}, **sections})


# --- experiment_name


def test_experiment_name_is_output_name_else_the_config_file_stem(tmp_path: Path):
    assert experiment_name(_config(output={"name": "lr-study"}), tmp_path / "sweep.yaml") == "lr-study"
    assert experiment_name(_config(), tmp_path / "sweep.yaml") == "sweep"
    # examples/<name>/config.yaml: the folder names the experiment
    assert experiment_name(_config(), tmp_path / "sentiment" / "config.yaml") == "sentiment"


def test_experiment_name_keeps_only_file_name_characters_and_falls_back_to_experiment(tmp_path: Path):
    assert experiment_name(_config(output={"name": "my study/v2"}), tmp_path / "c.yaml") == "my-study-v2"
    assert "/" not in experiment_name(_config(output={"name": "../../etc"}), tmp_path / "c.yaml")
    # nothing usable left: the experiments' fallback, not the runs' ("run")
    assert experiment_name(_config(output={"name": "///"}), tmp_path / "c.yaml") == "experiment"


# --- curated_once


def test_curated_once_without_a_curate_section_returns_the_config_as_it_is():
    config = _config()
    console = Console(record=True, width=120)
    assert curated_once(config, console) is config
    assert console.export_text() == ""  # nothing curated, nothing said


def test_curated_once_curates_and_points_the_config_at_the_curated_splits(tmp_path: Path):
    rows = [{"tweet": r["text"], "label": r["label"]} for r in make_classification_rows(40, seed=2)]
    train = write_jsonl(tmp_path / "train.jsonl", [*rows[:20], rows[0], rows[1]])  # two exact duplicates
    val = write_jsonl(tmp_path / "val.jsonl", rows[20:30])
    test = write_jsonl(tmp_path / "test.jsonl", rows[30:])
    config = validate_config(
        {
            "data": {"train": str(train), "val": str(val), "test": str(test), "fields": {"text": "tweet"}},
            "curate": {"output": str(tmp_path / "curated"), "steps": [{"step": "exact_dedup"}]},
        }
    )
    curated = curated_once(config, Console(quiet=True))

    assert curated.curate is None  # each run of the experiment trains on these splits instead of curating again
    assert curated.data.train.parent == tmp_path / "curated" and curated.data.train != train
    assert (curated.data.fields, curated.data.format) == ({}, "jsonl")  # curated files use canonical names
    kept = [json.loads(line) for line in curated.data.train.read_text().splitlines()]
    assert [r["text"] for r in kept] == [r["tweet"] for r in rows[:20]]
    assert config.curate is not None and config.data.train == train  # the caller's config is left alone


# --- set_dotted


def test_set_dotted_keeps_the_python_type_that_an_override_string_would_lose():
    raw: dict[str, Any] = {"train": {"lr": 0.1, "epochs": 2}}
    set_dotted(raw, "train.lr", 1e-05)
    set_dotted(raw, "prompt.variant", "yes")
    set_dotted(raw, "lora.target_modules", ["q_proj", "v_proj"])
    assert raw == {
        "train": {"lr": 1e-05, "epochs": 2},
        "prompt": {"variant": "yes"},
        "lora": {"target_modules": ["q_proj", "v_proj"]},
    }
    assert isinstance(raw["train"]["lr"], float)
    parsed: dict[str, Any] = {}
    apply_override(parsed, "train.lr=1e-05")
    apply_override(parsed, "prompt.variant=yes")
    assert parsed == {"train": {"lr": "1e-05"}, "prompt": {"variant": True}}  # what set_dotted avoids


def test_set_dotted_replaces_a_section_that_is_not_a_mapping():
    raw: dict[str, Any] = {"curate": None, "eval": "x", "model": {"name": "tiny"}}
    set_dotted(raw, "curate.seed", 7)
    set_dotted(raw, "eval.batch_size", 4)
    set_dotted(raw, "top", 1)
    assert raw == {"curate": {"seed": 7}, "eval": {"batch_size": 4}, "model": {"name": "tiny"}, "top": 1}


# --- metric_ci


def _bootstrap(score, n: int, seed: int, resamples: int) -> tuple[float, float]:
    """The 95% interval of `score(indices)` over the index draws paired_bootstrap makes with this seed."""
    rng = np.random.default_rng(seed)
    values = [score(rng.integers(0, n, n)) for _ in range(resamples)]
    low, high = np.quantile(values, [0.025, 0.975])
    return float(low), float(high)


def _classification_predictions() -> list[dict[str, str]]:
    # imbalanced, with errors on the small classes and two unparsed answers: macro-F1 well below accuracy
    gold = ["positive"] * 30 + ["neutral"] * 5 + ["negative"] * 5
    pred = list(gold)
    for i in (30, 31, 35, 36):
        pred[i] = "positive"
    pred[32], pred[37] = "maybe", "(unparsed)"
    return [
        {"source": f"test.jsonl:{i}", "gold": g, "pred": p} for i, (g, p) in enumerate(zip(gold, pred, strict=True))
    ]


def test_metric_ci_of_macro_f1_recomputes_macro_f1_on_every_resample():
    task = task_for("classification", LABELS, EvalConfig(), 64)
    assert task.primary_metric == "macro_f1"
    predictions = _classification_predictions()
    gold = [p["gold"] for p in predictions]
    pred = [p["pred"] for p in predictions]

    def macro_f1(idx: np.ndarray) -> float:
        # an answer outside the labels is wrong for its gold class and gets no F1 of its own
        picked_gold, picked_pred = [gold[i] for i in idx], [pred[i] for i in idx]
        return float(f1_score(picked_gold, picked_pred, labels=LABELS, average="macro", zero_division=0))

    ci = metric_ci(task, predictions, seed=4, resamples=200)
    assert ci is not None
    assert ci.delta == pytest.approx(macro_f1(np.arange(len(gold))))
    accuracy = sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold)
    assert ci.delta < accuracy - 0.1  # the figure is macro-F1, not the share of right answers
    assert (ci.low, ci.high) == pytest.approx(_bootstrap(macro_f1, len(gold), seed=4, resamples=200))
    assert 0 < ci.low < ci.delta < ci.high < 1
    assert (ci.n, ci.resamples) == (len(predictions), 200)


def test_metric_ci_is_seeded():
    task = ClassificationTask(LABELS)
    predictions = _classification_predictions()
    first = metric_ci(task, predictions, seed=1, resamples=100)
    assert first == metric_ci(task, predictions, seed=1, resamples=100)
    other = metric_ci(task, predictions, seed=2, resamples=100)
    assert first is not None and other is not None and other.delta == first.delta
    assert (other.low, other.high) != (first.low, first.high)


def test_metric_ci_of_perfect_and_of_unparsed_classification():
    task = ClassificationTask(LABELS, mode="generate")
    perfect = metric_ci(task, [{"gold": label, "pred": label} for label in LABELS * 4], resamples=50)
    assert perfect is not None and perfect.delta == perfect.low == perfect.high == 1.0
    unparsed = metric_ci(task, [{"gold": label, "pred": "no idea"} for label in LABELS * 4], resamples=50)
    assert unparsed is not None and unparsed.delta == unparsed.high == 0.0


@pytest.mark.parametrize(("task_name", "metric"), [("qa", "f1"), ("generation", "sentence_chrf")])
def test_metric_ci_of_a_generative_task_resamples_the_per_example_scores(task_name: str, metric: str):
    task = task_for("completion", [], EvalConfig(task=task_name), 64)
    assert task.primary_metric == metric
    scores = [0.0, 1.0, 0.5, 0.25, 1.0, 0.75, 0.0, 1.0, 0.5, 0.6] * 3
    predictions = [{"source": f"t:{i}", "pred": "x", metric: s} for i, s in enumerate(scores)]
    ci = metric_ci(task, predictions, seed=3, resamples=200)
    values = np.array(scores)
    assert ci is not None and ci.delta == pytest.approx(values.mean())
    low, high = _bootstrap(lambda idx: float(values[idx].mean()), len(scores), seed=3, resamples=200)
    assert (ci.low, ci.high) == pytest.approx((low, high))
    assert min(scores) < ci.low < ci.delta < ci.high < max(scores)


def test_metric_ci_of_constant_scores_is_a_point():
    task = task_for("completion", [], EvalConfig(task="summarization"), 64)
    ci = metric_ci(task, [{"rougeL": 0.4}] * 6, resamples=50)
    assert ci is not None and ci.delta == pytest.approx(0.4) and ci.low == pytest.approx(ci.high)


def test_metric_ci_is_none_without_per_example_scores():
    # corpus perplexity: one figure for the whole split, nothing to resample
    perplexity = PerplexityTask(64)
    assert metric_ci(perplexity, [{"source": "t:0", "pred": "x"}, {"source": "t:1", "pred": "y"}]) is None
    assert metric_ci(task_for("completion", [], EvalConfig(task="perplexity"), 64), [{"loss": 1.0}]) is None
    # a generative run whose predictions lack the primary metric, and runs without predictions
    qa = task_for("completion", [], EvalConfig(task="qa"), 64)
    assert metric_ci(qa, [{"pred": "x", "exact_match": 1.0}]) is None
    assert metric_ci(qa, []) is None
    assert metric_ci(ClassificationTask(LABELS), []) is None


def test_experiment_data_names_the_folder_and_loads_what_every_arm_shares(write_config, tiny_data, tmp_path):
    from rich.console import Console

    from tunewise.config import load_config
    from tunewise.experiments import experiment_data, write_records

    path = write_config()
    shared = experiment_data(load_config(path), path, "bakeoffs", Console(quiet=True))
    assert shared.out.parent.name == "bakeoffs" and (shared.out / "data").is_dir()
    assert (len(shared.splits.train), len(shared.splits.val), len(shared.splits.test)) == (96, 24, 30)
    assert shared.task.primary_metric == "macro_f1"
    written = write_records(tmp_path / "val.jsonl", shared.splits.val)
    assert written.read_text().splitlines()[0].startswith("{") and len(written.read_text().splitlines()) == 24
