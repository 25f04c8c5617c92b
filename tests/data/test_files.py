"""data/files.py: whether a path is a data file that can be read, checked before anything is created."""

from __future__ import annotations

import bz2
import gzip
import os
from pathlib import Path

import pytest

from tunewise.data.files import check_data_file, check_readable, detect_format, display_path, refuse_binary
from tunewise.errors import ConfigError, DataError


def test_display_path_shows_bytes_that_are_not_utf8_as_escapes():
    path = Path(os.fsdecode(b"/data/caf\xe9.jsonl"))
    assert display_path(path) == "/data/caf\\xe9.jsonl"
    assert display_path("/data/café.jsonl") == "/data/café.jsonl"
    display_path(path).encode("utf-8")  # always writable


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.jsonl", "jsonl"), ("a.JSON", "jsonl"), ("a.ndjson", "jsonl"), ("a.csv", "csv"), ("a.v2.parquet", "parquet")],
)
def test_detect_format_by_suffix(name: str, fmt: str):
    assert detect_format(Path(name)) == fmt


def test_a_declared_format_wins_and_an_unknown_suffix_is_a_data_error():
    assert detect_format(Path("a.txt"), "csv") == "csv"
    with pytest.raises(DataError, match=r"a.txt: unknown file type \(use .jsonl, .csv or .parquet, or set data.format"):
        detect_format(Path("a.txt"))


def test_check_readable_gives_the_format_of_a_good_file(tmp_path: Path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "x"}\n', encoding="utf-8")
    assert check_readable(path) == "jsonl"
    assert check_readable(path, "csv", "latin-1") == "csv"


def test_an_unknown_encoding_is_a_config_error(tmp_path: Path):
    path = tmp_path / "d.jsonl"
    path.write_text("{}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="data.encoding: unknown encoding 'klingon'"):
        check_readable(path, encoding="klingon")


def test_paths_that_are_no_data_file_say_what_they_are(tmp_path: Path):
    with pytest.raises(DataError, match=r"nope.jsonl: file not found \(check the path in data.train/val/test\)"):
        check_data_file(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match=r"is a directory, not a data file"):
        check_data_file(tmp_path)
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    with pytest.raises(DataError, match="symlink loop"):
        check_data_file(loop)
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"is a named pipe \(FIFO\), not a regular file"):
        check_data_file(fifo)
    with pytest.raises(DataError, match="the path contains a NUL character"):
        check_data_file(Path("a\x00b.jsonl"))


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (gzip.compress(b'{"text": "x"}\n' * 50), "gzip-compressed"),
        (bz2.compress(b'{"text": "x"}\n' * 50), "bzip2-compressed"),
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00\xff\xfe", "a zip archive"),
    ],
)
def test_compressed_files_are_refused_by_their_signature(tmp_path: Path, data: bytes, what: str):
    path = tmp_path / "d.jsonl"
    path.write_bytes(data)
    with pytest.raises(DataError, match=f"the file is {what}, not JSONL"):
        refuse_binary(path, "jsonl", "utf-8")


def test_utf16_text_read_as_utf8_names_the_encoding_to_set(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_bytes("text\nhi\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"the file is UTF-16 text .*set data.encoding: utf-16"):
        refuse_binary(path, "csv", "utf-8")
    refuse_binary(path, "csv", "utf-16")  # read as what it is: no error


def test_text_that_starts_like_a_signature_is_text(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text("PK,BZh\n1,2\n", encoding="utf-8")
    refuse_binary(path, "csv", "utf-8")
    assert check_readable(path) == "csv"
