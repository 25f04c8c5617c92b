"""The model card (README.md) every export carries: where the weights came from, the data they were trained on
(with SHA-256), the exact prompt, the training settings, the test figures with CIs and the export's fidelity.

Every user-supplied string (paths, prompts, labels) goes into a fenced code block or inline code, so a hostile
value cannot inject markup into a card rendered on a model hub."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tunewise.config import dump_config
from tunewise.core.format import BOOTSTRAP_RESAMPLES, count, format_p_value, signed
from tunewise.core.format import metric as format_metric
from tunewise.data.prompt import PromptRenderer
from tunewise.export.run_source import EvaluatedData, ExportSource, json_object
from tunewise.track.store import read_json


def write_model_card(
    directory: Path, source: ExportSource, data: EvaluatedData, report: dict[str, Any], renderer: PromptRenderer
) -> Path:
    path = directory / "README.md"
    path.write_text(model_card(source, data, report, renderer), encoding="utf-8")
    return path


def model_card(source: ExportSource, data: EvaluatedData, report: dict[str, Any], renderer: PromptRenderer) -> str:
    config = source.config
    front = {
        "base_model": config.model.name,
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["tunewise", "lora", "fine-tuned", *(["gguf"] if "gguf" in report["artifacts"] else [])],
    }
    parts = [
        "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n",
        f"# Fine-tune of {inline(config.model.name)} for {data.task.name}\n",
        "Exported by tunewise from run "
        + inline(source.run_dir.name)
        + ". Artifacts: "
        + ", ".join(inline(f"{name}: {rel}") for name, rel in report["artifacts"].items())
        + ".\n",
        _evaluation(source, report),
        _fidelity(report),
        _prompt(renderer, data),
        _data(source, data),
        "## Training configuration\n\n" + fenced(dump_config(config), "yaml"),
    ]
    return "\n".join(part for part in parts if part)


def inline(text: object) -> str:
    """`text` as inline code: the fence is longer than any run of backticks inside, newlines become spaces."""
    value = str(text).replace("\n", " ").replace("\r", " ")
    longest = max((len(m) for m in re.findall(r"`+", value)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {value} {fence}"


def cell(text: object) -> str:
    """`text` as inline code inside a table cell: a `|` would end the cell (and the code span with it), so it
    is escaped, which GitHub-flavoured tables resolve before the code span."""
    return inline(text).replace("|", "\\|")


def fenced(text: str, language: str = "") -> str:
    """`text` as a fenced code block whose fence no line inside can close."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}\n"


def _evaluation(source: ExportSource, report: dict[str, Any]) -> str:
    """The run's own base vs fine-tuned figures; eval.json is a run file, so every shape in it is checked."""
    evaluation = _mapping(source.evaluation)
    models = _mapping(evaluation.get("models"))
    base, tuned = _mapping(models.get("base")), _mapping(models.get("fine-tuned"))
    metric = report["primary_metric"]
    if not base or not tuned:
        return ""
    n = count(evaluation.get("n_examples"), missing="?")
    diff = _mapping(_mapping(evaluation.get("differences")).get(metric))
    ci = f"[{_signed_cell(diff.get('ci_low'))}, {_signed_cell(diff.get('ci_high'))}]" if diff else ""
    lines = [
        f"## Evaluation ({inline(report['split'])} split, {n} examples)\n",
        f"| model | {inline(metric)} | Δ vs base [95% CI] | p |",
        "|---|---|---|---|",
        f"| prompted base | {format_metric(base.get(metric))} | | |",
        f"| fine-tuned | {format_metric(tuned.get(metric))} | {_signed_cell(diff.get('delta'))} {ci} | "
        f"{format_p_value(diff.get('p_value'), diff.get('resamples', BOOTSTRAP_RESAMPLES), missing='')} |",
    ]
    return "\n".join(lines) + "\n"


def _fidelity(report: dict[str, Any]) -> str:
    metric = report["primary_metric"]
    lines = [
        "## Export fidelity\n",
        f"Each artifact against the model the run evaluated, on the {report['n_examples']} evaluated examples "
        f"(logits: every position of {report['probe_prompts']} prompts with their reference answers).\n",
        f"| artifact | runtime | logits vs | max abs Δlogit | NMSE | {metric} | Δ vs adapter [95% CI] "
        "| same prediction |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for check in report["checks"]:
        logits = check.get("logits") or {}
        diff = check.get("difference_to_adapter") or {}
        score = (check.get("metrics") or {}).get(metric)
        agreement = check.get("prediction_agreement")
        lines.append(
            f"| {check['artifact']} | {check['runtime']} | {check['logits_against']} | "
            f"{_sci(logits.get('max_abs_diff'))} | {_sci(logits.get('nmse'))} | {format_metric(score)} | "
            + (_interval(diff) if diff else "")
            + f" | {'' if agreement is None else f'{agreement:.1%}'} |"
        )
    modelfile = report.get("modelfile")
    if modelfile:
        lines.append(
            f"\nOllama Modelfile: the prompt its TEMPLATE renders is token-identical to the trained prompt on "
            f"{modelfile['identical_tokens']} of {modelfile['records']} evaluated records."
        )
    return "\n".join(lines) + "\n"


def _prompt(renderer: PromptRenderer, data: EvaluatedData) -> str:
    record = data.records[0]
    example = renderer.prompt(record) + renderer.answer_prefix
    return (
        "## Prompt format\n\nThe model was trained and evaluated on prompts rendered exactly like this one (the "
        "first evaluated record); its answer follows, ended by "
        + inline(renderer.end_of_answer.strip() or "(EOS)")
        + ".\n\n"
        + fenced(example)
    )


def _data(source: ExportSource, data: EvaluatedData) -> str:
    lines = ["## Data\n", "| file | SHA-256 | bytes |", "|---|---|---|"]
    for name, entry in data.files.items():
        if entry.get("sha256"):
            file_name = cell(Path(str(entry["path"])).name)
            size = count(entry.get("bytes"), missing="")
            lines.append(f"| {cell(name)} {file_name} | {cell(entry['sha256'])} | {size} |")
    splits = data.splits
    lines.append(
        f"\nSplits as trained: {len(splits.train)} train, {len(splits.val)} validation, {len(splits.test)} test."
    )
    curation = _curation(data)
    if curation:
        lines.append(curation)
    return "\n".join(lines) + "\n"


def _curation(data: EvaluatedData) -> str:
    curated = data.files.get("curated train")
    if not curated or not curated.get("path"):
        return ""
    report = _mapping(read_json(Path(str(curated["path"])).parent / "curation_report.json"))
    totals = _mapping(report.get("totals"))
    if not totals:
        return ""
    steps = [s for s in report.get("steps") or [] if isinstance(s, dict)]
    dropped = ", ".join(f"{inline(s.get('name', '?'))} {count(_dropped(s.get('dropped')))}" for s in steps)
    return (
        f"\nCuration: {count(totals.get('input'))} records in, {count(totals.get('kept'))} kept, "
        f"{count(totals.get('rejected'))} rejected with their reasons"
        + (f" (dropped per step: {dropped})" if dropped else "")
        + "."
    )


def _dropped(value: Any) -> int | None:
    """A step's drops: {category: count} in curation_report.json (a plain count is accepted too)."""
    if isinstance(value, dict):
        counts = [v for v in value.values() if isinstance(v, int) and not isinstance(v, bool)]
        return sum(counts)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _mapping(value: Any) -> dict[str, Any]:
    return json_object(value) or {}


def _sci(value: Any) -> str:
    return "" if not isinstance(value, int | float) else f"{value:.2e}"


def _signed_cell(value: Any) -> str:
    return signed(value, missing="")


def _interval(diff: dict[str, Any]) -> str:
    low, high = _signed_cell(diff.get("ci_low")), _signed_cell(diff.get("ci_high"))
    return f"{_signed_cell(diff.get('delta'))} [{low}, {high}]"
