"""Writing JSONL: splits, predictions, rejects and metrics all use this one format."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# ensure_ascii=False leaves U+0085, U+2028 and U+2029 raw, and str.splitlines() (like JavaScript) breaks
# lines at them: a reader splitting our files that way would cut a record in two. Inside a JSON string
# (the only place they can occur) the \u escape means the same character.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]], append: bool = False) -> Path:
    with path.open("a" if append else "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(jsonl_line(row))
    return path


def jsonl_line(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, default=str).translate(_LINE_BREAKS) + "\n"
