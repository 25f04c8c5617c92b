"""Metrics as small functions over gold and predicted values."""

from __future__ import annotations

import math
from typing import Any

from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


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


def perplexity_metrics(total_nll: float, n_tokens: int) -> dict[str, Any]:
    loss = total_nll / max(n_tokens, 1)
    return {"n_tokens": n_tokens, "loss": loss, "perplexity": math.exp(min(loss, 50.0))}
