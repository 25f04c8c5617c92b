"""core.hashing: the SHA-256 of a file is that of its bytes, computed without holding the file in memory."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest

from tunewise.core.hashing import sha256_file


@pytest.mark.parametrize("size", [0, 1, (1 << 18) - 1, 1 << 18, 3 * (1 << 18) + 17])
def test_the_digest_is_the_sha256_of_the_bytes(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)  # sizes around the read buffer: a chunk boundary loses or repeats no byte
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_one_changed_byte_changes_the_digest(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    data = bytearray(os.urandom(4096))
    path.write_bytes(data)
    before = sha256_file(path)
    data[2048] ^= 1
    path.write_bytes(data)
    assert sha256_file(path) != before


def test_a_large_file_is_streamed_not_read_whole(tmp_path: Path) -> None:
    size = 24 << 20
    path = tmp_path / "large.bin"
    with path.open("wb") as fh:
        for _ in range(size >> 20):
            fh.write(os.urandom(1 << 20))
    tracemalloc.start()
    try:
        sha256_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"hashing a {size >> 20} MB file held {peak / (1 << 20):.1f} MB at once"


def test_a_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        sha256_file(tmp_path / "absent.bin")
