"""The decide stage: the plan's steps in order over the table's arrays, with every record accounted for.

Record steps already judged each row in the map stage; here a row they dropped leaves the pool at that step's
place in the plan. A set step decides over the rows still in the pool, from its features. The outcome is, per
row, the step that dropped it (category and reason) or its split and any fields added.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tunewise.curate.base import SPLIT_CODES, Context, Reason, Rows, Step, flatten_features, is_set_step, key_strip_at
from tunewise.curate.chain import CATEGORIES, CHANGE_KINDS, READ_REJECT, naming_step
from tunewise.curate.table import Table
from tunewise.data.records import RejectCategory


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


@dataclass
class Decided:
    reports: list[StepReport]  # one per planned step, in plan order
    drops: dict[int, tuple[int, RejectCategory, Reason]]  # set-step drops: row -> (slot, category, reason)
    splits: np.ndarray  # int8 SPLIT_CODES per row
    extra: dict[int, dict[str, Any]]


def decide_all(
    plan: list[Any],
    steps: dict[int, Step],
    table: Table,
    ctx: Context,
    passes: list[set[int]],
    run_pass: Callable[[set[int], np.ndarray], None],
) -> Decided:
    """`plan`: PlannedStep per slot; `steps`: the built step of each enabled slot; `passes`: the slots of each
    pass (the first has run): each later one runs, over the rows still in the pool, when its first slot comes."""
    status, categories = table.read("status"), table.read("categories")  # later passes update them in place
    sources, lines, labels = table.read("source"), table.read("lines"), table.read("label")
    alive = status != READ_REJECT
    splits = np.array(table.read("splits"), dtype=np.int8)
    decided = Decided([], {}, splits, {})
    starts = {min(slots): slots for slots in passes[1:] if slots}
    for slot, planned in enumerate(plan):
        if slot in starts:
            run_pass(starts[slot], np.flatnonzero(alive))
        fed = alive & (splits <= SPLIT_CODES.index("train")) if planned.category.training_only else alive.copy()
        n_in = int(fed.sum())
        report = StepReport(planned.name, planned.settings.enabled, n_in, n_in, position=planned.position)
        report.category = planned.category.name
        decided.reports.append(report)
        if not planned.settings.enabled:
            continue
        step = steps[slot]
        ctx.key_strip = key_strip_at(
            enumerate(p.settings for p in plan), slot
        )  # the dedup key as the map stage computed it for this slot
        if is_set_step(step):
            started = time.perf_counter()
            with naming_step(planned.name, planned.position):
                gone = _decide_set_step(step, slot, np.flatnonzero(fed), table, ctx, decided, (sources, lines, labels))
            report.seconds = table.seconds.get(slot, 0.0) + time.perf_counter() - started
            codes = [decided.drops[row][1].value for row in gone]
        else:
            gone = np.flatnonzero(fed & (status == slot))
            codes = [CATEGORIES[c].value for c in categories[gone]]
            report.seconds = table.seconds.get(slot, 0.0)
            _count_changes(report, table, slot, fed, gone)
        alive[gone] = False
        report.dropped = dict(Counter(codes))
        report.kept = n_in - len(gone)
    return decided


def _decide_set_step(
    step: Any, slot: int, rows: np.ndarray, table: Table, ctx: Context, decided: Decided, meta: tuple
) -> np.ndarray:
    """The rows the set step drops (global indices); its drops, splits and added fields noted in `decided`."""
    sources, lines, labels = meta
    view = Rows(
        where=lambda i: table.where(int(rows[i]), sources, lines),
        labels=np.asarray(labels[rows], dtype=np.int32),
        label_names=table.labels,
        splits=decided.splits[rows],
        features=table.features(slot, rows) if len(rows) else flatten_features(step.features([], ctx)),
    )
    outcome = step.decide(view, ctx)
    if outcome.splits is not None:
        decided.splits[rows] = outcome.splits
    for i, fields in outcome.extra.items():
        decided.extra.setdefault(int(rows[i]), {}).update(fields)
    gone = []
    for i, (category, reason) in sorted(outcome.drops.items()):
        decided.drops[int(rows[i])] = (slot, category, reason)
        gone.append(int(rows[i]))
    return np.array(gone, dtype=np.int64)


def _count_changes(report: StepReport, table: Table, slot: int, fed: np.ndarray, gone: np.ndarray) -> None:
    kept = fed.copy()
    kept[gone] = False
    masks = table.changes_of(slot)[kept]
    report.changed = int((masks != 0).sum())
    for bit, kind in enumerate(CHANGE_KINDS):
        if n := int(((masks >> bit) & 1).sum()):
            report.changes[kind] = n
