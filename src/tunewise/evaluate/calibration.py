"""Label-bias calibration of likelihood classification, fitted on the validation split only.

A fine-tuned model can rank examples well yet lean towards one label, so the arg-max of its label
log-likelihoods scores badly. Adding one bias per label (the first label's fixed at 0) and taking the
arg-max again moves the cut-off without touching the ranking. The biases maximise validation macro-F1;
the evaluation split is only ever scored with them, never looked at while fitting.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from tunewise.errors import ConfigError
from tunewise.evaluate.metrics import classification_metrics, ranking_metrics

MAX_CUTS = 2048  # candidate biases per label and round: all of them on a usual validation split, quantiles beyond
ROUNDS = 5  # coordinate-ascent sweeps over the labels; it stops earlier once a sweep changes nothing
TOLERANCE = 1e-12  # a gain smaller than this is float noise, not an improvement


def calibrate_predictions(
    val_predictions: list[dict[str, Any]], eval_predictions: list[dict[str, Any]], labels: list[str]
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """Fits label biases on `val_predictions` and applies them to `eval_predictions`.

    Returns the evaluation metrics after calibration (those of `classification_metrics` plus the ranking
    figures, which a bias cannot change), the evaluation predictions with `pred` calibrated and the arg-max
    kept as `pred_uncalibrated`, and what was fitted: the bias per label and validation macro-F1 before/after.
    """
    if not val_predictions:
        raise ConfigError("eval.calibrate: the validation split has no examples to fit the label offsets on")
    val_scores = logprob_matrix(val_predictions, labels)
    val_gold = [str(p["gold"]) for p in val_predictions]
    bias = fit_label_bias(val_scores, val_gold, labels)
    eval_scores = logprob_matrix(eval_predictions, labels)
    eval_gold = [str(p["gold"]) for p in eval_predictions]
    predicted = [labels[i] for i in apply_label_bias(eval_scores, bias)]
    metrics = classification_metrics(eval_gold, predicted, labels)
    metrics.update(ranking_metrics(eval_gold, eval_scores, labels))
    calibrated = [
        {**p, "pred": label, "pred_uncalibrated": p["pred"]}
        for p, label in zip(eval_predictions, predicted, strict=True)
    ]
    val_ids = _label_ids(val_gold, labels)
    info = {
        "bias": {label: float(b) for label, b in zip(labels, bias, strict=True)},
        "val_macro_f1_before": _macro_f1(val_ids, apply_label_bias(val_scores, np.zeros(len(labels))), len(labels)),
        "val_macro_f1_after": _macro_f1(val_ids, apply_label_bias(val_scores, bias), len(labels)),
        "fitted_on": len(val_predictions),
    }
    return metrics, calibrated, info


def logprob_matrix(predictions: list[dict[str, Any]], labels: list[str]) -> np.ndarray:
    """The `logprobs` of likelihood-mode predictions as [examples, labels], in `labels` order."""
    rows = []
    for p in predictions:
        logprobs = p.get("logprobs")
        if not isinstance(logprobs, dict) or any(label not in logprobs for label in labels):
            where = p.get("source", "a prediction")
            raise ConfigError(
                f"eval.calibrate: {where} has no label log-likelihoods to calibrate; "
                "calibration needs eval.label_mode: likelihood"
            )
        rows.append([float(logprobs[label]) for label in labels])
    return np.array(rows, dtype=float).reshape(len(rows), len(labels))


def apply_label_bias(scores: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Index of the predicted label per example: arg-max of scores + bias (ties go to the earlier label)."""
    return np.argmax(np.asarray(scores, dtype=float) + np.asarray(bias, dtype=float), axis=1)


def fit_label_bias(scores: np.ndarray, gold: list[str], labels: list[str]) -> np.ndarray:
    """Per-label additive biases (shape [labels], the first 0) that maximise macro-F1 of the arg-max.

    Coordinate ascent from no bias: for one label at a time, every cut-off between its sorted score gaps
    (the bias at which it starts to beat the best other label) is scored, and the best is kept only if it
    strictly raises macro-F1. With two labels this is the optimal threshold on the margin, found in one
    sweep. Validation macro-F1 therefore never drops below the uncalibrated arg-max. Deterministic.
    """
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or scores.shape != (len(gold), len(labels)) or len(labels) < 2:
        raise ValueError(f"scores must be [examples={len(gold)}, labels={len(labels)}], got {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("label log-likelihoods must be finite to fit a calibration (a NaN or inf was scored)")
    gold_ids = _label_ids(gold, labels)
    bias = np.zeros(len(labels))
    if not gold:
        return bias
    best = _macro_f1(gold_ids, apply_label_bias(scores, bias), len(labels))
    for _ in range(ROUNDS if len(labels) > 2 else 1):
        changed = False
        for j in range(1, len(labels)):
            value, estimate = _best_bias(scores, bias, gold_ids, j)
            if estimate <= best + TOLERANCE:
                continue
            trial = bias.copy()
            trial[j] = value
            # The search ignores exact score ties; sklearn on the real arg-max has the last word.
            score = _macro_f1(gold_ids, apply_label_bias(scores, trial), len(labels))
            if score > best + TOLERANCE:
                bias, best, changed = trial, score, True
        if not changed:
            break
    return bias


def _best_bias(scores: np.ndarray, bias: np.ndarray, gold_ids: np.ndarray, j: int) -> tuple[float, float]:
    """The bias of label `j` (others fixed) with the highest macro-F1, and that macro-F1.

    Label j wins an example once its bias exceeds `need` = best other adjusted score - its own score.
    Sorting by `need`, the first k examples go to j and the rest to their best other label, so the
    confusion counts for every k follow from prefix counts: no arg-max per candidate.
    """
    n, n_labels = scores.shape
    others = scores + bias
    others[:, j] = -np.inf
    rival = others.argmax(axis=1)
    need = others[np.arange(n), rival] - scores[:, j]
    order = np.argsort(need, kind="stable")
    need, rival, gold_ids = need[order], rival[order], gold_ids[order]
    cuts = np.concatenate([[0], np.flatnonzero(np.diff(need) > 0) + 1, [n]])  # k where a cut-off exists
    if len(cuts) > MAX_CUTS:
        cuts = np.unique(cuts[np.linspace(0, len(cuts) - 1, MAX_CUTS).round().astype(int)])
    # Example i (in sorted order) has moved to j for every cut after the first one above i.
    segment = np.searchsorted(cuts, np.arange(n), side="right")
    m = len(cuts)

    def prefix(weights: np.ndarray | None = None) -> np.ndarray:
        counts = np.bincount(segment * n_labels + rival, weights=weights, minlength=m * n_labels)
        return np.cumsum(counts.reshape(m, n_labels), axis=0)

    hit = (rival == gold_ids).astype(float)
    predicted = np.bincount(rival, minlength=n_labels) - prefix()
    predicted[:, j] += cuts
    correct = np.bincount(rival, weights=hit, minlength=n_labels) - prefix(hit)
    correct[:, j] += np.cumsum(np.bincount(segment, weights=(gold_ids == j).astype(float), minlength=m))
    support = np.bincount(gold_ids[gold_ids >= 0], minlength=n_labels)
    denominator = predicted + support
    f1 = np.divide(2 * correct, denominator, out=np.zeros(denominator.shape), where=denominator > 0)
    macro = f1.mean(axis=1)
    values = _cut_values(need, cuts)
    # Among equally good cut-offs, the one nearest the current bias moves predictions least.
    pick = min(np.flatnonzero(macro >= macro.max() - TOLERANCE), key=lambda t: abs(values[t] - bias[j]))
    return float(values[pick]), float(macro[pick])


def _cut_values(need: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """A bias for each cut: midway between the last example it gives to the label and the first it does not."""
    n = len(need)
    below = np.where(cuts > 0, need[np.maximum(cuts - 1, 0)], need[0] - 2.0)
    above = np.where(cuts < n, need[np.minimum(cuts, n - 1)], need[-1] + 2.0)
    return (below + above) / 2


def _label_ids(gold: list[str], labels: list[str]) -> np.ndarray:
    """Gold labels as indices into `labels`; -1 for one outside the set (always wrong, no F1 of its own)."""
    index = {label: i for i, label in enumerate(labels)}
    return np.array([index.get(g, -1) for g in gold], dtype=int)


def _macro_f1(gold_ids: np.ndarray, predicted: np.ndarray, n_labels: int) -> float:
    """sklearn's macro-F1 over the label set, on indices: strings cost it ten times more on large splits."""
    return float(f1_score(gold_ids, predicted, labels=np.arange(n_labels), average="macro", zero_division=0))
