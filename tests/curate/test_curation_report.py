"""curation_report.json and .html (curate/curation_report.py): figures, page security, size advice."""

from __future__ import annotations

import base64
import io
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from tunewise.config import validate_config
from tunewise.config.curate import CurateConfig
from tunewise.core.html import CSP
from tunewise.curate.base import Context
from tunewise.curate.curation_report import MAX_PLOTTED_CLASSES, build_report, write_report
from tunewise.curate.curation_report import advice as report_advice
from tunewise.curate.engine import run_steps
from tunewise.data.records import Record

STEPS = [{"step": "exact_dedup"}, {"step": "balance", "per_class": 4}]


def rec(text: str, label: str, line: int = 1) -> Record:
    return Record("classification", {"text": text, "label": label}, "in.jsonl", line)


def curated(records: list[Record], tmp_path: Path, steps: list[dict] = STEPS) -> dict:
    raw = {"model": {"name": "m"}, "data": {"kind": "classification", "train": str(tmp_path / "in.jsonl")}}
    config = validate_config(raw | {"curate": {"output": str(tmp_path / "curated"), "steps": steps}})
    console = Console(file=io.StringIO())
    result = run_steps(records, [], CurateConfig(steps=steps), Context(seed=0), console)
    return build_report(result, config)


def sample() -> list[Record]:
    records = [rec(f"good ride number {i}", "pos", i) for i in range(10)]
    records += [rec(f"bad ride number {i}", "neg", 10 + i) for i in range(3)]
    script = "<script>alert(1)</script> costs $x^$"  # twice: the duplicate is shown as an example of a drop
    records += [rec("good ride number 0", "pos", 99), rec(script, "<i>$x^$</i>", 100), rec(script, "<i>$x^$</i>", 101)]
    return records


def decoded(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    image.load()
    assert image.format == "PNG" and image.width > 100
    return image


def _advice(train, kind, steps=()):
    return report_advice(Counter(r.label for r in train if r.label is not None), len(train), kind, steps)


def test_the_report_counts_every_record_and_embeds_both_figures(tmp_path: Path):
    report = curated(sample(), tmp_path)
    assert report["totals"] == {"input": 16, "kept": 8, "rejected": 8}  # 2 duplicates, 6 over the balance cap
    assert report["class_balance"]["before"] == {"<i>$x^$</i>": 2, "neg": 3, "pos": 11}
    assert report["class_balance"]["after"] == {"<i>$x^$</i>": 1, "neg": 3, "pos": 4}
    assert [s["name"] for s in report["steps"]] == ["read", "exact_dedup", "balance"]
    decoded(report["plots"]["class_balance"])  # a "$x^$" label is tick text, not broken math
    decoded(report["plots"]["lengths"])


def test_write_report_keeps_the_figures_out_of_the_json(tmp_path: Path):
    report = curated(sample(), tmp_path)
    json_path, html_path = write_report(report, tmp_path / "out")
    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert "plots" not in data and data["totals"] == report["totals"] and data["split_sizes"] == {"train": 8}
    assert html_path == tmp_path / "out" / "curation_report.html"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["curation_report.html", "curation_report.json"]


def test_the_page_is_self_contained_escaped_and_under_the_csp(tmp_path: Path):
    report = curated(sample(), tmp_path)
    page = write_report(report, tmp_path / "out")[1].read_text(encoding="utf-8")
    assert f'<meta http-equiv="Content-Security-Policy" content="{CSP}">' in page
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; costs $x^$" in page
    assert "<i>" not in page and "class &#39;&lt;i&gt;$x^$&lt;/i&gt;&#39; has 1 training examples" in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 2 and all(decoded(src) for src in sources)  # no file, no URL: data: only
    assert not re.search(r"href=|url\(|@import", page)
    assert "<b>16</b> input records = <b>8</b> kept +\n<b>8</b> rejected" in page
    assert "Steps ran in this order: exact_dedup → balance." in page
    steps = re.findall(r'<td class="n">([\d.]+)</td></tr>', page)
    assert len(steps) == 3 and all(re.fullmatch(r"\d+\.\d", s) for s in steps)  # seconds to one decimal


def test_the_page_shows_the_advice_and_omits_the_balance_chart_without_labels(tmp_path: Path):
    report = curated(sample(), tmp_path)
    page = write_report(report, tmp_path / "out")[1].read_text(encoding="utf-8")
    assert "Dataset-size advice" in page and "class &#39;neg&#39; has 3 training examples" in page
    report["plots"]["class_balance"] = None
    report["advice"] = []
    page = write_report(report, tmp_path / "again")[1].read_text(encoding="utf-8")
    assert "Class balance" not in page and "Dataset-size advice" not in page


def test_many_classes_plot_the_largest_and_still_render(tmp_path: Path):
    records = [rec(f"text {i} {j}", f"class-{i:03d}", i * 10 + j) for i in range(45) for j in range(1 + i % 3)]
    report = curated(records, tmp_path, steps=[{"step": "exact_dedup"}])
    assert len(report["class_balance"]["before"]) == 45 > MAX_PLOTTED_CLASSES
    decoded(report["plots"]["class_balance"])


def test_an_empty_curated_set_still_gets_a_report(tmp_path: Path):
    report = curated([rec("same text", "a", 1), rec("same text", "a", 2)], tmp_path, steps=[{"step": "exact_dedup"}])
    assert report["totals"] == {"input": 2, "kept": 1, "rejected": 1}
    empty = curated([], tmp_path)
    assert empty["totals"]["input"] == 0 and empty["plots"]["class_balance"] is None
    decoded(empty["plots"]["lengths"])


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"a": 300, "b": 300}, []),
        ({"a": 299, "b": 300}, ["class 'a' has 299 training examples; aim for a few hundred per class"]),
        ({"a": 700, "b": 300}, ["class 'a' is 70% of the training set; consider the balance step"]),
        ({"a": 600, "b": 400}, []),  # 60% is the most one class may hold before the advice speaks
    ],
)
def test_classification_advice_at_its_thresholds(counts: dict[str, int], expected: list[str]):
    train = [rec("x", label) for label, n in counts.items() for _ in range(n)]
    assert _advice(train, "classification") == expected


def test_a_balance_step_without_a_target_is_named_as_the_reason():
    train = [rec("x", "a")] * 700 + [rec("y", "b")] * 300
    steps = CurateConfig(steps=[{"step": "balance"}]).steps
    (note,) = _advice(train, "classification", steps)
    assert note.endswith("the balance step has no per_class or total to sample to")
    off = CurateConfig(steps=[{"step": "balance", "per_class": 300, "enabled": False}]).steps
    assert _advice(train, "classification", off)[0].endswith("consider the balance step")  # a disabled step is none


def test_generation_advice_wants_a_few_thousand_examples():
    chat = Record("chat", {"messages": [{"role": "user", "content": "hi"}]}, "in.jsonl", 1)
    assert _advice([chat] * 1999, "chat") == ["1999 training examples; generation tasks usually want a few thousand"]
    assert _advice([chat] * 2000, "chat") == []


def test_advice_knows_whether_a_balance_step_is_configured():
    train = [rec("x", "a")] * 400 + [rec("y", "b")] * 50
    without = _advice(train, "classification", [])
    assert "class 'a' is 89% of the training set; consider the balance step" in without
    steps = CurateConfig(steps=[{"step": "balance", "per_class": 400}]).steps
    notes = _advice(train, "classification", steps)
    assert not any("consider the balance step" in note for note in notes)
    assert any(note.startswith("class 'a' is 89% of the training set after the balance step") for note in notes)
    capped = CurateConfig(steps=[{"step": "balance", "per_class": 100}]).steps
    assert _advice([rec("x", "a")] * 100 + [rec("y", "b")] * 80, "classification", capped) == [
        "class 'a' has 100 training examples (the balance step's per_class); aim for a few hundred per class",
        "class 'b' has 80 training examples; aim for a few hundred per class",
    ]
