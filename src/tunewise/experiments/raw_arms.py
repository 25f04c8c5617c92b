"""The raw arms of `tunewise ablate`: seeded draws from the raw corpus, decontaminated against the val/test
records by the rule of the curation's `decontaminate` step and topped up to the size they should have.

Every raw arm draws from one seeded order of the usable raw records (readable, with a known label), so the
arms share records where they can: the plain raw arm takes the first clean records of that order, the
balanced arm the first clean records of each class. A drawn record that copies a val/test record is removed
and counted (the raw corpus's leakage) and the next record in the order takes its place.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape

from tunewise.config import Config
from tunewise.config.curate import DecontaminateStep, NormalizeStep
from tunewise.curate.base import Context, Verdict
from tunewise.curate.dedup import Decontaminate
from tunewise.data.files import display_path
from tunewise.data.records import Record
from tunewise.data.splits import DataSplits, load_file
from tunewise.errors import ConfigError

LEAK_KINDS = ("exact", "ngram", "near")


@dataclass(frozen=True)
class DecontaminationRule:
    """The curation's `decontaminate` step with the dedup key curation used (its `normalize` step's
    `strip_for_key`); a text equal to an eval text under that key counts as an exact copy."""

    settings: DecontaminateStep
    strip_for_key: tuple[str, ...] = ()
    origin: str = "decontaminate step defaults"

    def to_json(self) -> dict[str, Any]:
        s = self.settings
        strip = list(self.strip_for_key)
        return {"ngram": s.ngram, "near_threshold": s.near_threshold, "strip_for_key": strip, "from": self.origin}

    def found(self, records: list[Record], eval_records: list[Record]) -> dict[str, int]:
        """How many of `records` the rule would remove, by kind (for a set that is kept as it is)."""
        kinds = Counter(kind for kind in self.leaks(records, eval_records) if kind)
        return {"checked": len(records), "found": sum(kinds.values()), **{k: kinds[k] for k in LEAK_KINDS}}

    def leaks(self, records: list[Record], eval_records: list[Record]) -> list[str | None]:
        """Per record, None when it copies no eval record, else how it copies one: "exact", "ngram", "near"."""
        ctx = Context(seed=0, key_strip=self.strip_for_key, reference=list(eval_records))
        eval_keys = {ctx.key(r) for r in eval_records}
        found: list[str | None] = ["exact" if ctx.key(r) in eval_keys else None for r in records]
        rest = [r for r, kind in zip(records, found, strict=True) if kind is None]
        verdicts = iter(Decontaminate(self.settings)(rest, ctx))  # one verdict per record of `rest`, in order
        return [kind or _leak_kind(next(verdicts)) for kind in found]


def _leak_kind(verdict: Verdict) -> str | None:
    return verdict.category.split(":")[-1] if verdict.category else None  # "decontam:near" -> "near"


def decontamination_rule(config: Config) -> DecontaminationRule:
    """The rule the curated arm was decontaminated with: the curate section's first enabled `decontaminate`
    step (else its first one), else the step's defaults."""
    steps = list(config.curate.steps) if config.curate is not None else []
    found = [(i, s) for i, s in enumerate(steps) if isinstance(s, DecontaminateStep)]
    if not found:
        settings, origin = DecontaminateStep(step="decontaminate"), "decontaminate step defaults"
    else:
        i, settings = next(((i, s) for i, s in found if s.enabled), found[0])
        origin = f"curate.steps[{i + 1}] (decontaminate)"
    # Normalize sets the dedup key; it is a cleaning step, so it runs before decontamination wherever listed.
    normalize = [s for s in steps if isinstance(s, NormalizeStep) and s.enabled]
    strip = tuple(normalize[-1].strip_for_key) if normalize else ()
    return DecontaminationRule(settings, strip, origin)


@dataclass
class Draw:
    """Clean records drawn for one arm, and what the rule removed on the way."""

    records: list[Record]
    target: int
    drawn: int
    removed: Counter[str] = field(default_factory=Counter)
    shortfall: dict[str, int] = field(default_factory=dict)  # per class, when one had too few clean records

    @property
    def missing(self) -> int:
        return self.target - len(self.records)

    def leakage(self) -> dict[str, int]:
        return {"drawn": self.drawn, "removed": sum(self.removed.values()), **{k: self.removed[k] for k in LEAK_KINDS}}


@dataclass
class RawPool:
    """The usable raw records in one seeded order, with each one's decontamination verdict once it is drawn."""

    records: list[Record]
    counts: dict[str, int]
    rule: DecontaminationRule
    eval_records: list[Record]
    _leaks: dict[int, str | None] = field(default_factory=dict)

    def draw(self, size: int, label: str | None = None) -> Draw:
        """The first `size` clean records (of class `label`, if given): draw `size`, remove the leaked ones,
        draw as many again from the records that follow, until `size` are clean or the pool runs out."""
        order = [i for i, r in enumerate(self.records) if label is None or r.label == label]
        clean: list[int] = []
        drawn, removed = 0, Counter[str]()
        while len(clean) < size and drawn < len(order):
            batch = order[drawn : drawn + size - len(clean)]
            drawn += len(batch)
            self._check(batch)
            for i in batch:
                kind = self._leaks[i]
                if kind is None:
                    clean.append(i)
                else:
                    removed[kind] += 1
        return Draw([self.records[i] for i in clean], size, drawn, removed)

    def draw_like(self, label_counts: dict[str, int]) -> Draw:
        """A stratified draw with these label counts; a class with too few clean records gives all it has."""
        parts = {label: self.draw(n, label) for label, n in label_counts.items()}
        position = {id(r): i for i, r in enumerate(self.records)}
        records = sorted((r for part in parts.values() for r in part.records), key=lambda r: position[id(r)])
        removed = sum((part.removed for part in parts.values()), Counter[str]())
        shortfall = {label: part.missing for label, part in parts.items() if part.missing}
        drawn = sum(part.drawn for part in parts.values())
        return Draw(records, sum(label_counts.values()), drawn, removed, shortfall)

    def _check(self, indices: list[int]) -> None:
        todo = [i for i in indices if i not in self._leaks]
        if todo:
            leaks = self.rule.leaks([self.records[i] for i in todo], self.eval_records)
            self._leaks.update(zip(todo, leaks, strict=True))


def load_raw_pool(
    path: Path, config: Config, labels: list[str], eval_records: list[Record], rule: DecontaminationRule, seed: int
) -> RawPool:
    """The raw file read as curation reads it (raw columns, bad rows skipped), records with a label outside
    `labels` left out, in an order shuffled with `seed`."""
    data = config.data.model_copy(update={"train": path, "on_error": "skip"})
    records, rejected, _ = load_file(path, data)
    allowed = set(labels)
    usable = [r for r in records if not allowed or r.label in allowed]
    random.Random(seed).shuffle(usable)
    counts = {
        "n_raw_rejected": len(rejected),
        "n_raw_unknown_label": len(records) - len(usable),
        "n_raw_pool": len(usable),
    }
    return RawPool(usable, counts, rule, eval_records)


@dataclass
class RawDraws:
    """Everything curated vs raw trains on, drawn before any arm trains (a raw file that gives nothing
    usable stops the ablation before the learning curve runs)."""

    pool: RawPool
    raw: Draw
    balanced: Draw | None  # None for a task without classes, or when no curated class has clean raw records
    balanced_note: str | None
    curated_leakage: dict[str, int]  # the same rule on the curated training set, which is kept as it is

    @property
    def kind(self) -> str:
        return self.raw.records[0].kind  # a draw with no records stops the ablation (draw_raw_arms)


def draw_raw_arms(path: Path, config: Config, splits: DataSplits, seed: int) -> RawDraws:
    """A raw sample the size of the curated training set and, for classification, one with its label counts;
    both decontaminated against every val/test record by the curated arm's rule."""
    rule = decontamination_rule(config)
    eval_records = [*splits.val, *splits.test]
    pool = load_raw_pool(path, config, splits.labels, eval_records, rule, seed)
    raw = pool.draw(len(splits.train))
    if not raw.records:
        counts = ", ".join(f"{k} {v}" for k, v in {**pool.counts, "n_raw_leaked": sum(raw.removed.values())}.items())
        raise ConfigError(
            f"{display_path(path)}: no usable raw records for curated vs raw ({counts}): each one was rejected, has "
            "a label the curated data lacks, or copies a val/test record; point ablate.raw at the raw training file"
        )
    kind = config.data.kind
    balanced, note = None, None
    if kind != "classification":
        note = f"raw · balanced skipped: class balance applies to classification data, not {kind}"
    else:
        balanced = pool.draw_like(label_counts(splits.train))
        if not balanced.records:
            balanced, note = None, "raw · balanced skipped: the raw file has no clean record of any curated class"
    return RawDraws(pool, raw, balanced, note, rule.found(splits.train, eval_records))


def label_counts(records: list[Record]) -> dict[str, int]:
    return dict(sorted(Counter(r.label or "" for r in records).items()))


def draw_json(draw: Draw, kind: str) -> dict[str, Any]:
    """What an arm's result records about its draw: the size it was drawn for, the leakage removed on the way,
    its class mix, and any class that had too few clean records."""
    result: dict[str, Any] = {"target": draw.target, "leakage": draw.leakage()}
    if kind == "classification":
        result["label_counts"] = label_counts(draw.records)
    if draw.shortfall:
        result["class_shortfall"] = draw.shortfall
    return result


def report_lines(comparison: dict[str, Any]) -> list[str]:
    """Console lines (rich markup, user text escaped) on the raw arms: the rule, the class mixes, how much
    leakage each draw met, any arm smaller than it should be, and leakage the curated set kept."""
    rule = comparison["decontamination"]
    lines = [
        f"decontamination of the raw arms (every val/test record): a shared {rule['ngram']}-word span or MinHash "
        f"Jaccard >= {rule['near_threshold']:g}, as {escape(rule['from'])}"
    ]
    arms = {"curated": comparison["curated"], "raw sample": comparison["raw"]}
    arms["raw · balanced"] = comparison["raw_balanced"]
    mixes = [
        f"{name} {_counts_text(arm['label_counts'])}" for name, arm in arms.items() if arm and "label_counts" in arm
    ]
    if mixes:
        lines.append(escape("label counts: " + "; ".join(mixes)))
    for name, arm in list(arms.items())[1:]:
        if not arm:
            continue
        leak = arm["leakage"]
        share = leak["removed"] / leak["drawn"] if leak["drawn"] else 0.0
        lines.append(
            f"{name} leakage: {leak['removed']} of {leak['drawn']} raw records drawn ({share:.1%}) copy a val/test "
            f"record ({_counts_text({k: leak[k] for k in LEAK_KINDS})}), removed and replaced by further draws"
        )
        if arm["n_train"] < arm["target"]:
            why = f"the raw file ran out: {comparison['n_raw_pool']} usable records, {leak['removed']} of them leaked"
            if shortfall := arm.get("class_shortfall"):
                why = "too few clean raw records of " + ", ".join(f"{k!r} (short by {n})" for k, n in shortfall.items())
            size = f"{name}: {arm['n_train']} training records, not {arm['target']}"
            lines.append(f"[yellow]{escape(f'{size}: {why}')}[/]")
    if comparison["raw_balanced_note"]:
        lines.append(escape(comparison["raw_balanced_note"]))
    if (kept := comparison["curated_leakage"])["found"]:
        lines.append(
            f"[yellow]curated training set: {kept['found']} of {kept['checked']} records copy a val/test record by "
            f"the same rule ({_counts_text({k: kept[k] for k in LEAK_KINDS})}); curation kept them, which favours "
            "the curated arm[/]"
        )
    return lines


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items())
