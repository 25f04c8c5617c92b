"""Reading a config: the YAML file, its dotted `KEY=VALUE` overrides, validation with each problem traced to the
file or override that caused it (tunewise.config.error_messages), and writing a config back as YAML."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tunewise.config.error_messages import check, origins
from tunewise.config.inputs import DataConfig
from tunewise.config.schema import Config
from tunewise.core.yaml_input import decode_utf8, parse_yaml
from tunewise.errors import ConfigError


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read YAML, apply `a.b=value` overrides, validate. Relative data paths resolve against the file."""
    path = Path(path)
    raw = _read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return config_from_mapping(raw, overrides or [], base_dir=path.parent, source=str(path))


def config_from_mapping(
    raw: dict[str, Any], overrides: Sequence[str] = (), base_dir: Path | None = None, source: str = "config"
) -> Config:
    """`raw` (the sections of a config, from `source`) with the overrides applied, validated; relative paths in
    `data`, `curate.output`, `ablate.raw` and `train.deepspeed` resolve against `base_dir` (default: the working
    directory)."""
    config = validate_config(raw, source=source, overrides=overrides)
    base = Path.cwd() if base_dir is None else base_dir
    _resolve_data_paths(config.data, base)
    if config.curate is not None and not config.curate.output.is_absolute():
        config.curate.output = base / config.curate.output
    if config.ablate is not None and config.ablate.raw is not None and not config.ablate.raw.is_absolute():
        config.ablate.raw = base / config.ablate.raw
    if config.train.deepspeed is not None and not config.train.deepspeed.is_absolute():
        config.train.deepspeed = base / config.train.deepspeed.expanduser()
    return config


MAX_CONFIG_BYTES = 1 << 20  # a config is a page of settings; a larger file is a mistake or an attack


def _read_yaml(path: Path) -> Any:
    """The YAML of a config file, refused with one line when it is no regular file or too large (see
    yaml_input for what else is refused)."""
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if not path.is_file():
        raise ConfigError(f"{path}: not a regular file; give the path of a YAML config file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes; a config is at most {MAX_CONFIG_BYTES} bytes")
    return parse_yaml(decode_utf8(path.read_bytes(), str(path)), str(path), in_file=True)


def apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{override}': expected KEY=VALUE, e.g. train.lr=1e-4")
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        if node.get(part) is None:  # absent, or left empty in the YAML (`prompt:`)
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"override '{override}': '{part}' is not a section")
    node[parts[-1]] = parse_yaml(value, f"override '{override}'") if value.strip() else None


def validate_config(raw: dict[str, Any], source: str = "config", overrides: Sequence[str] = ()) -> Config:
    """`raw` (read from `source`) with the `a.b=value` overrides applied, validated. Each problem is reported
    with its origin: `source`, or the override that brought it."""
    merged = copy.deepcopy(raw) if overrides else raw
    for override in overrides:
        apply_override(merged, override)
    config, problems = check(Config, merged)
    if config is not None:
        return config
    blamed = origins(Config, raw, overrides, problems, apply_override) if overrides else {}
    raise ConfigError("; ".join(f"{blamed.get(key, source)}: {text}" for key, text in problems.items()))


def _resolve_data_paths(data: DataConfig, base: Path) -> None:
    for name in ("train", "val", "test"):
        value = getattr(data, name)
        if value is not None:
            value = value.expanduser()  # `~/data.jsonl` means the home folder, as in a shell
            setattr(data, name, value if value.is_absolute() else base / value)


def dump_config(config: Config) -> str:
    """YAML of the config, loadable from anywhere: file paths are written absolute (a relative path
    would be read against the new file's folder, not the one it was written for)."""
    raw = config.model_dump(mode="json")
    paths = (("data", "train"), ("data", "val"), ("data", "test"), ("curate", "output"), ("ablate", "raw"))
    for section, key in (*paths, ("train", "deepspeed")):
        if raw.get(section) and raw[section].get(key):
            raw[section][key] = str(Path(raw[section][key]).resolve())
    return yaml.safe_dump(raw, sort_keys=False)
