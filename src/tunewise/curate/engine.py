"""Run the configured steps by category, account for every record, write the curated splits.

Each step type has a category, and categories run in a fixed order whatever the list order (the list order
holds within a category): the steps that clean the pool first, then relevance selection, then `split`, then
`decontaminate` (it needs the val/test records), and last the step that samples the training set to a size,
so that no later step can cut a class below the size the user asked for. When several `balance` steps are
listed, all but the last only shrink the pool where they stand (to spare later, costlier steps work).
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from tunewise.config.curate import CurateConfig, StepSettings
from tunewise.core.progress import progress_bar
from tunewise.curate.base import Context, Step, Verdict, fixed_threads
from tunewise.curate.dedup import Decontaminate, NearDedup, SemanticDedup
from tunewise.curate.select_steps import Balance, LabelErrors, Relevance, Split
from tunewise.curate.text_steps import Confidence, Conflicts, ExactDedup, Normalize, Quality, Validate
from tunewise.data.jsonl import write_jsonl
from tunewise.data.normalize import inference_normalization
from tunewise.data.records import Record, Reject, reject_category
from tunewise.errors import TunewiseError


@dataclass(frozen=True)
class Category:
    name: str
    rank: int  # categories run in increasing rank
    training_only: bool = False  # sees only the training records; val/test records pass it untouched


CLEAN = Category("clean", 0)  # removes or repairs records, looking at the whole pool
SELECT = Category("select", 1)  # keeps the records nearest the task, from the clean pool, before val/test are drawn
SPLIT = Category("split", 2)  # assigns val/test; removes nothing
DECONTAMINATE = Category("decontaminate", 3)  # removes training records that overlap the val/test records
SAMPLE = Category("sample", 4, training_only=True)  # sizes the training set, after all that removes from it
# A sampling step followed in the list by another one only shrinks the pool where it stands (e.g. before the
# embedding steps, to save time): the last one sets the size, so this one runs in list order with the cleaning.
PRESAMPLE = Category("pre-sample", 0)

STEP_TYPES: dict[str, tuple[Callable[..., Step], Category]] = {
    "validate": (Validate, CLEAN),
    "normalize": (Normalize, CLEAN),
    "conflicts": (Conflicts, CLEAN),
    "exact_dedup": (ExactDedup, CLEAN),
    "near_dedup": (NearDedup, CLEAN),
    "semantic_dedup": (SemanticDedup, CLEAN),
    "quality": (Quality, CLEAN),
    "confidence": (Confidence, CLEAN),
    "label_errors": (LabelErrors, CLEAN),
    "relevance": (Relevance, SELECT),
    "split": (Split, SPLIT),
    "decontaminate": (Decontaminate, DECONTAMINATE),
    "balance": (Balance, SAMPLE),
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
    changed: int = 0  # kept records the step modified
    changes: dict[str, int] = field(default_factory=dict)  # records per kind of change (one record, many kinds)
    position: int | None = None  # 1-based place in the config's list of steps (None: reading the file)
    category: str = ""


@dataclass(frozen=True)
class PlannedStep:
    position: int  # 1-based place in the config's list
    settings: StepSettings
    category: Category

    @property
    def name(self) -> str:
        return self.settings.step  # type: ignore[attr-defined]


@dataclass
class CurationResult:
    kept: list[Record]
    rejects: list[Reject]
    steps: list[StepReport]
    n_input: int
    context: Context
    initial: list[Record]
    executed_order: list[str] = field(default_factory=list)  # enabled steps, as they ran
    reordered: bool = False  # the steps ran in another order than the list's


def plan_steps(steps: list[StepSettings]) -> list[PlannedStep]:
    """The steps in the order they run: by category, list order within one. Refuses normalize steps that
    no single normalization of evaluation inputs could reproduce."""
    inference_normalization(steps)
    listed = [PlannedStep(i, s, STEP_TYPES[s.step][1]) for i, s in enumerate(steps, start=1)]  # type: ignore[attr-defined]
    sampling = [p for p in listed if p.category is SAMPLE and p.settings.enabled]
    listed = [replace(p, category=PRESAMPLE) if p in sampling[:-1] else p for p in listed]
    return sorted(listed, key=lambda planned: planned.category.rank)


def order_note(plan: list[PlannedStep]) -> str | None:
    """One line naming the executed order, when it is not the list order; None when it is."""
    enabled = [p for p in plan if p.settings.enabled]
    if [p.position for p in enabled] == sorted(p.position for p in enabled):
        return None
    return (
        f"curate: steps run as {' → '.join(p.name for p in enabled)} (those that remove records first, then "
        "split, decontaminate, and the steps that sample the training set last, whatever the list order)"
    )


def build_step(
    settings: StepSettings, labels: list[str] | None, lengths_of: Callable[[list[Record]], list[int | str]] | None
) -> Step:
    name = settings.step  # type: ignore[attr-defined]
    if name == "validate":
        return Validate(settings, labels, lengths_of)  # type: ignore[arg-type]
    return STEP_TYPES[name][0](settings)


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
    reports = [StepReport("read", True, n_input, len(records), dict(Counter(r.category.value for r in rejects)))]
    plan = plan_steps(cfg.steps)
    note = order_note(plan)
    if note:
        console.print(escape(note))
    initial, current = records, records
    with progress_bar(console, transient=False, label_width=16) as progress, fixed_threads():
        for planned in plan:
            step = build_step(planned.settings, labels, lengths_of)
            enabled, n = planned.settings.enabled, len(current)
            report = StepReport(step.name, enabled, n, n, position=planned.position, category=planned.category.name)
            if enabled:
                try:
                    current = _run_step(step, planned.category, current, ctx, progress, report, rejects)
                except TunewiseError as exc:
                    raise _naming_step(exc, planned) from None
                except Exception as exc:  # a bug: the traceback stays, with the step it happened in
                    exc.add_note(f"in curate step {planned.position} ({planned.name})")
                    raise
            reports.append(report)
    if len(current) + len(rejects) != n_input:
        raise TunewiseError(f"curation lost records ({n_input} in, {len(current)} kept, {len(rejects)} rejected)")
    order = [p.name for p in plan if p.settings.enabled]
    return CurationResult(current, rejects, reports, n_input, ctx, initial, order, note is not None)


def _run_step(
    step: Step,
    category: Category,
    current: list[Record],
    ctx: Context,
    progress: Progress,
    report: StepReport,
    rejects: list[Reject],
) -> list[Record]:
    """The records the step keeps (those it does not see included), with its counts in `report` and its
    drops appended to `rejects`."""
    fed_at = [i for i, r in enumerate(current) if not category.training_only or (r.split or "train") == "train"]
    task = progress.add_task(step.name, total=len(fed_at))
    started = time.perf_counter()
    verdicts: list[Verdict] = []
    for verdict in step([current[i] for i in fed_at], ctx):  # one verdict per record, in order
        progress.advance(task)
        verdicts.append(verdict)
    if len(verdicts) != len(fed_at):
        raise TunewiseError(f"curation step {step.name} lost records: a bug, please report it")
    verdict_at = dict(zip(fed_at, verdicts, strict=True))
    kept: list[Record] = []
    for i, record in enumerate(current):
        verdict = verdict_at.get(i)
        if verdict is None:  # a val/test record, which a training-only step passes untouched
            kept.append(record)
        elif verdict.drop is None:
            kept.append(verdict.record)
            report.changed += bool(verdict.changes)
            for kind in sorted(verdict.changes):
                report.changes[kind] = report.changes.get(kind, 0) + 1
        else:
            rejects.append(_reject(verdict, step.name, report))
    report.kept, report.seconds = len(kept), time.perf_counter() - started
    return kept


def _reject(verdict: Verdict, stage: str, report: StepReport) -> Reject:
    """The dropped record as a reject, counted in the step's report (with a few examples per reason)."""
    category = reject_category(verdict.category)  # a drop always has one (Verdict checks it)
    record = verdict.record
    report.dropped[category.value] = report.dropped.get(category.value, 0) + 1
    examples = report.examples.setdefault(category.value, [])
    if len(examples) < MAX_EXAMPLES_PER_REASON:
        examples.append({"where": record.where, "text": record.text[:300], "reason": verdict.drop})
    return Reject(
        record.source,
        record.line,
        None,
        verdict.drop or "",
        stage=stage,
        raw=record.to_row(),
        category=category,
    )


def _naming_step(exc: TunewiseError, planned: PlannedStep) -> TunewiseError:
    """The same error, its message led by the step and its place in the user's list (without the step's own
    shorter prefix, e.g. "curate split: ...")."""
    message = re.sub(rf"^curate {re.escape(planned.name)}( step)?: ", "", str(exc))
    exc.args = (f"curate step {planned.position} ({planned.name}): {message}",)
    return exc


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
