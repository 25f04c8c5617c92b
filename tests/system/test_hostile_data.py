"""One test per failure mode of hostile data (see tests/system/test_fuzz_inputs.py), each on a minimal file.

Each checks that none of these happens: a traceback, a whole file refused for one bad row, a record put
on the wrong line, or a value silently kept that it cannot hold.
"""

from __future__ import annotations

import json
import math
import random
import re
import string
import tracemalloc
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from tunewise.cli import app
from tunewise.config import DataConfig, validate_config
from tunewise.curate.stage import curate
from tunewise.data.jsonl import write_jsonl
from tunewise.data.splits import load_file, load_splits
from tunewise.errors import ConfigError, DataError


def _load(path: Path, kind: str = "classification", **options):
    return load_file(path, DataConfig(kind=kind, train=path, on_error="skip", **options))


def _reasons(rejects) -> dict[int, str]:
    return {r.line: r.reason for r in rejects}


def test_json_beyond_python_limits_is_a_rejected_line(tmp_path: Path):
    path = tmp_path / "t.jsonl"
    lines = [
        '{"text": ' + "9" * 5000 + ', "label": "a"}',
        "[" * 100_000 + "]" * 100_000,
        '{"text": "ok", "label": "a"}',
    ]
    path.write_text("\n".join(lines) + "\n")
    records, rejects, total = _load(path)
    assert total == 3 and [r.line for r in records] == [3]
    reasons = _reasons(rejects)
    assert "invalid JSON: Exceeds the limit (4300 digits)" in reasons[1]  # was: ValueError traceback
    assert reasons[2] == "invalid JSON: nested too deeply"  # was: RecursionError traceback


def test_lone_surrogates_are_rejected_so_outputs_stay_writable(tmp_path: Path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "ok \\udfff", "label": "a"}\n{"text": "fine", "label": "a", "x\\ud800": 1}\n')
    records, rejects, _ = _load(path)
    assert not records
    assert [(r.field, r.reason.split(":")[0]) for r in rejects] == [
        ("text", "not valid Unicode"),
        ("x\\ud800", "not valid Unicode"),
    ]
    write_jsonl(tmp_path / "rejects.jsonl", [r.to_json() for r in rejects])  # was: UnicodeEncodeError


def test_one_undecodable_csv_byte_rejects_its_row_not_the_file(tmp_path: Path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"text,label\ngood one,a\nbad \xff byte,a\nalso good,b\n")
    records, rejects, total = _load(path)
    assert total == 3 and [r.line for r in records] == [2, 4]  # was: DataError for the whole file
    (reject,) = rejects
    assert (reject.line, reject.field) == (3, "text") and "not valid utf-8: byte 0xff" in reject.reason


def test_csv_rows_are_named_by_their_first_line_and_a_leading_blank_line_is_no_header(tmp_path: Path):
    path = tmp_path / "t.csv"
    path.write_bytes(b'\r\ntext,label\r\n"two\r\nlines",a\r\n\r\nonly one value\r\n')
    records, rejects, total = _load(path)
    assert total == 2 and [r.line for r in records] == [3]  # was: every row "more values than 0 columns"
    assert [(r.line, r.field, r.reason) for r in rejects] == [(6, "label", "missing")]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_column_named_twice_is_a_file_error(tmp_path: Path, fmt: str):
    path = tmp_path / f"t.{fmt}"
    if fmt == "csv":
        path.write_text("text,label,text\nthe text,a,other\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(
            pa.Table.from_arrays([pa.array(["x"]), pa.array(["a"]), pa.array(["y"])], ["text", "label", "text"]), path
        )
    with pytest.raises(
        DataError, match=rf"{re.escape(str(path))}(:1)?: column 'text' appears twice"
    ):  # was: last won / pyarrow jargon
        _load(path)


def test_parquet_values_python_cannot_hold_reject_their_row(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from support.hostile_parquet import _bad_utf8_array

    days = pa.array([0, 2**30, 0], pa.int32()).cast(pa.date32())
    table = pa.table({"text": _bad_utf8_array(pa, [b"ok", b"ok", b"caf\xc3"]), "label": ["a", "a", "a"], "day": days})
    pq.write_table(table, tmp_path / "t.parquet")
    records, rejects, total = _load(tmp_path / "t.parquet")
    assert total == 3 and [r.line for r in records] == [1]  # was: OverflowError / UnicodeDecodeError traceback
    assert [(r.line, r.field, r.reason.split(" (")[0]) for r in rejects] == [
        (2, "day", "value cannot be read"),
        (3, "text", "value cannot be read"),
    ]


def test_a_chat_role_of_the_wrong_type_is_rejected(tmp_path: Path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"messages": [{"role": ["assistant"], "content": "hi"}]}) + "\n")
    _, rejects, _ = _load(path, kind="chat")  # was: TypeError: unhashable type: 'list'
    assert rejects[0].reason == "message 0: unknown role ['assistant'] (use system, user or assistant)"


def test_huge_values_are_cut_short_in_reasons(tmp_path: Path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"text": "fine", "label": "L" * 1_000_000}) + "\n")
    with pytest.raises(DataError) as info:
        load_splits(DataConfig(kind="classification", train=path, labels=["a"]), seed=0)
    assert len(str(info.value)) < 400 and "unknown label 'LLLL" in str(info.value)  # was: a 1 MB error line


def test_copies_of_one_text_cannot_be_split_is_a_data_error(tmp_path: Path):
    path = tmp_path / "t.jsonl"
    path.write_text((json.dumps({"text": "same words", "label": "a"}) + "\n") * 6)
    cfg = DataConfig(kind="classification", train=path)
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: too few records to split off"):  # was: IndexError
        load_splits(cfg, seed=0)


def test_unknown_encoding_is_a_config_error(tmp_path: Path):
    path = tmp_path / "t.jsonl"
    path.write_text("{}\n")
    raw = {"model": {"name": "m"}, "data": {"kind": "classification", "train": str(path), "encoding": "utf-9"}}
    with pytest.raises(ConfigError, match=r"'data\.encoding': Value error, unknown text encoding 'utf-9'"):
        validate_config(raw)  # was: LookupError when the file was read


def test_written_jsonl_survives_splitlines(tmp_path: Path):
    row = {"text": "a\u2028b\u2029c\x85d"}
    lines = write_jsonl(tmp_path / "out.jsonl", [row]).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == row  # was: 4 pieces, none of them JSON


def test_nan_confidence_is_no_confidence():
    from tunewise.config.curate import ConfidenceStep
    from tunewise.curate.base import Context
    from tunewise.curate.text_steps import Confidence
    from tunewise.data.records import Record

    records = [Record("classification", {"text": "t", "label": "a"}, "f", 1, {"confidence": math.nan})]
    step = Confidence(ConfidenceStep(step="confidence", min=0.7, keep_missing=False))
    (verdict,) = step(records, Context(seed=0))
    assert verdict.drop == "no 'confidence' value"  # was: kept, since NaN < 0.7 is False


def test_near_dedup_memory_stays_bounded_on_a_huge_record():
    from datasketch import MinHash

    from tunewise.curate.dedup import minhashes, shingles

    key = "".join(random.Random(0).choices(string.ascii_lowercase, k=120_000))  # ~120k distinct 5-char shingles
    tracemalloc.start()
    (signature,) = minhashes([key], "char", 5, 128)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 60e6, peak  # was ~150 MB: one [120k, 128] uint64 array and its temporaries
    (reference,) = MinHash.bulk([[s.encode() for s in shingles(key, "char", 5)]], num_perm=128)
    assert (signature.hashvalues == reference.hashvalues).all()  # the same signature, computed in batches


def _curate(tmp_path: Path, lines: list[str], kind: str = "classification", **extra) -> Path:
    train = tmp_path / "raw.jsonl"
    train.write_text("\n".join(lines) + "\n")
    steps = extra.pop("steps", [{"step": "validate"}, {"step": "exact_dedup"}, {"step": "split"}])
    config = {"data": {"kind": kind, "train": str(train)}, "curate": {"output": str(tmp_path / "out"), "steps": steps}}
    curate(validate_config({**config, **extra}), Console(quiet=True))
    return tmp_path / "out"


def test_curation_that_loses_every_record_still_writes_rejects_and_report(tmp_path: Path):
    out = _curate(tmp_path, ["not json", '{"text": ""}'])  # was: ConfigError from the split step
    assert len((out / "rejects.jsonl").read_text().splitlines()) == 2
    assert json.loads((out / "curation_report.json").read_text())["totals"] == {"input": 2, "kept": 0, "rejected": 2}


def test_labels_that_look_like_math_do_not_break_the_report(tmp_path: Path):
    lines = [
        json.dumps({"text": f"some text {i}", "label": label}) for i, label in enumerate(["$x^$", "a$b", "$$"] * 2)
    ]
    out = _curate(tmp_path, lines)  # was: ValueError from matplotlib's mathtext parser
    assert "data:image/png;base64," in (out / "curation_report.html").read_text()


def test_a_chat_the_model_template_cannot_render_is_dropped_not_fatal(tmp_path: Path, tiny_model_dir: Path):
    lines = [
        json.dumps({"messages": [{"role": "assistant", "content": "nothing before me"}]}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}),
    ]
    steps = [{"step": "validate", "max_tokens": 64}]
    out = _curate(tmp_path, lines, kind="chat", steps=steps, model={"name": str(tiny_model_dir)})
    (reject,) = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert reject["line"] == 1 and reject["category"] == "format:unrenderable"  # was: the whole curation stopped
    assert "empty conversation" in reject["reason"]
    assert len((out / "train.jsonl").read_text().splitlines()) == 1


def test_cli_curates_a_hostile_file_and_names_an_unreadable_one(tmp_path: Path):
    hostile = tmp_path / "hostile.csv"
    hostile.write_bytes(
        b'\xef\xbb\xbftext,label\r\nok \x00 nul,a\r\nbad \xff,b\r\n$x^$ label,$x^$\r\n"open quote,a\r\n'
    )
    config = tmp_path / "c.yaml"
    steps = [{"step": "validate"}, {"step": "quality", "min_words": 1}, {"step": "split"}]
    curate_cfg = {"output": str(tmp_path / "out"), "steps": steps}
    config.write_text(yaml.safe_dump({"data": {"train": str(hostile)}, "curate": curate_cfg}))
    result = CliRunner().invoke(app, ["curate", str(config)])
    assert result.exit_code == 0, result.output
    assert "input 4 = kept" in result.output and "Traceback" not in result.output
    hostile.write_text("text,label,label\nx,a,b\n")
    result = CliRunner().invoke(app, ["curate", str(config)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {hostile}:1: column 'label' appears twice in the header (rename one)"]
