"""The training stage of a run: encode the splits, then fine-tune; callable on its own with what it needs."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from tunewise.config import Config
from tunewise.data.encode import Encoded, encode_records
from tunewise.data.prompt import PromptRenderer
from tunewise.data.splits import DataSplits
from tunewise.errors import DataError
from tunewise.evaluate.tasks import task_for
from tunewise.track import RunDir

if TYPE_CHECKING:  # the Trainer stack is imported only when training starts
    from tunewise.train import TrainResult


@dataclass
class TrainingData:
    """Tokenized training and validation examples, ready for the Trainer."""

    train: list[Encoded]
    val: list[Encoded]


def encode_training_data(
    config: Config, splits: DataSplits, renderer: PromptRenderer, tokenizer: Any, run_dir: RunDir, console: Console
) -> TrainingData:
    """Render and tokenize train and val; an example over train.max_length is a reject (or the error, with
    data.on_error: raise). Fails when a split is left empty."""
    max_length = config.train.max_length
    train_items, bad_train = encode_records(splits.train, renderer, tokenizer, max_length)
    val_items, bad_val = encode_records(splits.val, renderer, tokenizer, max_length)
    bad = bad_train + bad_val
    if bad and config.data.on_error == "raise":
        first = bad[0]
        raise DataError(first.source, first.line, first.field, first.reason)
    if bad:
        run_dir.write_rejects(bad)
        console.print(
            f"[yellow]{len(bad)} examples rejected before training (max_length); "
            f"see {escape(str(run_dir.path / 'rejects.jsonl'))}[/]"
        )
    if not train_items or not val_items:
        split = "training" if not train_items else "validation"
        raise DataError(
            str(config.data.train),
            0,
            None,
            f"no {split} examples left after the max_length check",
            f"raise train.max_length (now {max_length}) or shorten the prompt",
        )
    truncated = sum(e.truncated for e in train_items)
    if truncated:
        console.print(f"[yellow]{truncated} training examples truncated to {max_length} tokens[/]")
    return TrainingData(train_items, val_items)


def train_model(
    config: Config,
    model: Any,
    tokenizer: Any,
    data: TrainingData,
    run_dir: RunDir,
    console: Console,
    *,
    task_metric: Callable[[Any], dict[str, float]] | None = None,
    callbacks: list[Any] | None = None,
    resume: bool = False,
) -> TrainResult:
    """LoRA fine-tune `model` on `data`, writing checkpoints, metrics.jsonl and adapter/ into `run_dir`.

    The seam a multi-process run uses: it needs only the config, the model, the encoded data and the run directory.
    `task_metric` scores the validation metric when train.metric is a task metric (see `validation_scorer`)."""
    from tunewise.train import train  # imports the Trainer stack only when training

    result = train(
        model,
        tokenizer,
        config,
        data.train,
        data.val,
        run_dir.path,
        console,
        task_metric=task_metric,
        extra_callbacks=callbacks,
        resume=resume,
    )
    summary = result.summary
    if summary.stopped_early:
        console.print(f"early stopping at step {summary.steps} of {summary.planned_steps}")
    best = summary.best_metric if summary.best_metric is not None else float("nan")
    console.print(
        f"best checkpoint: step {summary.best_step} ({summary.metric} = {best:.4f}), "
        f"restored and saved to {escape(str(result.adapter_dir))}"
    )
    return result


def validation_scorer(
    config: Config, tokenizer: Any, splits: DataSplits, renderer: PromptRenderer
) -> Callable[[Any], dict[str, float]] | None:
    """When train.metric is a task metric: score it on a fixed, seeded subsample of validation."""
    if config.train.metric == "eval_loss":
        return None
    task = task_for(
        config.data.kind, splits.labels, config.eval.model_copy(update={"perplexity": False}), config.train.max_length
    )
    budget = config.train.metric_examples
    sample = random.Random(config.train.seed).sample(splits.val, min(budget, len(splits.val)))

    def score(model: Any) -> dict[str, float]:
        output = task.evaluate(model, tokenizer, renderer, sample, config.eval.batch_size)
        return {k: float(v) for k, v in output.metrics.items() if isinstance(v, float)}

    return score
