"""track.env: what a run records to be reproduced: library versions, machine, seed and the SHA-256 of each of its
data files (the user's as named, then what curation wrote), with a missing file recorded as missing."""

from __future__ import annotations

import hashlib
import os
import sys
from importlib import metadata
from pathlib import Path

from tunewise.config import Config
from tunewise.track.env import LIBRARIES, environment, file_digest


def test_a_file_is_recorded_with_its_sha256_and_size(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    data = os.urandom(5000)
    path.write_bytes(data)
    assert file_digest(path) == {"path": str(path), "sha256": hashlib.sha256(data).hexdigest(), "bytes": 5000}


def test_a_changed_file_gets_another_digest(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n')
    before = file_digest(path)["sha256"]
    path.write_text('{"text": "b", "label": "x"}\n')
    assert file_digest(path)["sha256"] != before


def test_a_missing_path_or_a_directory_is_recorded_as_missing(tmp_path: Path) -> None:
    assert file_digest(tmp_path / "gone.jsonl") == {"path": str(tmp_path / "gone.jsonl"), "missing": True}
    assert file_digest(tmp_path) == {"path": str(tmp_path), "missing": True}


def test_the_environment_names_versions_machine_seed_and_every_data_file(tmp_path: Path) -> None:
    import torch

    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text("train\n")
    test.write_text("test\n")
    curated = tmp_path / "curated" / "train.jsonl"
    curated.parent.mkdir()
    curated.write_text("curated\n")
    config = Config(data={"train": str(train), "test": str(test)}, train={"seed": 7})

    env = environment(config, {"train": curated})

    assert env["python"] == sys.version.split()[0]
    assert env["cpu_count"] == os.cpu_count() and env["torch_threads"] == torch.get_num_threads()
    assert env["cuda"] == torch.cuda.is_available()
    assert env["seed"] == 7
    assert set(env["libraries"]) == set(LIBRARIES)
    assert env["libraries"]["torch"] == metadata.version("torch")
    assert list(env["data"]) == ["train", "test", "curated train"]  # no val in the config: not recorded
    assert env["data"]["curated train"] == file_digest(curated)
    assert env["data"]["train"]["sha256"] == hashlib.sha256(b"train\n").hexdigest()


def test_an_uninstalled_library_is_recorded_as_none(tmp_path: Path, monkeypatch) -> None:
    import tunewise.track.env as env_module

    monkeypatch.setattr(env_module, "LIBRARIES", ("torch", "no-such-library-tunewise-test"))
    env = environment(Config(data={"train": str(tmp_path / "train.jsonl")}))
    assert env["libraries"] == {"torch": metadata.version("torch"), "no-such-library-tunewise-test": None}
    assert env["data"] == {"train": {"path": str(tmp_path / "train.jsonl"), "missing": True}}
