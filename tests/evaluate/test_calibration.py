"""Label-bias calibration fitted on validation only, and ROC-AUC / average precision for two-label tasks."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score
from transformers import AutoModelForCausalLM, AutoTokenizer

from support.tiny import sentence
from tunewise.config import PromptConfig
from tunewise.data.prompt import PromptRenderer
from tunewise.data.records import Record
from tunewise.errors import ConfigError
from tunewise.evaluate.calibration import apply_label_bias, calibrate_predictions, fit_label_bias
from tunewise.evaluate.metrics import classification_metrics, positive_label, ranking_metrics
from tunewise.evaluate.tasks import ClassificationTask

SPAM = ["ham", "spam"]


def _biased_binary(n: int, seed: int) -> list[dict]:
    """A scorer that ranks perfectly (spam margin always above ham's) but prefers "ham" for every example."""
    rng = np.random.default_rng(seed)
    predictions = []
    for i in range(n):
        gold = "spam" if rng.random() < 0.3 else "ham"
        margin = -6.0 + (3.0 if gold == "spam" else 0.0) + rng.uniform(-1, 1)
        logprobs = {"ham": round(-1.0 + rng.normal(0, 0.1), 4)}
        logprobs["spam"] = round(logprobs["ham"] + margin, 4)
        predictions.append({"source": f"x.jsonl:{i}", "gold": gold, "pred": "ham", "logprobs": logprobs})
    return predictions


def _predictions(scores: np.ndarray, gold: list[str], labels: list[str]) -> list[dict]:
    return [
        {
            "source": f"x.jsonl:{i}",
            "gold": g,
            "pred": labels[int(np.argmax(row))],
            "logprobs": {label: float(s) for label, s in zip(labels, row, strict=True)},
        }
        for i, (g, row) in enumerate(zip(gold, scores, strict=True))
    ]


def _random_task(seed: int, n_labels: int, n: int = 80) -> tuple[np.ndarray, list[str], list[str]]:
    """Noisy scores with a per-label offset, so the arg-max leans towards some labels."""
    rng = np.random.default_rng(seed)
    labels = [f"l{i}" for i in range(n_labels)]
    gold_ids = rng.integers(0, n_labels, n)
    scores = rng.normal(size=(n, n_labels)) + rng.normal(0, 2, n_labels)
    scores[np.arange(n), gold_ids] += rng.uniform(0, 2)
    return scores, [labels[i] for i in gold_ids], labels


def _macro_f1(gold: list[str], scores: np.ndarray, bias: np.ndarray, labels: list[str]) -> float:
    predicted = [labels[i] for i in apply_label_bias(scores, bias)]
    return float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0))


def test_calibration_rescues_a_biased_binary_scorer_on_held_out_data():
    val, test = _biased_binary(300, seed=1), _biased_binary(300, seed=2)
    gold = [p["gold"] for p in test]
    uncalibrated = classification_metrics(gold, [p["pred"] for p in test], SPAM)
    assert uncalibrated["macro_f1"] < 0.5  # arg-max says "ham" for everything

    metrics, calibrated, info = calibrate_predictions(val, test, SPAM)

    assert metrics["macro_f1"] > 0.98 and metrics["accuracy"] > 0.98
    assert set(uncalibrated) <= set(metrics)
    assert metrics["roc_auc"] == 1.0 and metrics["average_precision"] == 1.0  # the ranking was fine all along
    assert [p["pred_uncalibrated"] for p in calibrated] == ["ham"] * len(test)
    assert [p["pred"] for p in calibrated] != [p["pred"] for p in test]
    assert [p["gold"] for p in calibrated] == gold and all("logprobs" in p for p in calibrated)
    assert info["fitted_on"] == 300 and info["bias"]["ham"] == 0.0 and info["bias"]["spam"] > 2.0
    assert info["val_macro_f1_before"] < 0.5 and info["val_macro_f1_after"] == 1.0


def test_the_binary_bias_is_the_best_threshold_on_the_margin():
    for seed in range(3):
        scores, gold, labels = _random_task(seed, 2, n=40)
        margins = np.sort(scores[:, 1] - scores[:, 0])
        thresholds = [margins[0] - 1, *((margins[1:] + margins[:-1]) / 2), margins[-1] + 1]
        best = max(_macro_f1(gold, scores, np.array([0.0, -t]), labels) for t in thresholds)
        bias = fit_label_bias(scores, gold, labels)
        assert _macro_f1(gold, scores, bias, labels) == pytest.approx(best)


@pytest.mark.parametrize("n_labels", [2, 3, 5])
def test_validation_macro_f1_never_drops(n_labels: int):
    for seed in range(12):
        scores, gold, labels = _random_task(seed, n_labels)
        bias = fit_label_bias(scores, gold, labels)
        assert bias.shape == (n_labels,) and bias[0] == 0.0
        assert _macro_f1(gold, scores, bias, labels) >= _macro_f1(gold, scores, np.zeros(n_labels), labels)
        assert np.array_equal(bias, fit_label_bias(scores, gold, labels))  # deterministic


def test_three_labels_with_shifted_scores_are_recovered():
    rng = np.random.default_rng(0)
    labels = ["negative", "neutral", "positive"]
    offsets = np.array([4.0, 0.0, -3.0])  # the model strongly prefers "negative"

    def split(n: int) -> tuple[np.ndarray, list[str]]:
        gold_ids = rng.integers(0, 3, n)
        scores = rng.normal(0, 0.3, (n, 3)) + offsets
        scores[np.arange(n), gold_ids] += 2.0
        return scores, [labels[i] for i in gold_ids]

    (val_scores, val_gold), (test_scores, test_gold) = split(300), split(300)
    metrics, _, info = calibrate_predictions(
        _predictions(val_scores, val_gold, labels), _predictions(test_scores, test_gold, labels), labels
    )
    assert _macro_f1(test_gold, test_scores, np.zeros(3), labels) < 0.4
    assert metrics["macro_f1"] > 0.95
    assert info["val_macro_f1_after"] > 0.95 > info["val_macro_f1_before"]
    bias = np.array([info["bias"][label] for label in labels])
    assert info["val_macro_f1_after"] == pytest.approx(_macro_f1(val_gold, val_scores, bias, labels))
    assert info["val_macro_f1_before"] == pytest.approx(_macro_f1(val_gold, val_scores, np.zeros(3), labels))
    assert "roc_auc" not in metrics and "average_precision" not in metrics


def test_the_fit_never_looks_at_the_evaluation_split():
    val, test = _biased_binary(200, seed=3), _biased_binary(200, seed=4)
    _, _, info = calibrate_predictions(val, test, SPAM)
    flipped = [{**p, "gold": "ham" if p["gold"] == "spam" else "spam"} for p in test]
    shuffled = [{**p, "logprobs": {"ham": p["logprobs"]["spam"], "spam": p["logprobs"]["ham"]}} for p in test]
    for other in (flipped, shuffled, test[:5]):
        assert calibrate_predictions(val, other, SPAM)[2] == info
    # The validation scores, by contrast, are what the bias is fitted to: shift them and it follows.
    shifted = [{**p, "logprobs": {**p["logprobs"], "spam": p["logprobs"]["spam"] + 1.0}} for p in val]
    refit = calibrate_predictions(shifted, test, SPAM)[2]["bias"]["spam"]
    assert refit == pytest.approx(info["bias"]["spam"] - 1.0)


def test_generated_predictions_cannot_be_calibrated():
    generated = [{"source": "t.jsonl:1", "gold": "ham", "pred": "ham", "output": "ham"}]
    with pytest.raises(ConfigError, match=r"t\.jsonl:1 .*eval\.label_mode: likelihood"):
        calibrate_predictions(generated, _biased_binary(3, seed=0), SPAM)
    with pytest.raises(ConfigError, match="eval.label_mode: likelihood"):
        calibrate_predictions(_biased_binary(3, seed=0), generated, SPAM)
    with pytest.raises(ConfigError, match="validation split has no examples"):
        calibrate_predictions([], _biased_binary(3, seed=0), SPAM)


def test_twenty_labels_and_ten_thousand_examples_fit_quickly():
    scores, gold, labels = _random_task(0, 20, n=10_000)
    start = time.monotonic()
    bias = fit_label_bias(scores, gold, labels)
    assert time.monotonic() - start < 5.0
    assert _macro_f1(gold, scores, bias, labels) > _macro_f1(gold, scores, np.zeros(20), labels) + 0.05


def test_positive_label_is_the_rarer_one_and_the_second_on_a_tie():
    assert positive_label(["ham", "ham", "spam"], SPAM) == "spam"
    assert positive_label(["ham", "spam", "spam"], SPAM) == "ham"
    assert positive_label(["ham", "spam"], SPAM) == "spam"
    assert positive_label(["ham", "spam"], ["spam", "ham"]) == "ham"


def test_ranking_figures_use_the_positive_margin():
    gold = ["ham", "ham", "ham", "spam", "spam"]
    scores = np.array([[0.0, -3.0], [0.0, -1.0], [0.0, 0.5], [0.0, 1.0], [0.0, -2.0]])  # spam - ham = column 1
    figures = ranking_metrics(gold, scores, SPAM)
    truth = [g == "spam" for g in gold]
    assert figures == {
        "roc_auc": pytest.approx(roc_auc_score(truth, scores[:, 1])),
        "average_precision": pytest.approx(average_precision_score(truth, scores[:, 1])),
    }
    assert figures["roc_auc"] == pytest.approx(4 / 6)
    # "ham" is the rarer label here: its margin is the negated one, and the figures follow.
    rare_ham = ranking_metrics(["ham", "spam", "spam"], np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]]), SPAM)
    assert rare_ham["roc_auc"] == 1.0


def test_ranking_figures_are_left_out_without_two_classes_or_two_labels():
    assert ranking_metrics(["ham", "ham"], np.array([[0.0, 1.0], [1.0, 0.0]]), SPAM) == {}
    assert ranking_metrics(["a", "b", "c"], np.eye(3), ["a", "b", "c"]) == {}
    assert ranking_metrics(["ham", "spam"], np.array([[0.0, math.nan], [1.0, 0.0]]), SPAM) == {}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def _evaluate(tiny, labels: list[str], gold: list[str]):
    model, tokenizer = tiny
    rng = random.Random(0)
    fields = [{"text": sentence(g, rng), "label": g} for g in gold]
    records = [Record("classification", f, "t.jsonl", i + 1) for i, f in enumerate(fields)]
    renderer = PromptRenderer(PromptConfig(), "classification", tokenizer, labels)
    return ClassificationTask(labels).evaluate(model, tokenizer, renderer, records, batch_size=4)


def test_binary_likelihood_evaluation_reports_ranking_figures(tiny):
    labels = ["negative", "positive"]
    gold = ["negative", "positive", "positive", "negative", "positive", "negative", "negative"]
    output = _evaluate(tiny, labels, gold)
    assert positive_label(gold, labels) == "positive"
    margin = [p["logprobs"]["positive"] - p["logprobs"]["negative"] for p in output.predictions]
    truth = [g == "positive" for g in gold]
    assert output.metrics["roc_auc"] == pytest.approx(roc_auc_score(truth, margin))
    assert output.metrics["average_precision"] == pytest.approx(average_precision_score(truth, margin))
    assert all(isinstance(v, float | int | dict) for v in output.metrics.values())  # no string metric


def test_ranking_figures_are_absent_for_three_labels_and_one_class_gold(tiny):
    three = _evaluate(tiny, ["negative", "neutral", "positive"], ["negative", "neutral", "positive"])
    one_class = _evaluate(tiny, ["negative", "positive"], ["positive"] * 4)
    for output in (three, one_class):
        assert "roc_auc" not in output.metrics and "average_precision" not in output.metrics
        assert not any(isinstance(v, float) and math.isnan(v) for v in output.metrics.values())
    assert "macro_f1" in one_class.metrics
