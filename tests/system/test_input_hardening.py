"""Data input defects and adversarial files: each ends in a one-line error,
a reject with a reason, or working behaviour, with nothing lost, no traceback and no hang.

1. every record rejected (data.on_error: skip): rejects.jsonl is written before the error, which names it;
2. paths: symlink loops, directories, empty files, pipes, devices, unreadable and oddly named files, and
   CSV quotes that never close (the rows after them are read as rows of their own);
3. hostile sizes: a 50 MB record is rejected or truncated without being tokenized whole;
4. adversarial JSONL/CSV/Parquet files not covered by tests/system/test_fuzz_inputs.py.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

import tunewise.data.readers as readers
from tunewise.cli import app
from tunewise.config import DataConfig, PromptConfig, validate_config
from tunewise.curate.stage import curate
from tunewise.data.encode import encode_records, encode_segments, first_tokens
from tunewise.data.files import check_data_file
from tunewise.data.jsonl import write_jsonl
from tunewise.data.splits import load_file, load_splits
from tunewise.errors import DataError

BAD_ROWS = '{"text": "no label here"}\n{"text": "nor here"}\n'  # each rejected: field 'label' missing


def _load(path: Path, kind: str = "classification", **options):
    return load_file(path, DataConfig(kind=kind, train=path, on_error="skip", **options))


def _cli(*args: object):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output and (result.exception is None or isinstance(result.exception, SystemExit))
    return result


def _error(*args: object) -> str:
    """The one error line of a command that must fail with exit code 2."""
    result = _cli(*args)
    assert result.exit_code == 2, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("error:")]
    return line


def _rejects(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def _run_dirs(output: Path) -> list[Path]:
    return [p for p in output.iterdir() if p.is_dir()] if output.exists() else []


# -- 1. every record rejected: the reasons are written before the error -----------------------------------


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_load_splits_saves_every_reject_before_failing(tmp_path: Path, tiny_data: dict[str, Path], split: str):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(BAD_ROWS)
    cfg = DataConfig(kind="classification", on_error="skip", **{**tiny_data, split: bad})
    saved: list = []

    def save(rejects):
        saved.extend(rejects)
        return tmp_path / "run" / "rejects.jsonl"

    with pytest.raises(DataError) as info:
        load_splits(cfg, seed=0, save_rejects=save)
    name = "training" if split == "train" else split
    saved_to = tmp_path / "run" / "rejects.jsonl"
    assert str(info.value) == (  # was: "no usable ... (see rejects.jsonl for reasons)" and nothing written
        f"{bad}: no usable {name} records: all 2 were rejected (see {saved_to} for the reasons)"
    )
    assert [(r.source, r.line, r.field, r.reason) for r in saved] == [
        (str(bad), 1, "label", "missing"),
        (str(bad), 2, "label", "missing"),
    ]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_cli_run_writes_rejects_before_stopping(write_config, tmp_path: Path, split: str):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(BAD_ROWS)
    line = _error("run", write_config(data={split: str(bad), "on_error": "skip"}))
    (run_dir,) = _run_dirs(tmp_path / "runs")
    rejects = run_dir / "rejects.jsonl"
    name = "training" if split == "train" else split
    assert line == f"error: {bad}: no usable {name} records: all 2 were rejected (see {rejects} for the reasons)"
    assert [(r["line"], r["field"], r["reason"]) for r in _rejects(rejects)] == [(1, "label", "missing")] * 1 + [
        (2, "label", "missing")
    ]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_cli_run_with_curation_names_the_curation_rejects(write_config, tmp_path: Path, split: str):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(BAD_ROWS)
    out = tmp_path / "curated"
    curate_cfg = {"output": str(out), "steps": [{"step": "validate"}]}
    line = _error("run", write_config(data={split: str(bad)}, curate=curate_cfg))
    # was, for val/test: the run went on, splitting val/test off the training data without a word
    name = "training" if split == "train" else split
    expected = f"error: {bad}: no usable {name} records: curation rejected all 2 (see {out / 'rejects.jsonl'} for"
    assert line.startswith(expected), line
    assert {(r["source"], r["reason"]) for r in _rejects(out / "rejects.jsonl")} == {(str(bad), "missing")}
    assert not _run_dirs(tmp_path / "runs")  # curation runs before the run directory is made


def test_cli_curate_writes_rejects_and_warns_when_nothing_is_left(write_config, tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(BAD_ROWS)
    out = tmp_path / "curated"
    result = _cli(
        "curate", write_config(data={"val": str(bad)}, curate={"output": str(out), "steps": [{"step": "validate"}]})
    )
    assert result.exit_code == 0, result.output
    assert f"warning: {bad}: no usable val records: curation rejected all 2" in result.output
    assert len(_rejects(out / "rejects.jsonl")) == 2


# -- 2. paths -----------------------------------------------------------------------------------------------


def test_symlink_loop_is_a_one_line_error_and_leaves_no_run_directory(write_config, tmp_path: Path):
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    line = _error("run", write_config(data={"train": str(loop)}))  # was: RuntimeError traceback
    assert line == f"error: {loop}: symlink loop: the link leads back to itself (point the path at the real file)"
    assert not _run_dirs(tmp_path / "runs")  # was: an empty run directory left behind


def test_bad_eval_paths_also_fail_before_the_run_directory(write_config, tmp_path: Path):
    line = _error("run", write_config(data={"test": str(tmp_path)}))
    assert line == f"error: {tmp_path}: is a directory, not a data file (name a .jsonl, .csv or .parquet file)"
    packed = tmp_path / "val.jsonl.gz"
    packed.write_bytes(gzip.compress(b'{"text": "x", "label": "a"}\n'))
    line = _error("run", write_config(data={"val": str(packed)}))
    assert line == f"error: {packed}: the file is gzip-compressed, not JSONL (decompress it first, e.g. gunzip)"
    assert not _run_dirs(tmp_path / "runs")


def test_curate_checks_every_path_before_writing(write_config, tmp_path: Path):
    out = tmp_path / "curated"
    line = _error(
        "curate", write_config(data={"val": str(tmp_path / "gone.jsonl")}, curate={"output": str(out), "steps": []})
    )
    assert line.startswith(f"error: {tmp_path / 'gone.jsonl'}: file not found")
    assert not out.exists()


def test_empty_training_file_is_named_not_the_validation_file(write_config, tmp_path: Path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    line = _error("run", write_config(data={"train": str(empty)}))
    # was: "val.jsonl:1: field 'label': unknown label 'negative' (known: , from the training file)"
    assert (
        line
        == f"error: {empty}: no usable training records: the file is empty (or has only blank lines) (check data.train)"
    )


@pytest.mark.parametrize("split", ["val", "test"])
def test_empty_eval_file_is_named(tmp_path: Path, tiny_data: dict[str, Path], split: str):
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    with pytest.raises(DataError, match=rf"^{empty}: no usable {split} records: the file is empty"):
        load_splits(DataConfig(kind="classification", **{**tiny_data, split: empty}), seed=0)


def _check_in_thread(path: Path) -> str:
    """check_data_file's error, from a thread: a test that would hang fails instead."""
    outcome: list[str] = []

    def target() -> None:
        try:
            check_data_file(path)
            outcome.append("accepted")
        except DataError as exc:
            outcome.append(str(exc))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    assert outcome, f"{path}: checking the path hung"
    return outcome[0]


def test_pipes_and_devices_are_refused_without_reading_them(tmp_path: Path):
    fifo = tmp_path / "train.jsonl"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    assert (
        _check_in_thread(fifo)
        == f"{fifo}: is a named pipe (FIFO), not a regular file (copy the data into a file first)"
    )
    message = _check_in_thread(Path("/dev/zero"))  # would never end
    assert message == "/dev/zero: is a character device, not a regular file (copy the data into a file first)"
    with pytest.raises(DataError, match="is a named pipe"):
        _load(fifo)


def test_path_problems_say_what_is_wrong(tmp_path: Path):
    broken = tmp_path / "broken.jsonl"
    broken.symlink_to(tmp_path / "moved.jsonl")
    assert _check_in_thread(broken).startswith(f"{broken}: broken symlink: its target {tmp_path / 'moved.jsonl'}")
    tilde = tmp_path / "~" / "data" / "train.jsonl"  # a '~' inside a path is a folder name, as in a shell
    assert _check_in_thread(tilde) == (
        f"{tilde}: file not found ('~' means the home folder only at the start of a path; write the full path)"
    )
    under_a_file = tmp_path / "broken.jsonl.d" / "x.jsonl"
    (tmp_path / "broken.jsonl.d").write_text("")
    assert _check_in_thread(under_a_file).endswith("file not found (check the path in data.train/val/test)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_named(tmp_path: Path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "x", "label": "a"}\n')
    path.chmod(0)
    assert _check_in_thread(path) == f"{path}: cannot be opened: Permission denied (check its permissions)"


def test_a_file_name_that_is_not_utf8_is_printable_everywhere(tmp_path: Path):
    raw = os.fsencode(tmp_path) + b"/caf\xe9.jsonl"  # latin-1 "café": not UTF-8
    path = Path(os.fsdecode(raw))
    Path(raw.decode("utf-8", "surrogateescape")).write_bytes(b'{"text": "ok words", "label": "a"}\n{"text": 1}\n')
    records, rejects, _ = _load(path)
    shown = f"{tmp_path}/caf\\xe9.jsonl"
    assert records[0].source == rejects[0].source == shown  # was: a lone surrogate, unwritable as UTF-8
    write_jsonl(tmp_path / "rejects.jsonl", [r.to_json() for r in rejects])
    assert _check_in_thread(Path(os.fsdecode(raw + b"x"))).startswith(f"{shown}x: file not found")


# -- 2. CSV quotes that never close ------------------------------------------------------------------------


def _csv(tmp_path: Path, text: str, newline: str = "\n") -> Path:
    path = tmp_path / "t.csv"
    path.write_bytes(text.replace("\n", newline).encode())
    return path


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_an_unterminated_quote_no_longer_swallows_the_rows_after_it(tmp_path: Path, newline: str):
    path = _csv(tmp_path, 'text,label\ngood one,a\n"open quote,b\nnext row,c\nlast row,a\n', newline)
    records, rejects, total = _load(path)
    # was: one reject at line 3 holding lines 3-5 as a single field; rows 4 and 5 silently gone
    assert total == 4 and [(r.line, r.fields["text"]) for r in records] == [
        (2, "good one"),
        (4, "next row"),
        (5, "last row"),
    ]
    (reject,) = rejects
    assert reject.line == 3 and reject.reason.startswith(
        "unterminated quote: the quoted field opened on line 3 never closes "
        "(the 2 line(s) after it are read as rows of their own); close the quote, or double a quote"
    )
    assert reject.to_json()["category"] == "format:unbalanced_quote"


def test_a_stray_quote_closed_by_a_later_one_is_found_too(tmp_path: Path):
    path = _csv(tmp_path, 'text,label\n"stray,a\nplain,b\n"quoted, fine",c\n')
    records, rejects, total = _load(path)
    # was: lines 2-4 merged into one record, 'stray,a\nplain,b\n' + 'quoted, fine"'
    assert total == 3 and [(r.line, r.fields["text"]) for r in records] == [(3, "plain"), (4, "quoted, fine")]
    assert rejects[0].line == 2 and rejects[0].reason.startswith(
        "unbalanced quote: the quoted field opened on line 2 runs on to line 4"
    )


def test_the_quote_is_named_where_it_opens_inside_a_multiline_record(tmp_path: Path):
    path = _csv(tmp_path, 'text,label\n"two\nlines","open\nx,b\n')
    records, rejects, _ = _load(path)
    assert [r.line for r in records] == [4] and rejects[0].line == 2
    assert "the quoted field opened on line 3 never closes" in rejects[0].reason


def test_legal_and_sloppy_quoting_still_reads(tmp_path: Path):
    path = _csv(tmp_path, 'text,label\n"multi\nline, ""quoted""",a\n"sloppy" text,b\nhe said "hi",c\n')
    records, rejects, _ = _load(path)
    assert not rejects
    assert [(r.line, r.fields["text"]) for r in records] == [
        (2, 'multi\nline, "quoted"'),
        (4, "sloppy text"),  # one line, nothing merged: read as Excel and csv's default mode read it
        (5, 'he said "hi"'),
    ]


def test_a_broken_quote_in_the_header_is_a_file_error(tmp_path: Path):
    with pytest.raises(DataError, match=r"t.csv:1: the header: unterminated quote: the quoted field opened on line 1"):
        _load(_csv(tmp_path, '"text,label\nx,a\n'))


def test_many_unterminated_quotes_stay_linear(tmp_path: Path):
    lines = ['"x' if i % 2 else f"row {i},a" for i in range(4000)]
    path = _csv(tmp_path, "text,label\n" + "\n".join(lines) + "\n")
    started = time.perf_counter()
    records, rejects, total = _load(path)
    assert time.perf_counter() - started < 10
    assert total == 4000 and len(records) == len(rejects) == 2000


# -- 3. hostile sizes -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _big_line(tmp_path: Path, row: dict) -> Path:
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps({"text": "fine", "label": "a"}) + "\n")
    return path


def _encode_bounded(path: Path, kind: str, tokenizer, max_length: int = 64):
    from tunewise.data.prompt import PromptRenderer

    tracemalloc.start()
    started = time.perf_counter()
    records, _, _ = _load(path, kind=kind)
    renderer = PromptRenderer(PromptConfig(), kind, tokenizer, ["a"])
    encoded, bad = encode_records(records, renderer, tokenizer, max_length)
    seconds, peak = time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return encoded, bad, seconds, peak


def test_a_50_mb_record_is_rejected_quickly_as_over_long(tmp_path: Path, tokenizer):
    path = _big_line(tmp_path, {"text": "word " * (10 << 20), "label": "a"})  # 50 MB of text
    encoded, bad, seconds, peak = _encode_bounded(path, "classification", tokenizer)
    # was: 8.7M tokens, 6.7 GB and 90 s before the same rejection
    assert len(encoded) == 1 and [r.line for r in bad] == [1]
    assert bad[0].to_json()["category"] == "length:too_many_tokens" and "train.max_length=64" in bad[0].reason
    assert seconds < 5 and peak < 400e6, (seconds, peak)  # the line, its text, one rendered copy


def test_a_50_mb_answer_is_truncated_quickly_as_before(tmp_path: Path, tokenizer):
    path = _big_line(tmp_path, {"prompt": "Tell me:", "completion": "word " * (10 << 20), "text": "x", "label": "a"})
    encoded, bad, seconds, peak = _encode_bounded(path, "completion", tokenizer)
    assert not bad and encoded[0].truncated and len(encoded[0].input_ids) == 64
    assert seconds < 5 and peak < 400e6, (seconds, peak)


def test_a_long_prompt_below_the_render_limit_is_rejected_with_the_usual_reason(tmp_path: Path, tokenizer):
    path = _big_line(tmp_path, {"text": "word " * 150_000, "label": "a"})  # 750k characters, ~300k tokens
    _, bad, seconds, _ = _encode_bounded(path, "classification", tokenizer)
    assert seconds < 5
    assert bad[0].reason == (
        "answer cut entirely by train.max_length=64 (prompt is over 1024 tokens); "
        "raise train.max_length or shorten the prompt"
    )
    assert bad[0].to_json()["category"] == "length:too_many_tokens"


def test_bounded_tokenization_gives_the_same_tokens(tokenizer):
    rng = random.Random(0)
    words = ["the", "car", "ride", "très", "naïve", "😀", "\n", "  ", "antidisestablishmentarianism", "1234567"]
    for trial in range(200):
        text = " ".join(rng.choices(words, k=rng.choice([1, 10, 300, 3000])))
        if trial % 3 == 0:
            text = text.replace(" ", "")  # no spaces to cut at
        full = tokenizer(text, add_special_tokens=False)["input_ids"]
        for limit in (0, 1, 7, 64, 500):
            assert first_tokens(tokenizer, text, limit) == (full[:limit], len(full) > limit), (trial, limit)


def test_bounded_encoding_matches_whole_text_encoding(tokenizer):
    from tunewise.data.prompt import Segment

    rng = random.Random(1)
    for _ in range(50):
        segments = [
            Segment(" ".join(rng.choices(["great", "trip", "é", "😀"], k=rng.randint(1, 400))), i % 2 == 1)
            for i in range(3)
        ]
        whole = []
        for segment in segments:
            whole += tokenizer(segment.text, add_special_tokens=False)["input_ids"]
        item = encode_segments(segments, tokenizer, 64, [])
        assert item.input_ids == whole[:64] and item.truncated == (len(whole) > 64)


def test_a_line_past_the_record_limit_is_skipped_without_being_read_whole(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(readers, "MAX_RECORD_BYTES", 1 << 20)
    path = tmp_path / "t.jsonl"
    with path.open("wb") as fh:
        long_line = b'{"text": "' + b"x" * (8 << 20) + b'", "label": "a"}\n'
        fh.write(long_line + b'{"text": "fine", "label": "a"}\n')
        fh.write(b"y" * (3 << 20))  # and a last line with no line break at all
    tracemalloc.start()
    records, rejects, total = _load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert total == 3 and [r.line for r in records] == [2] and peak < 6e6, peak
    assert {r.to_json()["category"] for r in rejects} == {"length:record_too_large"}
    assert [(r.line, r.reason) for r in rejects] == [
        (1, f"record too large: {len(long_line):,} bytes, over the 1 MiB one record may hold; shorten it"),
        (3, f"record too large: {3 << 20:,} bytes, over the 1 MiB one record may hold; shorten it"),
    ]


@pytest.mark.parametrize("quoted", [True, False])
def test_a_csv_record_past_the_limit_is_a_file_error(tmp_path: Path, monkeypatch, quoted: bool):
    monkeypatch.setattr(readers, "MAX_RECORD_BYTES", 1 << 20)
    path = tmp_path / "t.csv"
    body = '"never closed\n' + "more text\n" * 200_000 if quoted else "x" * (2 << 20) + ",a\n"
    path.write_text("text,label\nok,a\n" + body)
    expected = (
        r"t.csv:3: record too large: over 1 MiB; the quoted field opened on line 3 never closes \(close the quote"
        if quoted
        else r"t.csv:3: record too large: over 1 MiB \(shorten it, or check that the file is CSV\)"
    )
    with pytest.raises(DataError, match=expected):
        _load(path)


def test_a_parquet_value_past_the_limit_rejects_its_row(tmp_path: Path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(readers, "MAX_RECORD_BYTES", 1 << 20)
    pq.write_table(
        pa.table({"text": ["ok", "x" * (2 << 20), "fine"], "label": ["a", "a", "a"]}), tmp_path / "t.parquet"
    )
    records, rejects, total = _load(tmp_path / "t.parquet")
    assert total == 3 and [r.line for r in records] == [1, 3]
    assert rejects[0].line == 2 and rejects[0].reason.startswith("record too large: 2,097,")


def test_curate_measures_a_huge_record_without_tokenizing_it_whole(tmp_path: Path, tiny_model_dir: Path):
    train = tmp_path / "raw.jsonl"
    rows = [{"prompt": "Say:", "completion": "word " * (4 << 20)}, {"prompt": "Say:", "completion": "short"}]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = validate_config(
        {
            "model": {"name": str(tiny_model_dir)},
            "data": {"kind": "completion", "train": str(train)},
            "curate": {"output": str(tmp_path / "out"), "steps": [{"step": "validate", "max_tokens": 64}]},
        }
    )
    started = time.perf_counter()
    curate(config, Console(quiet=True))
    assert time.perf_counter() - started < 20  # was: 4M tokens counted one by one
    (reject,) = _rejects(tmp_path / "out" / "rejects.jsonl")
    assert reject["line"] == 1 and reject["category"] == "length:too_many_tokens"
    assert reject["reason"].endswith("tokens > max_tokens 64")


# -- 4. adversarial files -----------------------------------------------------------------------------------


def test_compressed_and_binary_files_are_named_not_read_as_garbage(tmp_path: Path):
    gz = tmp_path / "train.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"text": "x", "label": "a"}\n' * 100))
    with pytest.raises(DataError, match=r"train.jsonl.gz: the file is gzip-compressed, not JSONL \(decompress it"):
        _load(gz)
    import pyarrow as pa
    import pyarrow.parquet as pq

    fake = tmp_path / "train.csv"
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": ["x"], "label": ["a"]}), buffer)
    fake.write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match=r"the file is a Parquet file, not CSV \(name it .parquet or set data.format"):
        _load(fake)


def test_utf16_text_read_as_utf8_is_named(tmp_path: Path):
    path = tmp_path / "t.csv"
    path.write_bytes("text,label\nhello,a\n".encode("utf-16"))  # with its byte order mark
    with pytest.raises(DataError, match=r"the file is UTF-16 text .* \(set data.encoding: utf-16\)"):
        _load(path)
    records, _, _ = _load(path, encoding="utf-16")
    assert records[0].fields == {"text": "hello", "label": "a"}


def test_text_that_starts_like_a_signature_is_still_text(tmp_path: Path):
    path = _csv(tmp_path, "BZh9,PK\x03\x04,text,label\n1,2,hello,a\n")
    records, rejects, _ = _load(path)
    assert not rejects and records[0].fields["text"] == "hello"


def test_deep_nesting_has_one_fixed_bound(tmp_path: Path):
    path = tmp_path / "t.jsonl"
    deep = "[" * 150 + "]" * 150
    # without a fixed bound, a depth near 1000 parsed in `tunewise curate` but failed `tunewise run` (deeper stack)
    path.write_text(
        f'{{"text": "ok", "label": "a", "x": {deep}}}\n{{"text": "ok", "label": "a", "y": {{"z": [[1]]}}}}\n'
        f'{{"text": "ok", "label": "a", "x": {"[" * 500 + "]" * 500}}}\n'
    )
    records, rejects, _ = _load(path)
    assert [r.line for r in records] == [2]
    assert [(r.line, r.field, r.reason) for r in rejects] == [
        (1, "x", "value nested more than 100 levels deep; flatten it"),
        (3, "x", "value nested more than 100 levels deep; flatten it"),
    ]


def test_json_numbers_past_float_range(tmp_path: Path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": 1e999999, "label": "a"}\n{"text": "ok", "label": "a", "score": -1e999999}\n')
    records, rejects, _ = _load(path)
    assert [(r.line, r.field, r.reason) for r in rejects] == [(1, "text", "expected a string, got float")]
    write_jsonl(tmp_path / "out.jsonl", [r.to_row() for r in records])  # an infinite extra column still writes


def test_bom_and_mixed_line_endings_keep_line_numbers(tmp_path: Path):
    path = tmp_path / "t.csv"
    path.write_bytes(b'\xef\xbb\xbftext,label\r\none,a\ntwo,b\rthree,c\r\n"multi\r\nline",d\n')
    records, rejects, total = _load(path)
    assert not rejects and total == 4
    assert [(r.line, r.fields["text"]) for r in records] == [(2, "one"), (3, "two"), (4, "three"), (5, "multi\r\nline")]


def test_hostile_parquet_schemas(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def load(name: str, table):
        pq.write_table(table, tmp_path / f"{name}.parquet")
        return _load(tmp_path / f"{name}.parquet")

    nested = pa.int64()
    value: object = 1
    for _ in range(150):
        nested, value = pa.list_(nested), [value]
    with pytest.raises(DataError, match="not a readable Parquet file: Parquet schema too deeply nested"):
        load("deep", pa.table({"text": ["hi"], "label": ["a"], "x": pa.array([value], nested)}))
    text_as_map = pa.array([[("k", "v")]], pa.map_(pa.string(), pa.string()))
    _, rejects, _ = load("map", pa.table({"text": text_as_map, "label": ["a"]}))
    assert (rejects[0].field, rejects[0].reason) == ("text", "expected a string, got list")
    _, rejects, _ = load("nul", pa.table({"te\x00xt": ["hi"], "label": ["a"]}))
    assert (rejects[0].field, rejects[0].reason) == ("text", "missing")
    wide = {f"c{i}": ["x"] for i in range(3000)}
    records, _, _ = load("wide", pa.table({**wide, "text": ["hi"], "label": ["a"]}))
    assert records[0].fields == {"text": "hi", "label": "a"}
    with pytest.raises(DataError, match="no usable training records: the file is empty"):
        path = tmp_path / "nothing.parquet"
        pq.write_table(pa.table({"text": pa.array([], pa.string()), "label": pa.array([], pa.string())}), path)
        load_splits(DataConfig(kind="classification", train=path), seed=0)


def test_cli_reports_a_runaway_csv_quote_and_trains_on_the_rest(tmp_path: Path, tiny_model_dir: Path):
    """End to end through `tunewise curate`: the rows after a broken quote reach the curated splits."""
    raw = tmp_path / "raw.csv"
    rows = [f"the car ride {i} was great,positive" for i in range(10)]
    raw.write_text("text,label\n" + rows[0] + '\n"broken quote,negative\n' + "\n".join(rows[1:]) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {"data": {"train": str(raw)}, "curate": {"output": str(tmp_path / "out"), "steps": [{"step": "validate"}]}}
        )
    )
    result = _cli("curate", config)
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "out" / "train.jsonl").read_text().splitlines()) == 10  # was: 1
    (reject,) = _rejects(tmp_path / "out" / "rejects.jsonl")
    assert reject["line"] == 3 and reject["category"] == "format:unbalanced_quote"
