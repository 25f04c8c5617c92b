"""YAML from files a user hands us (configs, a run's config.yaml), parsed with bounds: safe tags only, and
refused with one line when it is not UTF-8, not YAML, a value PyYAML cannot build, nested too deep, or an
alias bomb whose expansion (which validation and comparison would walk) exceeds any real config."""

from __future__ import annotations

from typing import Any

import yaml

from tunewise.errors import ConfigError

MAX_VALUES = 100_000  # after aliases are expanded: an alias bomb is a few lines that expand without end


def parse_yaml(text: str, where: str, in_file: bool = False) -> Any:
    """The value of a YAML document; `where` names the file (then with the line) or the override."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        place = f"{where}:{mark.line + 1}" if mark and in_file else where
        raise ConfigError(f"{place}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deep") from None
    except (ValueError, OverflowError) as exc:  # a date like 2023-02-30, an integer of 5,000 digits
        raise ConfigError(f"{where}: a value YAML cannot read: {exc}; quote it to keep it as text") from None
    check_expanded_size(value, where)
    return value


def decode_utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{where}:{line}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def check_expanded_size(value: Any, where: str) -> None:
    """Count values as a walk over them visits them (an alias counts each time it is used), up to a bound."""
    seen, stack = 0, [value]
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise ConfigError(
                f"{where}: expands to more than {MAX_VALUES} values (YAML aliases repeated inside "
                "each other?); write the values out"
            )
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
