"""The model card: code spans and blocks no user string can close, front matter that parses, one fidelity row per
check, the data's SHA-256 and the curation counts. Hostile values are checked the way a hub renders the card: parsed
as CommonMark with tables and raw HTML, nothing of them may show outside code."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from markdown_it import MarkdownIt
from rich.console import Console
from transformers import AutoTokenizer

from tunewise.curate.engine import StepReport
from tunewise.data.prompt import PromptRenderer
from tunewise.data.records import Record
from tunewise.evaluate.stats import Difference
from tunewise.export.card import fenced, inline, model_card
from tunewise.export.checks import ArtifactCheck
from tunewise.export.fidelity import LogitFidelity
from tunewise.export.run_source import EvaluatedData, ExportSource, evaluated_data, read_run_source

HOSTILE = (
    "`` <script>alert(1)</script> [click](https://evil.example) ```\n"
    "# injected heading\n<img src=x onerror=alert(1)>\n```\n---\nlicense: evil\n"
)
HOSTILE_FILE = "[click](javascript:alert(1))<script>alert(2)</script>`x`\n# h.jsonl"  # a file name: no slash
MARKERS = ("<script", "evil.example", "javascript:", "onerror", "injected heading", "license: evil", "`")
MARKDOWN = MarkdownIt("commonmark", {"html": True}).enable("table")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def parts(finished_run: Path, tokenizer: Any) -> tuple[ExportSource, EvaluatedData, PromptRenderer]:
    source = read_run_source(finished_run)
    data = evaluated_data(source, Console(quiet=True))
    renderer = PromptRenderer(source.config.prompt, "classification", tokenizer, data.splits.labels)
    return source, data, renderer


def _report(*checks: ArtifactCheck) -> dict[str, Any]:
    return {
        "artifacts": {"merged": "merged", "gguf": "tiny.q8_0.gguf", "modelfile": "Modelfile"},
        "primary_metric": "macro_f1",
        "split": "test",
        "n_examples": 24,
        "probe_prompts": 16,
        "checks": [c.to_json() for c in checks],
    }


MERGED = ArtifactCheck(
    "merged float32",
    "transformers",
    "base + adapter",
    logits=LogitFidelity(2.5e-6, 3.25e-12, 1.0, 300),
    metrics={"macro_f1": 0.5},
    difference=Difference(0.0, -0.05, 0.0625, 1.0, 24, 1000),
    prediction_agreement=1.0,
)
GGUF = ArtifactCheck("gguf q8_0", "llama.cpp", "merged", logits=LogitFidelity(0.04, 1.5e-4, 0.99, 300))
ADAPTER = ArtifactCheck("adapter", "files", "the run's adapter")


def _outside_code(card: str) -> str:
    """Everything a renderer shows as markup or text, code spans and blocks dropped; the front matter (which a
    hub reads as metadata, not markdown) is checked separately."""
    assert card.startswith("---\n")
    body = card.split("\n---\n", 1)[1]
    shown: list[str] = []
    for token in MARKDOWN.parse(body):
        if token.type in {"fence", "code_block"}:
            continue
        if token.type == "html_block" or (token.type == "heading_open" and token.tag == "h1"):
            shown.append(f"[{token.type}] {token.content}")
        for child in token.children or []:
            if child.type in {"text", "html_inline"}:
                shown.append(child.content)
            elif child.type in {"link_open", "image"}:
                shown.append(f"[{child.type} {child.attrs}]")
    return "\n".join(shown)


def _front_matter(card: str) -> Any:
    """The YAML between the opening `---` line and the first closing one, as a hub reads it."""
    return yaml.safe_load(card.removeprefix("---\n").split("\n---\n", 1)[0])


def _section(card: str, heading: str) -> list[str]:
    after = card.split(f"## {heading}\n", 1)[1]
    return after.split("\n## ", 1)[0].splitlines()


@pytest.mark.parametrize("text", ["plain", "a ` b", "``", "x ``` y ` z", "`leading", "trailing`", "a\nb\rc"])
def test_inline_is_one_code_span_that_nothing_inside_closes(text: str):
    span = inline(text)
    tokens = MARKDOWN.parseInline(span)[0].children
    assert [t.type for t in tokens] == ["code_inline"]
    assert tokens[0].content == text.replace("\n", " ").replace("\r", " ")
    fence = len(span) - len(span.lstrip("`"))
    assert fence > max(map(len, re.findall("`+", text)), default=0)


@pytest.mark.parametrize("text", ["print(1)", "```\nnot the end\n```", "a\n````\nb", "~~~\nx"])
def test_fenced_is_one_block_that_no_line_inside_closes(text: str):
    block = fenced(text, "yaml")
    tokens = MARKDOWN.parse(block + "after the block\n")
    assert [t.type for t in tokens][:1] == ["fence"]
    assert tokens[0].content == text.rstrip() + "\n" and tokens[0].info == "yaml"
    assert tokens[1].type == "paragraph_open"  # the text after the block is outside it again


def test_hostile_strings_stay_inside_code(parts: tuple, tmp_path: Path):
    source, data, _ = parts
    config = source.config.model_copy(
        update={
            "model": source.config.model.model_copy(update={"name": HOSTILE}),
            "prompt": source.config.prompt.model_copy(update={"system": HOSTILE}),
        }
    )
    run_dir = tmp_path / "run `x` <script>alert(3)</script> [a](javascript:alert(3))"
    source = dataclasses.replace(source, config=config, run_dir=run_dir)
    hostile_record = Record("classification", {"text": HOSTILE, "label": HOSTILE}, HOSTILE, 1)
    files = {
        **data.files,
        HOSTILE: {"path": f"/data/{HOSTILE_FILE}", "sha256": "ab" * 32, "bytes": 10},
    }
    data = dataclasses.replace(data, records=[hostile_record], files=files)
    renderer = PromptRenderer(config.prompt, "classification", parts[2].tokenizer, [HOSTILE, "neutral"])

    card = model_card(source, data, _report(MERGED, GGUF), renderer)

    shown = _outside_code(card)
    for marker in MARKERS:
        assert marker not in shown, f"{marker!r} outside code:\n{shown}"
    assert shown.count("[heading_open]") == 1  # the title only
    assert "<script>alert(1)</script>" in card  # it is there, as code
    front = _front_matter(card)
    assert front["base_model"] == HOSTILE and "license" not in front  # quoted: its `---` closes nothing


def test_a_pipe_in_a_data_file_name_cannot_break_out_of_its_table_cell(parts: tuple):
    source, data, renderer = parts
    files = {"train": {"path": "/data/a|<img src=x onerror=alert(1)>|b.jsonl", "sha256": "ab" * 32, "bytes": 10}}
    card = model_card(source, dataclasses.replace(data, files=files), _report(MERGED), renderer)
    assert "onerror" not in _outside_code(card)


def test_front_matter_parses(parts: tuple):
    source, data, renderer = parts
    card = model_card(source, data, _report(MERGED, GGUF), renderer)
    front = _front_matter(card)
    assert front["base_model"] == source.config.model.name
    assert front["library_name"] == "transformers" and front["pipeline_tag"] == "text-generation"
    assert "gguf" in front["tags"] and "lora" in front["tags"]
    merged_only = {**_report(MERGED), "artifacts": {"merged": "merged"}}
    assert "gguf" not in _front_matter(model_card(source, data, merged_only, renderer))["tags"]


def test_one_fidelity_row_per_check(parts: tuple):
    source, data, renderer = parts
    card = model_card(source, data, _report(MERGED, GGUF, ADAPTER), renderer)
    rows = [line for line in _section(card, "Export fidelity") if line.startswith("|")][2:]  # header, separator
    assert [row.split("|")[1].strip() for row in rows] == ["merged float32", "gguf q8_0", "adapter"]
    merged, gguf, adapter = (row.split("|")[1:-1] for row in rows)
    assert [c.strip() for c in merged][3:] == ["2.50e-06", "3.25e-12", "0.5000", "+0.0000 [-0.0500, +0.0625]", "100.0%"]
    assert [c.strip() for c in gguf][3:] == ["4.00e-02", "1.50e-04", "—", "", ""]  # not scored: a dash
    assert [c.strip() for c in adapter][3:] == ["", "", "—", "", ""]
    assert "None" not in card


def test_the_evaluation_and_data_tables_hold_the_runs_figures(parts: tuple):
    source, data, renderer = parts
    card = model_card(source, data, _report(MERGED), renderer)
    evaluation = source.evaluation
    fine_tuned = evaluation["models"]["fine-tuned"]["macro_f1"]
    assert f"| fine-tuned | {fine_tuned:.4f} |" in card
    data_rows = [line for line in _section(card, "Data") if line.startswith("| ")][1:]
    assert len(data_rows) == 3
    for name, entry in data.files.items():
        row = next(r for r in data_rows if f"` {name} `" in r)
        assert f"` {entry['sha256']} `" in row and f"| {entry['bytes']:,} |" in row
    assert "Splits as trained: 72 train, 24 validation, 24 test." in card
    assert "Curation:" not in card


def _curated(data: EvaluatedData, tmp_path: Path, report: object) -> EvaluatedData:
    curated = tmp_path / "curated" / "train.jsonl"
    curated.parent.mkdir()
    curated.write_text('{"text": "x", "label": "positive"}\n')
    (curated.parent / "curation_report.json").write_text(json.dumps(report))
    entry = {"path": str(curated), "sha256": "cd" * 32, "bytes": curated.stat().st_size}
    return dataclasses.replace(data, files={**data.files, "curated train": entry})


def _curation_report() -> dict[str, Any]:
    steps = [
        StepReport("exact_dedup", True, 120, 108, dropped={"dedup:exact": 12}),
        StepReport("quality", True, 108, 100, dropped={"quality:too_short": 5, "quality:repetitive": 3}),
    ]
    return {"totals": {"input": 120, "kept": 100, "rejected": 20}, "steps": [vars(s) for s in steps]}


def test_curation_counts_appear_beside_a_curated_train_file(parts: tuple, tmp_path: Path):
    source, data, renderer = parts
    card = model_card(source, _curated(data, tmp_path, _curation_report()), _report(MERGED), renderer)
    assert "Curation: 120 records in, 100 kept, 20 rejected" in card
    assert "` exact_dedup `" in card and "` quality `" in card
    assert "` curated train ` ` train.jsonl ` | ` " + "cd" * 32 + " `" in card


@pytest.mark.parametrize("report", [None, [1, 2], {"totals": "many"}, {"steps": []}])
def test_no_curation_line_without_a_readable_report(parts: tuple, tmp_path: Path, report: object):
    source, data, renderer = parts
    card = model_card(source, _curated(data, tmp_path, report), _report(MERGED), renderer)
    assert "Curation:" not in card


def test_the_dropped_count_per_step_is_a_number(parts: tuple, tmp_path: Path):
    source, data, renderer = parts
    card = model_card(source, _curated(data, tmp_path, _curation_report()), _report(MERGED), renderer)
    assert "` exact_dedup ` 12" in card and "` quality ` 8" in card
    assert "{" not in card.split("Curation:", 1)[1].split("\n", 1)[0]


DAMAGED_EVALUATIONS = {
    "p-value text": {"differences": {"macro_f1": {"delta": 0.1, "ci_low": 0.0, "ci_high": 0.2, "p_value": "0.5"}}},
    "model not a mapping": {"models": {"base": [], "fine-tuned": {}}},
    "models a list": {"models": ["base", "fine-tuned"]},
    "count as markup": {"n_examples": "<img src=x onerror=alert(1)>"},
}


@pytest.mark.parametrize("damage", DAMAGED_EVALUATIONS.values(), ids=DAMAGED_EVALUATIONS.keys())
def test_a_damaged_eval_json_neither_crashes_the_card_nor_injects_markup(parts: tuple, damage: dict[str, Any]):
    source, data, renderer = parts
    damaged = dataclasses.replace(source, evaluation={**source.evaluation, **damage})
    card = model_card(damaged, data, _report(MERGED), renderer)
    assert "onerror" not in _outside_code(card)
