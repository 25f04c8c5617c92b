"""The evaluation task a config runs and the direction of its metrics: the one place `eval.task: auto` and the
lower-is-better rule are decided, for validation, evaluation, early stopping and sweeps alike."""

from __future__ import annotations

# Validation metrics for early stopping, by evaluation task ("loss" is the Trainer's own, for any task).
TASK_METRICS = {
    "classification": ("accuracy", "macro_f1"),
    "summarization": ("rouge1", "rouge2", "rougeL"),
    "qa": ("exact_match", "f1"),
    "generation": ("sentence_chrf", "chrf", "bleu"),
    "code": ("pass@1",),
    "perplexity": ("perplexity",),
}
TRAINING_METRICS = ("eval_loss", *sorted({f"eval_{m}" for names in TASK_METRICS.values() for m in names}))
LOWER_IS_BETTER = ("loss", "perplexity", "error")  # metric names containing these: smaller wins


def resolve_task(task: str, kind: str) -> str:
    """The evaluation task `eval.task` stands for with records of `data.kind` `kind`: `auto` is label likelihood
    (classification) for classification records and scoring generated text (generation) for every other kind."""
    if task != "auto":
        return task
    return "classification" if kind == "classification" else "generation"


def greater_is_better(metric: str, override: bool | None = None) -> bool:
    """Whether a larger `metric` is the better one: `override` (train.greater_is_better) when set, else from the
    name, where a metric naming a loss, perplexity or error is better smaller."""
    if override is not None:
        return override
    return not any(word in metric for word in LOWER_IS_BETTER)
