"""What a run needs to be reproduced: library versions, machine, seed and the SHA-256 of its data files."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from tunewise.config import Config
from tunewise.core.hashing import sha256_file

LIBRARIES = ("tunewise", "torch", "transformers", "peft", "accelerate", "datasets", "tokenizers", "gguf")


def environment(config: Config, curated: dict[str, Path] | None = None) -> dict[str, Any]:
    """`data`: the user's files as the config names them, then (as "curated <split>") what curation wrote."""
    import torch

    files = {"train": config.data.train, "val": config.data.val, "test": config.data.test}
    files |= {f"curated {split}": path for split, path in (curated or {}).items()}
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "seed": config.train.seed,
        "data": {split: file_digest(path) for split, path in files.items() if path is not None},
    }


def file_digest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"path": str(path), "missing": True}
    return {"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size}


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
