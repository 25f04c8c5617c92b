"""Evaluation tasks scored on generated text: summarization (ROUGE), QA (EM/F1), generation (chrF/BLEU)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunewise.data.encode import encode_records
from tunewise.data.prompt import PromptRenderer
from tunewise.data.records import Record
from tunewise.evaluate.generate import generate_answers
from tunewise.evaluate.metrics import perplexity_metrics
from tunewise.evaluate.scoring import completion_nll
from tunewise.evaluate.stats import Difference, mean_difference
from tunewise.evaluate.tasks.base import EvalOutput
from tunewise.evaluate.text_metrics import chrf_bleu, qa_scores, rouge


def _qa(predictions: list[str], references: list[str]) -> dict[str, Any]:
    # A reference may hold several acceptable answers separated by " || ".
    return qa_scores(predictions, [r.split(" || ") for r in references])


SCORERS: dict[str, tuple[Callable[[list[str], list[str]], dict[str, Any]], str]] = {
    "summarization": (rouge, "rougeL"),
    "qa": (_qa, "f1"),
    "generation": (chrf_bleu, "sentence_chrf"),  # per-example, so its Δ and bootstrap CI agree
}


@dataclass
class GenerativeTask:
    name: str
    max_new_tokens: int
    stop: list[str]
    max_length: int
    with_perplexity: bool = True

    @property
    def primary_metric(self) -> str:
        return SCORERS[self.name][1]

    def evaluate(self, model, tokenizer, renderer, records, batch_size, progress=None, description=""):
        outputs = generate_answers(
            model,
            tokenizer,
            renderer,
            records,
            self.max_new_tokens,
            batch_size,
            self.stop,
            progress=progress,
            description=description or "generating",
        )
        output = self.from_outputs(records, renderer, outputs)
        if self.with_perplexity:  # fluency on the references: a secondary figure, never the verdict
            items, _ = encode_records(records, renderer, tokenizer, self.max_length)
            total, count = completion_nll(model, items, tokenizer.pad_token_id, batch_size)
            output.metrics["reference_perplexity"] = perplexity_metrics(total, count)["perplexity"]
        return output

    def from_outputs(self, records: list[Record], renderer: PromptRenderer, outputs: list[str]) -> EvalOutput:
        """Metrics and predictions from the generated answers, however they were generated."""
        scorer, primary = SCORERS[self.name]
        references = [renderer.target(r) for r in records]
        metrics = scorer(outputs, references)
        per_example = metrics.pop(f"per_example_{primary}")
        for key in [k for k in metrics if k.startswith("per_example_")]:
            metrics.pop(key)
        predictions = [
            {"source": r.where, "reference": ref, "pred": out, primary: score}
            for r, ref, out, score in zip(records, references, outputs, per_example, strict=True)
        ]
        return EvalOutput(metrics, predictions)

    def compare(self, a: list[dict[str, Any]], b: list[dict[str, Any]], seed: int = 0) -> dict[str, Difference]:
        metric = self.primary_metric
        return {metric: mean_difference([p[metric] for p in a], [p[metric] for p in b], seed=seed)}
