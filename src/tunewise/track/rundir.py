"""runs/<timestamp>-<name>/: resolved config, metrics.jsonl, adapter/, eval.json, rejects.jsonl."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewise.config import Config, dump_config
from tunewise.data.jsonl import write_jsonl
from tunewise.data.records import Reject


@dataclass
class RunDir:
    path: Path

    def write_json(self, name: str, payload: Any) -> Path:
        target = self.path / name
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(target)  # readers never see a half-written file
        return target

    def write_jsonl(self, name: str, rows: list[dict[str, Any]], append: bool = False) -> Path:
        return write_jsonl(self.path / name, rows, append)

    def write_rejects(self, rejects: list[Reject]) -> Path | None:
        if not rejects:
            return None
        return self.write_jsonl("rejects.jsonl", [r.to_json() for r in rejects], append=True)


def run_name(config: Config, config_path: Path, fallback: str = "run") -> str:
    """output.name, else the config file's stem, else (for examples/<name>/config.yaml) its folder."""
    name = config.output.name or config_path.stem
    if name == "config":
        name = config_path.resolve().parent.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or fallback


def create_run_dir(config: Config, config_path: Path) -> RunDir:
    slug = run_name(config, config_path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = config.output.dir / f"{stamp}-{slug}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = config.output.dir / f"{stamp}-{slug}-{suffix}"
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    return RunDir(path)
