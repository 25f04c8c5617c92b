"""`tunewise curate` end to end: files in, curated splits + report out, every input row accounted for."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from tunewise.cli import app
from tunewise.config import validate_config
from tunewise.curate.stage import curate
from tunewise.errors import DataError

CHEAP_STEPS = [
    {"step": "validate"},
    {"step": "normalize", "strip_for_key": ["urls", "mentions"]},
    {"step": "conflicts"},
    {"step": "exact_dedup"},
    {"step": "near_dedup", "threshold": 0.8},
    {"step": "quality", "min_words": 2},
    {"step": "confidence", "min": 0.5},
    {"step": "balance", "per_class": 40},
    {"step": "split", "val": 0.2, "test": 0.2},
    {"step": "decontaminate", "ngram": 6},
]


def _config(tmp_path: Path, train: Path, steps=CHEAP_STEPS, **data) -> dict:
    return {
        "data": {"kind": "classification", "train": str(train), **data},
        "curate": {"output": str(tmp_path / "curated"), "steps": steps},
    }


def _rows() -> list[str]:
    words = ["cars", "roads", "buses", "trains", "bikes", "ships", "planes", "vans"]
    rows = [
        json.dumps(
            {
                "text": f"the {w} number {i} are {'fine' if i % 2 else 'awful'} today",
                "label": "pos" if i % 2 else "neg",
                "confidence": 0.9,
            }
        )
        for i, w in enumerate(words * 6)
    ]
    rows += [rows[0], rows[1].replace("the ", "THE  ")]  # exact duplicates
    rows += [json.dumps({"text": "the cars number 0 are awful today", "label": "pos", "confidence": 0.9})]
    rows += [json.dumps({"text": "low confidence example here", "label": "pos", "confidence": 0.2})]
    rows += ['{"text": broken json', json.dumps({"text": "", "label": "pos"}), json.dumps({"label": "neg"})]
    return rows


def test_curate_cli_writes_splits_rejects_and_a_report(tmp_path: Path):
    train = tmp_path / "raw.jsonl"
    train.write_text("\n".join(_rows()) + "\n", encoding="utf-8")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(_config(tmp_path, train)), encoding="utf-8")
    result = CliRunner().invoke(app, ["curate", str(config)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = tmp_path / "curated"
    splits = {name: (out / f"{name}.jsonl").read_text().splitlines() for name in ("train", "val", "test")}
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert sum(map(len, splits.values())) + len(rejects) == len(_rows())
    by_stage = {}
    for reject in rejects:
        by_stage.setdefault(reject["stage"], []).append(reject["category"])
    assert sorted(by_stage["validate"]) == [
        "format:empty_field",
        "format:invalid_json",
        "format:missing_field",
    ]
    assert by_stage["conflicts"] == ["label:minority_label"]
    assert by_stage["exact_dedup"] == ["dedup:exact", "dedup:exact"]
    assert by_stage["confidence"] == ["label:low_confidence"]
    report = json.loads((out / "curation_report.json").read_text())
    assert report["totals"] == {
        "input": len(_rows()),
        "kept": sum(map(len, splits.values())),
        "rejected": len(rejects),
    }
    html = (out / "curation_report.html").read_text()
    assert "<img" in html and "exact_dedup" in html and "data:image/png;base64," in html
    assert "input 55 = kept" in result.output


def _rejects(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]


def test_eval_files_pass_through_and_decontaminate_train(tmp_path: Path):
    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"text": "the cars number 0 are awful today indeed", "label": "neg"}) + "\n")
    train = tmp_path / "raw.jsonl"
    train.write_text("\n".join(_rows()[:48]) + "\n", encoding="utf-8")
    steps = [{"step": "split", "val": 0.2}, {"step": "decontaminate", "ngram": 6}]
    config = validate_config(_config(tmp_path, train, steps, test=str(test)))
    outcome = curate(config, Console(quiet=True))
    assert outcome.splits["test"].read_text().count("\n") == 1
    drops = [r for r in _rejects(outcome.report_json.parent) if r["stage"] == "decontaminate"]
    assert [r["line"] for r in drops] == [1]


lines = st.one_of(
    st.binary(max_size=80).filter(lambda b: b"\n" not in b),
    st.dictionaries(
        st.sampled_from(["text", "label", "confidence", "x"]),
        st.one_of(
            st.text(max_size=30),
            st.integers(),
            st.none(),
            st.floats(allow_nan=True),
            st.lists(st.integers(), max_size=2),
        ),
        max_size=4,
    ).map(lambda d: json.dumps(d).encode()),
    st.builds(
        lambda t, lab: json.dumps({"text": t, "label": lab, "confidence": 0.9}).encode(),
        st.text(min_size=1, max_size=40),
        st.sampled_from(["pos", "neg"]),
    ),
)


def _expected_rows(raw_lines: list[bytes]) -> int:
    count = 0
    for number, raw in enumerate(raw_lines, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            count += 1
            continue
        text = text.lstrip("\ufeff") if number == 1 else text
        count += bool(text.strip())
    return count


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw_lines=st.lists(lines, max_size=30))
@example(raw_lines=[b"PAR1", b"\x80"])  # starts like Parquet, but no Parquet ends without PAR1: read as lines
@example(raw_lines=[b"\x1f\x8b\x80"])  # a gzip signature and binary after it: refused as a whole file
def test_nothing_is_lost_and_nothing_crashes_on_hostile_input(tmp_path: Path, raw_lines: list[bytes]):
    train = tmp_path / "fuzz.jsonl"
    train.write_bytes(b"\n".join(raw_lines) + b"\n")
    steps = [s for s in CHEAP_STEPS if s["step"] != "split"]
    try:
        outcome = curate(validate_config(_config(tmp_path, train, steps)), Console(quiet=True))
    except DataError as exc:
        # The one whole-file refusal: bytes that start like a compressed file or UTF-16/32 text
        assert exc.line == 0 and exc.reason.startswith("the file is"), exc
        assert raw_lines[0].startswith(
            (
                b"\x1f\x8b",
                b"PK\x03\x04",
                b"BZh",
                b"\xfd7zXZ",
                b"(\xb5/\xfd",
                b"\xff\xfe",
                b"\xfe\xff",
                b"\x00\x00\xfe\xff",
            )
        )
        return
    result = outcome.result
    assert result.n_input == _expected_rows(raw_lines)
    assert result.kept_count + result.rejected == result.n_input
    assert len(_rejects(outcome.report_json.parent)) == result.rejected
    assert all(r["reason"] for r in _rejects(outcome.report_json.parent))


def test_report_records_the_executed_order_and_what_normalize_changed(tmp_path: Path):
    train = tmp_path / "raw.jsonl"
    train.write_text("\n".join(_rows()) + "\n", encoding="utf-8")
    outcome = curate(validate_config(_config(tmp_path, train)), Console(quiet=True))
    report = json.loads(outcome.report_json.read_text())
    listed = [step["step"] for step in CHEAP_STEPS]
    assert report["executed_order"] == [name for name in listed if name != "balance"] + ["balance"]
    assert report["reordered"] is True
    normalize = next(step for step in report["steps"] if step["name"] == "normalize")
    assert normalize["changed"] == 1 and normalize["changes"] == {"whitespace": 1}  # "THE  cars"
    html = outcome.report_html.read_text()
    assert "Steps ran in this order: validate → normalize" in html and "decontaminate → balance." in html
    assert "whitespace: 1" in html


def _with_eval_file(tmp_path: Path, **data) -> tuple[dict, Path]:
    train = tmp_path / "raw.jsonl"
    train.write_text("\n".join(_rows()[:48]).replace('"label"', '"sentiment"') + "\n", encoding="utf-8")
    test = tmp_path / "test.jsonl"
    rows = [{"text": "roads are fine today", "sentiment": "pos"}, {"text": "meh roads", "sentiment": "mixed"}]
    test.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    steps = [{"step": "exact_dedup"}, {"step": "split", "val": 0.2}]
    config = _config(tmp_path, train, steps, test=str(test), fields={"label": "sentiment"}, **data)
    return config, test


def test_an_eval_file_label_unknown_to_training_fails_before_curation_naming_the_users_file(tmp_path: Path):
    config, test = _with_eval_file(tmp_path)
    try:
        curate(validate_config(config), Console(quiet=True))
    except DataError as exc:
        assert (exc.source, exc.line, exc.field) == (str(test), 2, "sentiment")
        assert "unknown label 'mixed' (known: neg, pos, from the training file)" in exc.reason
    else:
        raise AssertionError("no DataError")
    assert not (tmp_path / "curated").exists()  # raised before any step ran or wrote


def test_the_cli_exits_2_on_an_unknown_eval_label(tmp_path: Path):
    config, _ = _with_eval_file(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = CliRunner().invoke(app, ["curate", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert re.search(r"error: \S*test\.jsonl:2: field 'sentiment': unknown label 'mixed'", result.output)


def test_with_on_error_skip_an_unknown_eval_label_is_a_counted_reject(tmp_path: Path):
    config, test = _with_eval_file(tmp_path, on_error="skip")
    outcome = curate(validate_config(config), Console(quiet=True))
    rejects = (outcome.splits["train"].parent / "rejects.jsonl").read_text().splitlines()
    (reject,) = [r for r in map(json.loads, rejects) if r["stage"] == "labels"]
    assert (reject["source"], reject["line"], reject["field"]) == (str(test), 2, "sentiment")
    assert reject["category"] == "label:unknown_label"
    assert outcome.splits["test"].read_text().count("\n") == 1
    assert json.loads(outcome.report_json.read_text())["eval_files"] == {"records": 1, "rejected": 1}
