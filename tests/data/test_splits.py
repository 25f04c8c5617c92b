import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunewise.config import DataConfig
from tunewise.data import load_splits
from tunewise.data.splits import load_file
from tunewise.errors import DataError


def _cfg(train: Path, **kw) -> DataConfig:
    return DataConfig(train=train, **kw)


def _rows(n: int = 30) -> list[dict]:
    return [{"text": f"text number {i}", "label": ["a", "b", "c"][i % 3]} for i in range(n)]


def test_jsonl_csv_parquet_read_to_the_same_records(tmp_path: Path):
    rows = _rows(6)
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    csv_text = "\ufefftext,label\r\n" + "".join(f"{r['text']},{r['label']}\r\n" for r in rows)
    (tmp_path / "d.csv").write_text(csv_text, encoding="utf-8")  # BOM + CRLF
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    seen = []
    for name in ("d.jsonl", "d.csv", "d.parquet"):
        records, rejects, total = load_file(tmp_path / name, _cfg(tmp_path / name))
        assert total == 6 and not rejects
        seen.append([(r.fields["text"], r.fields["label"]) for r in records])
    assert seen[0] == seen[1] == seen[2]
    assert [r.line for r in load_file(tmp_path / "d.csv", _cfg(tmp_path / "d.csv"))[0]][:2] == [2, 3]


def test_malformed_jsonl_line_names_file_and_line(tmp_path: Path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "ok", "label": "a"}\n{"text": "broken", \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train.jsonl:2: invalid JSON"):
        load_file(path, _cfg(path))


def test_missing_field_names_the_column_and_the_fix(tmp_path: Path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "ok", "label": "a"}\n{"txt": "x", "label": "a"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train.jsonl:2: field 'text': missing.*on_error: skip"):
        load_file(path, _cfg(path))


def test_skip_mode_sends_every_bad_record_to_rejects_with_a_reason(tmp_path: Path):
    path = tmp_path / "train.jsonl"
    lines = [json.dumps(r) for r in _rows(9)]
    lines[2] = "not json"
    lines[4] = json.dumps({"text": "   ", "label": "a"})
    lines[6] = json.dumps({"text": "fine", "label": 3})
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"text": "\xff\xfe", "label": "a"}\n')
    records, rejects, total = load_file(path, _cfg(path, on_error="skip"))
    assert total == 10 and len(records) + len(rejects) == total
    assert [(r.line, r.field) for r in rejects] == [(3, None), (5, "text"), (7, "label"), (10, None)]
    assert "empty" in rejects[1].reason and "not valid utf-8 at byte" in rejects[3].reason
    assert [r.to_json()["category"] for r in rejects] == [
        "format:invalid_json",
        "format:empty_field",
        "format:data_type",
        "format:invalid_encoding",
    ]


def test_an_unknown_label_is_an_unknown_label_whatever_it_or_the_known_labels_say(tmp_path: Path):
    """Labels are quoted in the reason; words in them ("empty", "missing") never change the category."""
    train = tmp_path / "train.jsonl"
    rows = [{"text": f"text {i}", "label": ["missing", "b"][i % 2]} for i in range(20)]
    rows += [{"text": "x", "label": "empty"}, {"text": "y", "label": "invalid JSON"}]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    splits = load_splits(_cfg(train, on_error="skip", labels=["missing", "b"]), seed=0)
    assert [(r.stage, r.field, r.to_json()["category"]) for r in splits.rejects] == [
        ("labels", "label", "label:unknown_label"),
        ("labels", "label", "label:unknown_label"),
    ]
    assert splits.rejects[0].reason == "unknown label 'empty' (known: missing, b)"


def test_unknown_label_in_test_split_is_an_error_listing_known_labels(tmp_path: Path):
    train = tmp_path / "train.jsonl"
    test = tmp_path / "test.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in _rows(30)), encoding="utf-8")
    test.write_text(json.dumps({"text": "x", "label": "postive"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"test.jsonl:1: field 'label': unknown label 'postive' \(known: a, b, c"):
        load_splits(_cfg(train, test=test), seed=0)
    # skipped, the only test record is gone: an empty test split is an error, not a crash in the metrics
    with pytest.raises(DataError, match=r"test.jsonl: no usable test records"):
        load_splits(_cfg(train, test=test, on_error="skip", labels=["a", "b", "c"]), seed=0)
    test.write_text(
        json.dumps({"text": "x", "label": "postive"}) + "\n" + json.dumps({"text": "y", "label": "a"}) + "\n"
    )
    splits = load_splits(_cfg(train, test=test, on_error="skip", labels=["a", "b", "c"]), seed=0)
    assert [r.line for r in splits.test] == [2] and splits.rejects[0].stage == "labels"


def test_field_mapping_and_extra_columns(tmp_path: Path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"tweet": "hi", "sentiment": "a", "confidence": 0.5}) + "\n", encoding="utf-8")
    records, _, _ = load_file(path, _cfg(path, fields={"text": "tweet", "label": "sentiment"}))
    assert records[0].fields == {"text": "hi", "label": "a"} and records[0].extra == {"confidence": 0.5}


def test_missing_splits_are_cut_stratified_and_reproducibly(tmp_path: Path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(60)), encoding="utf-8")
    cfg = _cfg(path, val_fraction=0.2, test_fraction=0.2)
    first, again = load_splits(cfg, seed=3), load_splits(cfg, seed=3)
    assert len(first.train) + len(first.val) + len(first.test) == 60
    assert {r.fields["label"] for r in first.test} == {"a", "b", "c"}
    assert [r.line for r in first.val] == [r.line for r in again.val]
    assert [r.line for r in load_splits(cfg, seed=4).val] != [r.line for r in first.val]


def test_chat_records_are_checked(tmp_path: Path):
    path = tmp_path / "chat.jsonl"
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    no_answer = {"messages": [{"role": "user", "content": "hi"}]}
    bad_role = {"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "x"}]}
    path.write_text("\n".join(json.dumps(r) for r in (good, no_answer, bad_role)) + "\n", encoding="utf-8")
    records, rejects, _ = load_file(path, _cfg(path, kind="chat", on_error="skip"))
    assert len(records) == 1
    assert "no assistant turn" in rejects[0].reason and "unknown role 'bot'" in rejects[1].reason


def test_missing_file_is_named(tmp_path: Path):
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        load_file(tmp_path / "nope.jsonl", _cfg(tmp_path / "nope.jsonl"))


def test_long_csv_fields_and_broken_csv_are_handled(tmp_path: Path):
    path = tmp_path / "long.csv"
    path.write_text('text,label\n"' + "word " * 40000 + '",a\n', encoding="utf-8")  # 200 KB field
    records, rejects, total = load_file(path, _cfg(path))
    assert total == 1 and not rejects and len(records[0].fields["text"]) > 150_000


def test_empty_validation_file_is_an_error(tmp_path: Path):
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in _rows(30)), encoding="utf-8")
    val.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="val.jsonl: no usable val records"):
        load_splits(_cfg(train, val=val), seed=0)


def test_split_keeps_copies_of_a_text_on_one_side(tmp_path: Path):
    rows = [{"text": f"tweet {i % 20}" if i % 2 else f"TWEET  {i % 20}", "label": "a"} for i in range(80)]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    splits = load_splits(_cfg(path, val_fraction=0.2, test_fraction=0.2), seed=1)
    keys = {
        name: {" ".join(r.text.casefold().split()) for r in getattr(splits, name)} for name in ("train", "val", "test")
    }
    assert not (keys["train"] & keys["test"]) and not (keys["train"] & keys["val"]) and not (keys["val"] & keys["test"])
    assert splits.test and splits.val
