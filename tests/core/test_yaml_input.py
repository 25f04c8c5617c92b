"""core.yaml_input: YAML a user hands over is parsed with safe tags and bounds, and refused with one line naming
the file (and the line) when it is not UTF-8, not YAML, a value PyYAML cannot build, too deep or an alias bomb."""

from __future__ import annotations

import pytest

from tunewise.core.yaml_input import MAX_VALUES, check_expanded_size, decode_utf8, parse_yaml
from tunewise.errors import ConfigError

ALIAS_BOMB = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]" for i in range(5)]
)  # six levels of ten: a million values from six lines


def test_a_config_is_parsed() -> None:
    text = "model:\n  name: tiny\ntrain:\n  lr: 2.0e-4\n  epochs: 3\ntags: [a, b]\n"
    assert parse_yaml(text, "config.yaml", in_file=True) == {
        "model": {"name": "tiny"},
        "train": {"lr": 2e-4, "epochs": 3},
        "tags": ["a", "b"],
    }


def test_invalid_yaml_names_the_file_and_line() -> None:
    with pytest.raises(ConfigError, match=r"^config\.yaml:3: invalid YAML: mapping values are not allowed here$"):
        parse_yaml("a: 1\nb: 2\nc: d: e\nf: 3\n", "config.yaml", in_file=True)


def test_an_override_is_named_without_a_line() -> None:
    with pytest.raises(ConfigError, match=r"^override 'train\.lr=\[': invalid YAML: "):
        parse_yaml("[", "override 'train.lr=['")


def test_only_safe_tags_are_built() -> None:
    with pytest.raises(ConfigError, match=r"^config\.yaml:1: invalid YAML: "):
        parse_yaml("!!python/object/apply:os.system ['echo pwned']", "config.yaml", in_file=True)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("when: 2023-02-30", "a value YAML cannot read: day is out of range for month; quote it to keep it as text"),
        ("n: " + "9" * 5000, "a value YAML cannot read: "),
    ],
)
def test_values_pyyaml_cannot_build_say_to_quote_them(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=f"^config.yaml: {reason}"):
        parse_yaml(text, "config.yaml", in_file=True)


def test_yaml_nested_too_deep_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"^config\.yaml: YAML nested too deep$"):
        parse_yaml("[" * 5000 + "]" * 5000, "config.yaml", in_file=True)


def test_an_alias_bomb_is_refused_before_anything_walks_it() -> None:
    with pytest.raises(ConfigError, match=rf"^config\.yaml: expands to more than {MAX_VALUES} values"):
        parse_yaml(ALIAS_BOMB, "config.yaml", in_file=True)


def test_the_bound_counts_every_value_a_walk_visits() -> None:
    check_expanded_size(["x"] * (MAX_VALUES - 1), "f")  # the list itself and its items: exactly the bound
    with pytest.raises(ConfigError, match="expands to more than"):
        check_expanded_size(["x"] * MAX_VALUES, "f")
    shared = ["x"] * 1000
    with pytest.raises(ConfigError, match="expands to more than"):  # one list used many times counts each time
        check_expanded_size({"k": [shared] * 100}, "f")


def test_utf8_is_decoded_and_anything_else_names_the_line() -> None:
    assert decode_utf8("name: café\n".encode(), "config.yaml") == "name: café\n"
    with pytest.raises(ConfigError, match=r"^config\.yaml:3: not UTF-8 text \(byte 13\); save it as UTF-8$"):
        decode_utf8(b"a: 1\nb: 2\nc: \xe9t\xe9\n", "config.yaml")
