"""Run the configured steps in order, account for every record, write the curated splits."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tunewise.curate.base import Context, Step, fixed_threads
from tunewise.curate.dedup import Decontaminate, NearDedup, SemanticDedup
from tunewise.curate.select_steps import Balance, LabelErrors, Relevance, Split
from tunewise.curate.settings import CurateConfig, StepSettings
from tunewise.curate.text_steps import Confidence, Conflicts, ExactDedup, Normalize, Quality, Validate
from tunewise.data.jsonl import write_jsonl
from tunewise.data.records import Record, Reject
from tunewise.errors import TunewiseError

STEP_TYPES: dict[str, Callable[..., Step]] = {
    "validate": Validate,
    "normalize": Normalize,
    "conflicts": Conflicts,
    "exact_dedup": ExactDedup,
    "near_dedup": NearDedup,
    "semantic_dedup": SemanticDedup,
    "quality": Quality,
    "confidence": Confidence,
    "label_errors": LabelErrors,
    "relevance": Relevance,
    "balance": Balance,
    "split": Split,
    "decontaminate": Decontaminate,
}
MAX_EXAMPLES_PER_REASON = 3


@dataclass
class StepReport:
    name: str
    enabled: bool
    n_in: int
    kept: int
    dropped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class CurationResult:
    kept: list[Record]
    rejects: list[Reject]
    steps: list[StepReport]
    n_input: int
    context: Context
    initial: list[Record]


def build_step(
    settings: StepSettings, labels: list[str] | None, lengths_of: Callable[[list[Record]], list[int | str]] | None
) -> Step:
    name = settings.step  # type: ignore[attr-defined]
    if name == "validate":
        return Validate(settings, labels, lengths_of)  # type: ignore[arg-type]
    return STEP_TYPES[name](settings)


def run_steps(
    records: list[Record],
    read_rejects: list[Reject],
    cfg: CurateConfig,
    ctx: Context,
    console: Console,
    labels: list[str] | None = None,
    lengths_of: Callable[[list[Record]], list[int | str]] | None = None,
) -> CurationResult:
    n_input = len(records) + len(read_rejects)
    rejects = [replace_stage(r, "validate") for r in read_rejects]
    reports = [StepReport("read", True, n_input, len(records), dict(Counter(r.to_json()["category"] for r in rejects)))]
    initial, current = records, records
    columns = (TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress, fixed_threads():
        for settings in cfg.steps:
            step = build_step(settings, labels, lengths_of)
            if not settings.enabled:
                reports.append(StepReport(step.name, False, len(current), len(current)))
                continue
            task = progress.add_task(step.name, total=len(current))
            started = time.perf_counter()
            report = StepReport(step.name, True, len(current), 0)
            kept: list[Record] = []
            for verdict in step(current, ctx):
                progress.advance(task)
                if verdict.drop is None:
                    kept.append(verdict.record)
                    continue
                category = verdict.category or "other"
                report.dropped[category] = report.dropped.get(category, 0) + 1
                record = verdict.record
                rejects.append(
                    Reject(
                        record.source,
                        record.line,
                        None,
                        verdict.drop,
                        stage=step.name,
                        raw=record.to_row(),
                        category=category,
                    )
                )
                examples = report.examples.setdefault(category, [])
                if len(examples) < MAX_EXAMPLES_PER_REASON:
                    examples.append({"where": record.where, "text": record.text[:300], "reason": verdict.drop})
            if len(kept) + sum(report.dropped.values()) != len(current):
                raise TunewiseError(f"curation step {step.name} lost records: a bug, please report it")
            report.kept, report.seconds = len(kept), time.perf_counter() - started
            reports.append(report)
            current = kept
    if len(current) + len(rejects) != n_input:
        raise TunewiseError(f"curation lost records ({n_input} in, {len(current)} kept, {len(rejects)} rejected)")
    return CurationResult(current, rejects, reports, n_input, ctx, initial)


def replace_stage(reject: Reject, stage: str) -> Reject:
    return replace(reject, stage=stage)


def write_splits(
    result: CurationResult, output: Path, given: list[Record] = (), given_rejects: list[Reject] = ()
) -> dict[str, Path]:
    output.mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list[Record]] = defaultdict(list)
    for record in [*result.kept, *given]:
        by_split[record.split or "train"].append(record)
    paths = {}
    for split in ("train", "val", "test"):
        if split not in by_split and split != "train":
            continue
        path = output / f"{split}.jsonl"
        write_jsonl(path, (record.to_row() for record in by_split.get(split, [])))
        paths[split] = path
    write_jsonl(output / "rejects.jsonl", (reject.to_json() for reject in [*result.rejects, *given_rejects]))
    return paths
