"""Run the configured steps by category, account for every record, write the curated splits.

Each step type has a category, and categories run in a fixed order whatever the list order (the list order
holds within a category): the steps that clean the pool first, then relevance selection, then `split`, then
`decontaminate` (it needs the val/test records), and last the step that samples the training set to a size,
so that no later step can cut a class below the size the user asked for. When several `balance` steps are
listed, all but the last only shrink the pool where they stand (to spare later, costlier steps work).
"""

from __future__ import annotations

import tempfile
from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from tunewise.config.curate import CurateConfig, StepSettings
from tunewise.core.progress import progress_bar
from tunewise.curate.base import SPLIT_CODES, Context, Step, fixed_threads
from tunewise.curate.chain import CATEGORIES, READ_REJECT, Chain, chunked, read_spool_line
from tunewise.curate.decide import Decided, StepReport, decide_all
from tunewise.curate.dedup import Decontaminate, NearDedup, SemanticDedup
from tunewise.curate.select_steps import Balance, LabelErrors, Relevance, Split
from tunewise.curate.sinks import ListSink, Sink
from tunewise.curate.table import Table
from tunewise.curate.text_steps import Confidence, Conflicts, ExactDedup, Normalize, Quality, Validate
from tunewise.data.normalize import inference_normalization
from tunewise.data.records import Record, Reject, RejectCategory
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
    """What curation did: per-step reports, and counts of what it kept and rejected. `kept` and `rejects` hold
    the records themselves only when curating an in-memory list (run_steps); files are streamed instead."""

    steps: list[StepReport]
    n_input: int
    context: Context
    kept_count: int = 0
    reject_counts: Counter[str] = field(default_factory=Counter)  # by category
    split_sizes: Counter[str] = field(default_factory=Counter)
    labels_before: Counter[str] = field(default_factory=Counter)
    labels_train: Counter[str] = field(default_factory=Counter)
    lengths_before: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    lengths_train: array[int] = field(default_factory=lambda: array("i"))
    executed_order: list[str] = field(default_factory=list)  # enabled steps, as they ran
    reordered: bool = False  # the steps ran in another order than the list's
    kept: list[Record] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return sum(self.reject_counts.values())


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


def build_chain(
    plan: list[PlannedStep],
    ctx: Context,
    labels: list[str] | None = None,
    lengths_of: Callable[[list[Record]], list[int | str]] | None = None,
) -> Chain:
    steps = [(slot, build_step(p.settings, labels, lengths_of)) for slot, p in enumerate(plan) if p.settings.enabled]
    return Chain(steps, ctx, {slot: p.position for slot, p in enumerate(plan)})


# Runs one pass: chunks through the chain's steps of `slots`, into the table. `rows` None: the input file;
# else those rows of the table's spool (a later pass).
MapStage = Callable[[Chain, Table, Progress, set[int], "np.ndarray | None"], None]
# Set steps whose features cost real time: a pass of their own when an earlier set step may have dropped
# records, so they run on what is left (as each step did when the steps ran one after another).
COSTLY_FEATURES = {"near_dedup", "semantic_dedup", "label_errors", "relevance", "decontaminate"}


def segments(plan: list[PlannedStep]) -> list[set[int]]:
    """The plan's slots cut into passes: a new pass before each costly set step that follows a set step
    which may drop records (split drops none)."""
    passes: list[set[int]] = [set()]
    dropping = False
    for slot, planned in enumerate(plan):
        is_set = hasattr(STEP_TYPES[planned.name][0], "decide")
        if planned.settings.enabled and planned.name in COSTLY_FEATURES and dropping:
            passes.append(set())
            dropping = False
        passes[-1].add(slot)
        dropping = dropping or (planned.settings.enabled and is_set and planned.name != "split")
    return passes


def curate_stream(
    map_stage: MapStage, cfg: CurateConfig, chain: Chain, workdir: Path, sink: Sink, console: Console
) -> CurationResult:
    """The map stage (local or Ray) fills the table pass by pass, the plan's steps decide in order, and a
    last pass over the spools hands every row to the sink as kept or rejected."""
    plan = plan_steps(cfg.steps)
    note = order_note(plan)
    if note:
        console.print(escape(note))
    table = Table(workdir)
    passes = segments(plan)
    with progress_bar(console, transient=False, label_width=16) as progress, fixed_threads():

        def run_pass(slots: set[int], rows: np.ndarray | None) -> None:
            table.start_pass()
            map_stage(chain, table, progress, slots, rows)

        run_pass(passes[0], None)
        table.finish_first_pass()
        decided = decide_all(plan, dict(chain.steps), table, chain.ctx, passes, run_pass)
    result = CurationResult([_read_report(table), *decided.reports], table.rows, chain.ctx)
    result.executed_order = [p.name for p in plan if p.settings.enabled]
    result.reordered = note is not None
    lengths = table.read("length_in")
    result.lengths_before = lengths[lengths >= 0]
    labels = table.read("label")
    codes, counts = np.unique(labels[labels >= 0], return_counts=True)
    result.labels_before = Counter({table.labels[c]: int(n) for c, n in zip(codes, counts, strict=True)})
    write_rows(table, decided, plan, sink, result)
    if result.kept_count + result.rejected != result.n_input:
        raise TunewiseError(
            f"curation lost records ({result.n_input} in, {result.kept_count} kept, {result.rejected} rejected)"
        )
    return result


def _read_report(table: Table) -> StepReport:
    status, categories = np.asarray(table.read("status")), np.asarray(table.read("categories"))
    bad = status == READ_REJECT
    codes = Counter(CATEGORIES[c].value for c in categories[bad])
    return StepReport("read", True, table.rows, table.rows - int(bad.sum()), dict(codes))


def write_rows(table: Table, decided: Decided, plan: list[PlannedStep], sink: Sink, result: CurationResult) -> None:
    """The last pass: each spooled row to the sink, kept (with its split) or as a reject with its reason."""
    status, lengths = np.asarray(table.read("status")), np.asarray(table.read("length_out"))
    categories = np.asarray(table.read("categories"))
    for row, line in table.latest_rows(np.arange(table.rows)):
        item, reason = read_spool_line(line)
        if isinstance(item, Reject):
            _rejected(sink, result, replace(item, stage="validate"), None)
            continue
        # A row leaves at the first step that drops it: a record step of a pass may also have judged a row
        # that an earlier set step of the same pass drops.
        slot = int(status[row]) if status[row] >= 0 else None
        category: RejectCategory | None = CATEGORIES[int(categories[row])] if slot is not None else None
        if row in decided.drops and (slot is None or decided.drops[row][0] < slot):
            slot, category, why = decided.drops[row]
            reason = why if isinstance(why, str) else why(item)
        if slot is not None and category is not None:
            reject = Reject(
                item.source, item.line, None, reason or "", plan[slot].name, item.to_row(), category=category
            )
            _example(result.steps[slot + 1], item, category, reason or "")
            _rejected(sink, result, reject, slot)
            continue
        record = replace(item, split=SPLIT_CODES[decided.splits[row]] or None)
        if row in decided.extra:
            record = replace(record, extra={**record.extra, **decided.extra[row]})
        split = record.split or "train"
        result.kept_count += 1
        result.split_sizes[split] += 1
        if split == "train":
            if record.label is not None:
                result.labels_train[record.label] += 1
            result.lengths_train.append(int(lengths[row]))
        sink.keep(record)
    sink.finish([None, *range(len(plan))])


def _rejected(sink: Sink, result: CurationResult, reject: Reject, slot: int | None) -> None:
    result.reject_counts[reject.category.value] += 1
    sink.reject(reject, slot)


def _example(report: StepReport, record: Record, category: RejectCategory, reason: str) -> None:
    examples = report.examples.setdefault(category.value, [])
    if len(examples) < MAX_EXAMPLES_PER_REASON:
        examples.append({"where": record.where, "text": record.text[:300], "reason": reason})


def run_steps(
    records: list[Record],
    read_rejects: list[Reject],
    cfg: CurateConfig,
    ctx: Context,
    console: Console,
    labels: list[str] | None = None,
    lengths_of: Callable[[list[Record]], list[int | str]] | None = None,
) -> CurationResult:
    """Curation of an in-memory list (read rejects after the records), with the kept records and the rejects
    in the result: the same stages a file goes through, in this process."""
    items: list[Record | Reject] = [*records, *read_rejects]
    chain = build_chain(plan_steps(cfg.steps), ctx, labels, lengths_of)
    sink = ListSink()
    with tempfile.TemporaryDirectory(prefix="tunewise-curate-") as workdir:
        result = curate_stream(local_map(items), cfg, chain, Path(workdir), sink, console)
    result.kept, result.rejects = sink.kept, sink.ordered
    return result


def local_map(items: Iterable[Record | Reject]) -> MapStage:
    """The map stage in this process: chunk after chunk, so memory holds one chunk's records at a time."""

    def run(chain: Chain, table: Table, progress: Progress, slots: set[int], rows: np.ndarray | None) -> None:
        task = progress.add_task(f"pass {table.passes}", total=None if rows is None else len(rows))
        if rows is None:
            for chunk in chunked(items):
                table.add(chain.run(chunk, table.rows, slots))
                progress.advance(task, len(chunk))
            return
        for chunk_rows, records, embeddings in table.chunks(rows):
            table.add(chain.run(records, chunk_rows, slots, embeddings))
            progress.advance(task, len(chunk_rows))

    return run
