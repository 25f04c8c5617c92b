"""Reading a config: the file, dotted overrides applied to a copy, paths against the file's folder, and the YAML
written back loading the same config from anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tunewise.config.load import apply_override, config_from_mapping, dump_config, load_config, validate_config
from tunewise.errors import ConfigError


def test_an_override_creates_the_sections_it_goes_through():
    raw: dict = {"data": {"train": "t.jsonl"}, "prompt": None}
    apply_override(raw, "prompt.system=Be brief.")
    apply_override(raw, "sweep.params.lora.r={choices: [4, 8]}")
    apply_override(raw, "data.labels=")
    assert raw["prompt"] == {"system": "Be brief."}
    assert raw["sweep"] == {"params": {"lora": {"r": {"choices": [4, 8]}}}}
    assert raw["data"] == {"train": "t.jsonl", "labels": None}  # an empty value is null, the key's default


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr", "expected KEY=VALUE"),
        ("=3", "expected KEY=VALUE"),
        ("train.lr.value=3", "'lr' is not a section"),
    ],
)
def test_a_malformed_override_is_named(override: str, message: str):
    with pytest.raises(ConfigError, match=rf"override '{override}': {message}"):
        apply_override({"train": {"lr": 1e-4}}, override)


def test_overrides_change_a_copy_of_the_raw_config():
    raw = {"data": {"train": "t.jsonl"}, "train": {"lr": 1e-4}}
    config = validate_config(raw, overrides=["train.lr=3e-4", "lora.r=4"])
    assert (config.train.lr, config.lora.r) == (3e-4, 4)
    assert raw == {"data": {"train": "t.jsonl"}, "train": {"lr": 1e-4}}  # a sweep reuses it for the next trial


def test_a_problem_names_its_source():
    with pytest.raises(ConfigError, match=r"^my.yaml: 'lora.r': Input should be greater than 0"):
        validate_config({"data": {"train": "t.jsonl"}, "lora": {"r": 0}}, source="my.yaml")


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path):
    elsewhere = tmp_path / "elsewhere.jsonl"
    raw = {
        "data": {"train": "data/train.jsonl", "test": str(elsewhere)},
        "curate": {"output": "curated", "steps": []},
        "ablate": {"raw": "raw.jsonl"},
    }
    path = tmp_path / "project" / "config.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    config = load_config(path)
    assert config.data.train == path.parent / "data" / "train.jsonl"
    assert config.data.test == elsewhere and config.data.val is None  # absolute paths are kept
    assert config.curate.output == path.parent / "curated" and config.ablate.raw == path.parent / "raw.jsonl"


def test_an_empty_file_or_a_list_is_no_config(tmp_path: Path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="missing required key 'data'"):
        load_config(empty)
    listing = tmp_path / "list.yaml"
    listing.write_text("- data\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping of sections at the top level"):
        load_config(listing)


def test_the_dumped_config_is_the_same_config(tmp_path: Path):
    path = tmp_path / "config.yaml"
    raw = {"data": {"train": "train.jsonl"}, "train": {"metric": "macro_f1"}, "ablate": {"raw": "raw.jsonl"}}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    config = load_config(path, ["lora.r=4"])
    text = dump_config(config)
    dumped = yaml.safe_load(text)
    assert dumped["data"]["train"] == str((tmp_path / "train.jsonl").resolve())
    assert dumped["ablate"]["raw"] == str((tmp_path / "raw.jsonl").resolve())
    copy = tmp_path / "copy" / "config.yaml"
    copy.parent.mkdir()
    copy.write_text(text, encoding="utf-8")
    assert load_config(copy) == config


def test_a_mapping_resolves_its_paths_against_the_given_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    raw = {"data": {"train": "train.jsonl"}, "curate": {"steps": []}}
    config = config_from_mapping(raw, ["lora.r=4"], base_dir=tmp_path)
    assert config.data.train == tmp_path / "train.jsonl" and config.curate.output == tmp_path / "curated"
    assert config.lora.r == 4 and raw == {"data": {"train": "train.jsonl"}, "curate": {"steps": []}}
    monkeypatch.chdir(tmp_path)
    assert config_from_mapping({"data": {"train": "t.jsonl"}}).data.train == tmp_path / "t.jsonl"
    with pytest.raises(ConfigError, match=r"^settings: 'lora.r': Input should be greater than 0"):
        config_from_mapping({"data": {"train": "t.jsonl"}, "lora": {"r": 0}}, source="settings")
