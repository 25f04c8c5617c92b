"""SHA-256 of files, read in chunks: a multi-gigabyte GGUF or data file is hashed without being held in memory."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of the file's bytes; `hashlib.file_digest` reads it through one fixed-size buffer."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
