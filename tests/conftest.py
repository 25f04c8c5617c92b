from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from support.tiny import build_tiny_model, make_classification_rows, write_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def tiny_data(tmp_path: Path) -> dict[str, Path]:
    rows = make_classification_rows(150, seed=1)
    return {
        "train": write_jsonl(tmp_path / "data" / "train.jsonl", rows[:96]),
        "val": write_jsonl(tmp_path / "data" / "val.jsonl", rows[96:120]),
        "test": write_jsonl(tmp_path / "data" / "test.jsonl", rows[120:]),
    }


@pytest.fixture
def write_config(tmp_path: Path, tiny_model_dir: Path, tiny_data: dict[str, Path]):
    """Writes a tiny-model config; `overrides` are merged section by section."""

    def _write(**sections: dict) -> Path:
        config = {
            "model": {"name": str(tiny_model_dir)},
            "data": {"kind": "classification", **{k: str(v) for k, v in tiny_data.items()}},
            "train": {
                "lr": 2e-2,
                "batch_size": 8,
                "epochs": 2,
                "eval_steps": 4,
                "logging_steps": 2,
                "max_length": 64,
                "patience": 0,
            },
            "eval": {"batch_size": 8},
            "output": {"dir": str(tmp_path / "runs")},
        }
        for name, values in sections.items():
            config.setdefault(name, {}).update(values)
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    return _write


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """For modules of many tiny-model steps: with tiny matrices, a second thread costs more than it gives."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def local_ray() -> Iterator[object]:
    """One local Ray with 2 CPUs for the whole test run: the Ray curation engine joins it (ray.init is slow)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
