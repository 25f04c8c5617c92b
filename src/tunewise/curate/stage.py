"""`tunewise curate`: read the configured data, run the steps, write curated splits and the report."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from tunewise.config import Config, DataConfig
from tunewise.curate.base import Context
from tunewise.curate.curation_report import build_report, write_report
from tunewise.curate.engine import CurationResult, MapStage, build_chain, curate_stream, local_map, plan_steps
from tunewise.curate.sinks import FileSink
from tunewise.data.files import display_path
from tunewise.data.readers import known_labels
from tunewise.data.records import Record, Reject, RejectCategory, brief
from tunewise.data.splits import SKIP_HINT, check_data_paths, iter_file, load_file
from tunewise.errors import ConfigError, DataError, RenderError


@dataclass
class CurateOutcome:
    splits: dict[str, Path]
    report_json: Path
    report_html: Path
    result: CurationResult


def curate(config: Config, console: Console, for_run: bool = False) -> CurateOutcome:
    """`for_run` (curation as the first stage of `tunewise run`): after the outputs are written, a
    DataError if the curated data cannot be trained on (no training records, or a given val/test file
    with none left), naming the rejects file that says why."""
    if config.curate is None:
        raise ConfigError("the config has no curate: section; add one (see configs/ and examples/)")
    cfg = config.curate
    engine = cfg.engine
    plan = plan_steps(cfg.steps)  # a config the steps cannot run fails before anything is read
    map_stage_of = _map_stage(engine, cfg.ray_address)  # a missing Ray fails before reading too
    # Curation accounts for bad rows instead of stopping on the first one.
    data = config.data.model_copy(update={"on_error": "skip"})
    check_data_paths(data)  # every path, before anything is read or written
    labels = config.data.labels or (_training_labels(data) if _needs_labels(config, data) else [])
    reference: list[Record] = []
    passthrough_rejects: list[Reject] = []
    given_counts: dict[str, tuple[int, int]] = {}  # split -> (records read, records kept)
    for split in ("val", "test"):
        path = getattr(data, split)
        if path is not None:
            given, bad, read = load_file(path, data)
            # Before any step runs, with the user's on_error: an eval file is what the fine-tune is measured
            # against, so a label it does not know is the user's file to fix, reported against that file.
            given = check_eval_labels(given, labels, config.data, bad)
            reference += [replace(r, split=split) for r in given]
            passthrough_rejects += bad
            given_counts[split] = (read, len(given))
    ctx = Context(
        seed=cfg.seed,
        embed_dtype=cfg.embed_dtype,
        reference=reference,
        reference_splits=tuple(s for s in ("val", "test") if getattr(data, s) is not None),
    )
    console.print(
        f"curate: reading {escape(display_path(data.train))} ({engine} engine)"
        + (f"; {len(reference)} eval records given as files" if reference else "")
    )
    chain = build_chain(plan, ctx, config.data.labels, _lengths_fn(config, labels))
    cfg.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".curate-work-", dir=cfg.output) as workdir:
        sink = FileSink(cfg.output, Path(workdir), reference, passthrough_rejects)
        # Eval files pass through untouched: they are what the fine-tune is measured against.
        result = curate_stream(map_stage_of(data), cfg, chain, Path(workdir) / "table", sink, console)
    splits = sink.paths
    report = build_report(result, config, reference, len(passthrough_rejects))
    report_json, report_html = write_report(report, cfg.output)
    _print_summary(console, report, splits, report_html)
    # The outputs are written whatever happens (empty ones included): the report and rejects say why.
    problems = _unusable(result, {"train": (result.n_input, result.kept_count), **given_counts}, data, cfg.output)
    if for_run and problems:
        raise problems[0]
    for problem in problems:
        console.print(f"[yellow]warning: {escape(str(problem))}[/]")
    return CurateOutcome(splits, report_json, report_html, result)


def _map_stage(engine: str, address: str | None) -> Callable[[DataConfig], MapStage]:
    if engine == "ray":
        from tunewise.curate.ray_engine import ray_map, require_ray

        require_ray()
        return lambda data: ray_map(data, address)
    return lambda data: local_map(iter_file(data.train, data))


def _needs_labels(config: Config, data: DataConfig) -> bool:
    """Whether the training file's labels are needed before the steps run: to check eval files' labels, or
    for the label list of the default prompt that validate's token counts render."""
    if data.kind != "classification":
        return False
    counting = any(s.step == "validate" and s.enabled and s.max_tokens for s in config.curate.steps)  # type: ignore[union-attr]
    return counting or data.val is not None or data.test is not None


def _training_labels(data: DataConfig) -> list[str]:
    """The training file's labels, sorted (one streaming pass that keeps only the label set)."""
    return sorted({item.label for item in iter_file(data.train, data) if isinstance(item, Record) and item.label})


def check_eval_labels(
    records: list[Record], labels: list[str], data: DataConfig, rejects: list[Reject]
) -> list[Record]:
    """The given val/test records whose label is one of `labels` (data.labels, else the training file's).
    Any other is a DataError naming the user's file, line and label column with `data.on_error: raise`,
    else a reject (stage "labels") appended to `rejects`."""
    if data.kind != "classification" or not labels:  # no training labels: the empty training file is the error
        return records
    allowed, column = set(labels), data.fields.get("label", "label")
    known = known_labels(labels) + ("" if data.labels else ", from the training file")
    kept = []
    for record in records:
        if record.label in allowed:
            kept.append(record)
            continue
        reason = f"unknown label {brief(record.label)} (known: {known})"
        if data.on_error == "raise":
            raise DataError(record.source, record.line, column, reason, SKIP_HINT)
        category = RejectCategory.UNKNOWN_LABEL
        rejects.append(Reject(record.source, record.line, column, reason, "labels", record.to_row(), category=category))
    return kept


def _unusable(
    result: CurationResult, counts: dict[str, tuple[int, int]], data: DataConfig, output: Path
) -> list[DataError]:
    """An error for each input that left nothing to train or evaluate on: an empty file, or one whose every
    record was rejected (then the error names the rejects file that says why)."""
    problems = []
    kept_train = result.split_sizes.get("train", 0) > 0
    for split, (read, kept) in counts.items():
        path = display_path(getattr(data, split))
        name = "training" if split == "train" else split
        if read == 0:
            reason = f"no usable {name} records: the file is empty (or has only blank lines)"
            problems.append(DataError(path, 0, None, reason, f"check data.{split}"))
        elif not kept or (split == "train" and not kept_train):
            how = f"curation rejected all {read}" if not kept else "every record kept went to val/test"
            reason = f"no usable {name} records: {how}"
            hint = f"see {display_path(output / 'rejects.jsonl')} for the reasons"
            problems.append(DataError(path, 0, None, reason, hint))
    return problems


def _lengths_fn(config: Config, training_labels: list[str]) -> Callable[[list[Record]], list[int | str]]:
    """Token counts of the fully rendered examples; the tokenizer loads only if a step asks. A record that
    cannot be rendered (e.g. a chat the model's template refuses) gets the reason instead of a count. The
    default prompt lists the labels: those of the whole training file, so a chunk's count is the same as
    the whole file's."""

    steps = config.curate.steps if config.curate is not None else []
    loaded: list[Any] = []  # the tokenizer, loaded once per process (per Ray worker too)

    def lengths_of(records: list[Record]) -> list[int | str]:
        from tunewise.data.encode import PROMPT_COUNT_FACTOR, count_tokens, prompt_prefix, special_prefix
        from tunewise.data.prompt import PromptRenderer
        from tunewise.models import load_tokenizer

        if not loaded:
            loaded.append(load_tokenizer(config.model))
            if loaded[0].pad_token is None:
                loaded[0].pad_token = loaded[0].eos_token
        tokenizer = loaded[0]
        # The label list is part of the default prompt: measure with the labels training will see.
        labels = training_labels or sorted({r.label for r in records if r.label is not None})
        renderer = PromptRenderer(config.prompt, config.data.kind, tokenizer, labels)
        segments: list[list | str] = []
        for record in records:
            try:
                segments.append(renderer.segments(record))
            except RenderError as exc:  # this record's content; config errors still stop the run
                segments.append(exc.reason)
        # Counted exactly up to well past the largest max_tokens; a longer text is tokenized only as far as
        # needed to know it is too long (its count is then a lower bound): see encode.first_tokens.
        cap = PROMPT_COUNT_FACTOR * max((getattr(s, "max_tokens", None) or 0 for s in steps), default=0)
        prefix = special_prefix(tokenizer)
        short = [
            segment.text
            for parts in segments
            if not isinstance(parts, str)
            for segment in parts
            if not cap or len(segment.text) <= cap
        ]
        counts = iter(map(len, tokenizer(short, add_special_tokens=False)["input_ids"]) if short else [])

        def count(text: str) -> int:
            return next(counts) if not cap or len(text) <= cap else count_tokens(tokenizer, text, cap)[0]

        return [
            parts
            if isinstance(parts, str)
            else len(prompt_prefix(tokenizer, parts[0].text, prefix)) + sum(count(segment.text) for segment in parts)
            for parts in segments
        ]

    return lengths_of


def _print_summary(console: Console, report: dict, splits: dict[str, Path], html: Path) -> None:
    from rich.table import Table

    table = Table(title="Curation")
    for column in ("step", "in", "kept", "dropped", "changed", "reasons"):
        table.add_column(column, justify="left" if column in {"step", "reasons"} else "right")
    for step in report["steps"]:
        dropped = str(sum(step["dropped"].values()))
        changed = str(step["changed"]) if step["enabled"] else ""
        cells = (str(step["n_in"]), str(step["kept"]), dropped, changed)
        table.add_row(escape(str(step["name"])), *cells, escape(_reasons(step)))
    console.print(table)
    counts = report["totals"]
    console.print(
        f"input {counts['input']} = kept {counts['kept']} + rejected {counts['rejected']}; "
        + escape(", ".join(f"{name} {n}" for name, n in report["split_sizes"].items()))
    )
    for advice in report["advice"]:
        console.print(f"[yellow]advice: {escape(advice)}[/]")  # names labels: user data
    console.print(f"curated splits: {escape(', '.join(str(p) for p in splits.values()))}")
    console.print(f"report: {escape(str(html))}")


def _reasons(step: dict) -> str:
    """Drop reasons and kinds of change of one step, with their counts."""
    if not step["enabled"]:
        return "(off)"
    dropped = ", ".join(f"{k} {v}" for k, v in step["dropped"].items())
    changed = ", ".join(f"{k} {v}" for k, v in step["changes"].items())
    return "; ".join(filter(None, (dropped, changed and f"changed: {changed}")))
