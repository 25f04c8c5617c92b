"""The measurements every export prints: each artifact's logits against the model it came from, and the
artifact re-scored on the run's evaluated split with the run's own task, against the adapter's predictions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rich.console import Console

from tunewise.core.progress import progress_bar
from tunewise.data.encode import encode_prompts
from tunewise.data.prompt import PromptRenderer
from tunewise.data.records import Record
from tunewise.evaluate.generate import decode_answer
from tunewise.evaluate.stats import Difference
from tunewise.evaluate.tasks import ClassificationTask, EvalOutput, EvalTask
from tunewise.evaluate.tasks.generative import GenerativeTask
from tunewise.export.fidelity import LogitFidelity
from tunewise.models.device import input_device

GREEDY_TOKENS = 24  # enough to tell two models' continuations apart, cheap on 16 prompts


@dataclass
class ArtifactCheck:
    """One exported artifact measured: its logits against `against`, and its task score against the adapter's."""

    artifact: str  # "merged", "gguf q8_0"
    runtime: str  # what ran it: transformers, llama.cpp, transformers' GGUF reader
    against: str  # the model its logits were compared with
    logits: LogitFidelity | None = None
    metrics: dict[str, Any] | None = None
    difference: Difference | None = None  # artifact − adapter on the primary metric, paired bootstrap
    prediction_agreement: float | None = None  # share of records with the same prediction as the adapter
    greedy_agreement: float | None = None  # share of prompts whose greedy continuation is token-identical
    tokenizer_agreement: float | None = None  # share of prompts the runtime's own tokenizer encodes identically
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "runtime": self.runtime,
            "logits_against": self.against,
            "logits": self.logits.to_json() if self.logits else None,
            "logit_verdict": self.logits.verdict if self.logits else None,
            "metrics": self.metrics,
            "difference_to_adapter": self.difference.to_json() if self.difference else None,
            "prediction_agreement": self.prediction_agreement,
            "greedy_agreement": self.greedy_agreement,
            "tokenizer_agreement": self.tokenizer_agreement,
            "seconds": round(self.seconds, 2),
            "notes": self.notes,
        }


def probe_sequences(tokenizer: Any, renderer: PromptRenderer, records: list[Record], n: int) -> list[list[int]]:
    """Prompt plus reference answer of the first `n` records, as token ids: the logits are compared at the
    prompt's positions and at every answer token the model was trained to produce."""
    chosen = records[:n]
    prompts = encode_prompts(tokenizer, renderer, chosen)
    answers = [tokenizer(renderer.answer(renderer.target(r)), add_special_tokens=False)["input_ids"] for r in chosen]
    return [p + a for p, a in zip(prompts, answers, strict=True)]


@torch.no_grad()
def hf_logits(model: Any, sequences: list[list[int]]) -> Iterator[np.ndarray]:
    """A Hugging Face model's logits at every position of each sequence, one sequence at a time (no padding, so
    nothing but the model itself can differ between two runs)."""
    model.eval()
    device = input_device(model)
    for ids in sequences:
        # Every position's full vocabulary is what is compared, so this one sequence's logits come to the host.
        yield model(input_ids=torch.tensor([ids], device=device)).logits[0].float().cpu().numpy()


@torch.no_grad()
def hf_greedy(
    model: Any, tokenizer: Any, prompts: list[list[int]], max_new_tokens: int, stops: list[int]
) -> list[list[int]]:
    """Greedy continuations, each up to and without its first stop token (as a server returns them)."""
    model.eval()
    device = input_device(model)
    outputs = []
    for ids in prompts:
        generated = model.generate(
            input_ids=torch.tensor([ids], device=device),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=stops,
        )
        new = generated[0, len(ids) :].tolist()
        outputs.append(new[: next((i for i, t in enumerate(new) if t in stops), len(new))])
    return outputs


def score_hf(
    task: EvalTask,
    model: Any,
    tokenizer: Any,
    renderer: PromptRenderer,
    records: list[Record],
    batch_size: int,
    console: Console,
    label: str,
) -> EvalOutput:
    """The run's own task on a Hugging Face model, exactly as `tunewise run` scored the fine-tune."""
    with progress_bar(console) as progress:
        return task.evaluate(model, tokenizer, renderer, records, batch_size, progress, f"scoring {label}")


@dataclass
class TaskInputs:
    """What a runtime must compute to score the run's task: label log-likelihoods when `choices` is set, else
    greedy answers of up to `max_new_tokens` (0: the task is not re-scored outside transformers)."""

    prompts: list[list[int]]
    choices: list[list[int]] | None
    max_new_tokens: int


def task_inputs(task: EvalTask, tokenizer: Any, renderer: PromptRenderer, records: list[Record]) -> TaskInputs:
    """Likelihood classification needs label scores; generate-mode classification and the generative tasks need
    greedy answers; perplexity and code execution are not re-scored through llama.cpp."""
    prompts = encode_prompts(tokenizer, renderer, records)
    if isinstance(task, ClassificationTask) and task.mode == "likelihood":
        choices = [tokenizer(renderer.answer(label), add_special_tokens=False)["input_ids"] for label in task.labels]
        return TaskInputs(prompts, choices, 0)
    if isinstance(task, ClassificationTask | GenerativeTask):
        return TaskInputs(prompts, None, task.max_new_tokens)
    return TaskInputs([], None, 0)


def task_output(
    task: EvalTask,
    tokenizer: Any,
    renderer: PromptRenderer,
    records: list[Record],
    scores: Any = None,
    generations: list[list[int]] | None = None,
) -> EvalOutput | None:
    """The run's task scored from what a runtime computed (see `task_inputs`), by the same functions as the
    Hugging Face model's evaluation; None when it computed nothing for this task."""
    if isinstance(task, ClassificationTask) and scores is not None:
        return task.from_scores(records, scores)
    if generations is None:
        return None
    if isinstance(task, ClassificationTask):
        return task.from_outputs(records, [_decode(ids, tokenizer, []) for ids in generations])
    if isinstance(task, GenerativeTask):
        return task.from_outputs(records, renderer, [_decode(ids, tokenizer, task.stop) for ids in generations])
    return None


def against_adapter(
    task: EvalTask, reference: EvalOutput, candidate: EvalOutput, seed: int
) -> tuple[Difference | None, float]:
    """(candidate − adapter on the primary metric with its paired-bootstrap CI, share of equal predictions)."""
    difference = task.compare(reference.predictions, candidate.predictions, seed=seed).get(task.primary_metric)
    same = sum(a["pred"] == b["pred"] for a, b in zip(reference.predictions, candidate.predictions, strict=True))
    return difference, same / len(reference.predictions)


def share_equal(a: list[list[int]], b: list[list[int]]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a) if a else 1.0


class Stopwatch:
    """Seconds since creation, for each check's timing."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def _decode(ids: list[int], tokenizer: Any, stop: list[str]) -> str:
    return decode_answer(tokenizer, ids, [s for s in stop if s])
