"""`tunewise curate`: read the configured data, run the steps, write curated splits and the report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from tunewise.config import Config
from tunewise.curate.base import Context
from tunewise.curate.pipeline import CurationResult, run_steps, write_splits
from tunewise.curate.report import build_report, write_report
from tunewise.data.records import Record, Reject
from tunewise.data.splits import load_file
from tunewise.errors import ConfigError, RenderError


@dataclass
class CurateOutcome:
    splits: dict[str, Path]
    report_json: Path
    report_html: Path
    result: CurationResult


def curate(config: Config, console: Console) -> CurateOutcome:
    if config.curate is None:
        raise ConfigError("the config has no curate: section; add one (see configs/ and examples/)")
    cfg = config.curate
    # Curation accounts for bad rows instead of stopping on the first one.
    data = config.data.model_copy(update={"on_error": "skip"})
    records, read_rejects, total = load_file(data.train, data)
    if total == 0:  # still write the (empty) outputs and report, but say why they are empty
        console.print(f"[yellow]warning: {escape(str(data.train))} holds no records (empty, or only blank lines)[/]")
    reference: list[Record] = []
    passthrough_rejects: list[Reject] = []
    for split in ("val", "test"):
        path = getattr(data, split)
        if path is not None:
            given, bad, _ = load_file(path, data)
            reference += [replace(r, split=split) for r in given]
            passthrough_rejects += bad
    ctx = Context(
        seed=cfg.seed,
        embed_dtype=cfg.embed_dtype,
        reference=reference,
        reference_splits=tuple(s for s in ("val", "test") if getattr(data, s) is not None),
    )
    console.print(
        f"curate: {len(records) + len(read_rejects)} rows from {data.train}"
        + (f"; {len(reference)} eval records given as files" if reference else "")
    )
    result = run_steps(records, read_rejects, cfg, ctx, console, config.data.labels, _lengths_fn(config))
    # Eval files pass through untouched: they are what the fine-tune is measured against.
    splits = write_splits(result, cfg.output, reference, passthrough_rejects)
    report = build_report(result, config, reference, len(passthrough_rejects))
    report_json, report_html = write_report(report, cfg.output)
    _print_summary(console, report, splits, report_html)
    return CurateOutcome(splits, report_json, report_html, result)


def _lengths_fn(config: Config) -> Callable[[list[Record]], list[int | str]]:
    """Token counts of the fully rendered examples; the tokenizer loads only if a step asks. A record that
    cannot be rendered (e.g. a chat the model's template refuses) gets the reason instead of a count."""

    def lengths_of(records: list[Record]) -> list[int | str]:
        from tunewise.data.encode import prompt_prefix, special_prefix
        from tunewise.data.prompt import PromptRenderer
        from tunewise.models import load_tokenizer

        tokenizer = load_tokenizer(config.model)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        # The label list is part of the default prompt: measure with the labels training will see.
        labels = config.data.labels or sorted({r.label for r in records if r.label is not None})
        renderer = PromptRenderer(config.prompt, config.data.kind, tokenizer, labels)
        segments: list[list | str] = []
        for record in records:
            try:
                segments.append(renderer.segments(record))
            except RenderError as exc:  # this record's content; config errors still stop the run
                segments.append(exc.reason)
        flat = [segment.text for parts in segments if not isinstance(parts, str) for segment in parts]
        counts = iter(map(len, tokenizer(flat, add_special_tokens=False)["input_ids"]) if flat else [])
        prefix = special_prefix(tokenizer)
        return [
            parts
            if isinstance(parts, str)
            else len(prompt_prefix(tokenizer, parts[0].text, prefix)) + sum(next(counts) for _ in parts)
            for parts in segments
        ]

    return lengths_of


def _print_summary(console: Console, report: dict, splits: dict[str, Path], html: Path) -> None:
    from rich.table import Table

    table = Table(title="Curation")
    for column in ("step", "in", "kept", "dropped", "reasons"):
        table.add_column(column, justify="right" if column in {"in", "kept", "dropped"} else "left")
    for step in report["steps"]:
        reasons = ", ".join(f"{k} {v}" for k, v in step["dropped"].items()) if step["enabled"] else "(off)"
        table.add_row(step["name"], str(step["n_in"]), str(step["kept"]), str(sum(step["dropped"].values())), reasons)
    console.print(table)
    counts = report["totals"]
    console.print(
        f"input {counts['input']} = kept {counts['kept']} + rejected {counts['rejected']}; "
        + ", ".join(f"{name} {n}" for name, n in report["split_sizes"].items())
    )
    for advice in report["advice"]:
        console.print(f"[yellow]advice: {advice}[/]")
    console.print(f"curated splits: {', '.join(str(p) for p in splits.values())}")
    console.print(f"report: {html}")
