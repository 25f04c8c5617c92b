"""Metrics as small functions over gold and predicted values."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)


def classification_metrics(gold: list[str], pred: list[str], labels: list[str]) -> dict[str, Any]:
    precision, recall, f1, support = precision_recall_fscore_support(gold, pred, labels=labels, zero_division=0)
    return {
        "n": len(gold),
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0)),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": {
            "labels": labels,
            "rows_gold_cols_pred": confusion_matrix(gold, pred, labels=labels).tolist(),
        },
    }


def positive_label(gold: list[str], labels: list[str]) -> str:
    """The label ROC-AUC and average precision treat as positive for a two-label task: the rarer one in `gold`
    (the one a detector looks for: spam, fraud, a defect); on a tie, the second label of `labels`."""
    if len(labels) != 2:
        raise ValueError(f"a positive label needs exactly 2 labels, got {len(labels)}")
    first, second = (sum(g == label for g in gold) for label in labels)
    return labels[0] if first < second else labels[1]


def ranking_metrics(gold: list[str], scores: np.ndarray, labels: list[str]) -> dict[str, float]:
    """ROC-AUC and average precision of the margin logp(positive) - logp(other), for two labels only.

    `scores` is [examples, labels] in `labels` order. Both figures need the two classes in `gold`:
    with more labels, a single class or a non-finite score they are left out rather than reported as NaN."""
    if len(labels) != 2:
        return {}
    positive = positive_label(gold, labels)
    is_positive = np.array([g == positive for g in gold])
    if is_positive.all() or not is_positive.any():
        return {}
    p = labels.index(positive)
    margin = scores[:, p] - scores[:, 1 - p]
    if not np.isfinite(margin).all():
        return {}  # a NaN or inf score has no rank
    return {
        "roc_auc": float(roc_auc_score(is_positive, margin)),
        "average_precision": float(average_precision_score(is_positive, margin)),
    }


def perplexity_metrics(total_nll: float, n_tokens: int) -> dict[str, Any]:
    loss = total_nll / max(n_tokens, 1)
    return {"n_tokens": n_tokens, "loss": loss, "perplexity": math.exp(min(loss, 50.0))}
