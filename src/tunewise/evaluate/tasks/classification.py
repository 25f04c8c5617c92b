"""Classification: label log-likelihood scoring (default) or free generation with label parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tunewise.data.encode import encode_prompts
from tunewise.data.records import Record
from tunewise.evaluate.calibration import logprob_matrix
from tunewise.evaluate.generate import generate_answers
from tunewise.evaluate.metrics import classification_metrics, ranking_metrics
from tunewise.evaluate.scoring import choice_logprobs
from tunewise.evaluate.stats import Difference, macro_f1_difference, mean_difference
from tunewise.evaluate.tasks.base import EvalOutput


@dataclass
class ClassificationTask:
    """By default picks the label whose answer the model finds most likely (no free-text parsing to go
    wrong); `mode="generate"` lets the model answer freely and parses the first label it names.

    With two labels, likelihood mode also reports `roc_auc` and `average_precision` of the margin
    logp(positive) - logp(other), where the positive label is `metrics.positive_label(gold, labels)`."""

    labels: list[str]
    mode: str = "likelihood"
    max_new_tokens: int = 16
    name: str = "classification"
    primary_metric: str = "macro_f1"

    def score(self, model, tokenizer, renderer, records, batch_size, progress=None, description=""):
        """Log-likelihood of each label's answer text after each record's prompt: [records, labels]."""
        encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        prompts = encode_prompts(tokenizer, renderer, records)
        choices = [encode(renderer.answer(label)) for label in self.labels]
        pad = tokenizer.pad_token_id
        return choice_logprobs(model, prompts, choices, pad, batch_size, progress, description or "scoring labels")

    def evaluate(self, model, tokenizer, renderer, records, batch_size, progress=None, description=""):
        if self.mode == "generate":
            outputs = generate_answers(
                model,
                tokenizer,
                renderer,
                records,
                self.max_new_tokens,
                batch_size,
                progress=progress,
                description=description or "generating labels",
            )
            return self.from_outputs(records, outputs)
        return self.from_scores(
            records, self.score(model, tokenizer, renderer, records, batch_size, progress, description)
        )

    def from_scores(self, records: list[Record], scores: Any) -> EvalOutput:
        """Metrics and predictions from label log-likelihoods [records, labels], however they were computed
        (a Hugging Face model here, an exported GGUF through llama.cpp elsewhere)."""
        gold = [str(r.fields["label"]) for r in records]
        rows = [[float(s) for s in row] for row in scores]
        predicted = [self.labels[max(range(len(row)), key=row.__getitem__)] for row in rows]
        predictions = [
            {
                "source": r.where,
                "gold": g,
                "pred": p,
                "logprobs": {label: round(s, 4) for label, s in zip(self.labels, row, strict=True)},
            }
            for r, g, p, row in zip(records, gold, predicted, rows, strict=True)
        ]
        metrics = classification_metrics(gold, predicted, self.labels)
        # From the stored (rounded) log-likelihoods, so a calibrated row recomputes exactly the same figures.
        metrics.update(ranking_metrics(gold, logprob_matrix(predictions, self.labels), self.labels))
        return EvalOutput(metrics, predictions)

    def from_outputs(self, records: list[Record], outputs: list[str]) -> EvalOutput:
        """Metrics and predictions from free-form answers: the first label each names."""
        gold = [str(r.fields["label"]) for r in records]
        predicted = [parse_label(text, self.labels) or UNPARSED for text in outputs]
        predictions = [
            {"source": r.where, "gold": g, "pred": p, "output": o}
            for r, g, p, o in zip(records, gold, predicted, outputs, strict=True)
        ]
        metrics = classification_metrics(gold, predicted, self.labels)
        metrics["unparsed"] = predicted.count(UNPARSED)
        return EvalOutput(metrics, predictions)

    def compare(self, a: list[dict[str, Any]], b: list[dict[str, Any]], seed: int = 0) -> dict[str, Difference]:
        """Paired bootstrap of b - a on the same examples: macro-F1 and accuracy."""
        gold = [p["gold"] for p in a]
        pred_a, pred_b = [p["pred"] for p in a], [p["pred"] for p in b]
        correct_a = [float(p == g) for p, g in zip(pred_a, gold, strict=True)]
        correct_b = [float(p == g) for p, g in zip(pred_b, gold, strict=True)]
        return {
            "macro_f1": macro_f1_difference(gold, pred_a, pred_b, self.labels, seed=seed),
            "accuracy": mean_difference(correct_a, correct_b, seed=seed),
        }


UNPARSED = "(unparsed)"  # a free-form answer that names no label: always wrong


def parse_label(text: str, labels: list[str]) -> str | None:
    """The label the answer names first (whole words, any case); longer labels win ties ("very good")."""
    lowered = text.casefold()
    found = []
    for label in labels:
        match = re.search(rf"(?<!\w){re.escape(label.casefold())}(?!\w)", lowered)
        if match:
            found.append((match.start(), -len(label), label))
    return min(found)[2] if found else None
