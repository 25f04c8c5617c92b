"""Hostile config files and overrides: one line naming the file (and line) or the override, exit code 2,
never a traceback or a hang: not UTF-8, YAML alias bombs, deep nesting, Python tags, FIFOs, huge files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunewise.cli import app
from tunewise.config import MAX_CONFIG_BYTES, load_config
from tunewise.errors import ConfigError

BASE = "model: {name: m}\ndata: {kind: classification, train: t.jsonl}\n"


def _alias_bomb(levels: int = 9) -> str:
    lines, previous = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]"], "a"
    for level in range(levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*{previous}"] * 9) + "]")
        previous = f"l{level}"
    return "x:\n" + "".join(f"  {line}\n" for line in lines) + f"prompt: {{template: *{previous}}}\n"


CASES = {
    "not-utf8": (BASE.encode() + b"prompt: {system: \xff\xfe}\n", r"cfg\.yaml:3: not UTF-8 text"),
    "alias-bomb": ((BASE + _alias_bomb()).encode(), r"expands to more than 100000 values"),
    "deep": (("model: " + "[" * 20000 + "]" * 20000 + "\n").encode(), "nested too deep"),
    "python-tag": (b"!!python/object/apply:os.system ['echo pwned']\n", r"cfg\.yaml:1: invalid YAML: could not"),
    "huge": (b"#" * (MAX_CONFIG_BYTES + 1), f"a config is at most {MAX_CONFIG_BYTES} bytes"),
    "not-a-mapping": (b"- a\n- b\n", "expected a mapping of sections"),
}


@pytest.mark.parametrize("case", CASES)
def test_hostile_config_files_give_one_line(tmp_path: Path, case: str):
    content, message = CASES[case]
    path = tmp_path / "cfg.yaml"
    path.write_bytes(content)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    assert time.monotonic() - started < 10
    result = CliRunner().invoke(app, ["curate", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1


def test_a_fifo_or_a_directory_is_not_read(tmp_path: Path):
    fifo = tmp_path / "cfg.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(fifo)  # opening a FIFO would block until a writer came
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("prompt.template=[*a]", r"override 'prompt\.template=\[\*a\]': invalid YAML: found undefined alias"),
        ("prompt.template=" + "[" * 5000, "override"),
        ("model.name.x=1", "'name' is not a section"),
        ("justtext", "expected KEY=VALUE"),
    ],
)
def test_hostile_overrides_name_the_override(tmp_path: Path, override: str, message: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(BASE)
    with pytest.raises(ConfigError, match=message):
        load_config(path, [override])


def test_a_leading_tilde_in_a_data_path_is_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = tmp_path / "cfg.yaml"
    path.write_text("model: {name: m}\ndata: {kind: classification, train: ~/t.jsonl, val: a/~/v.jsonl}\n")
    config = load_config(path)
    assert config.data.train == tmp_path / "home" / "t.jsonl"
    assert config.data.val == tmp_path / "a" / "~" / "v.jsonl"


@pytest.mark.parametrize("encoding", ["hex", "rot13", "punycode", "base64", "no-such-codec"])
def test_data_encoding_must_be_a_text_encoding(tmp_path: Path, encoding: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(BASE)
    with pytest.raises(ConfigError, match=r"'data\.encoding': Value error, .*(not a text encoding|unknown text)"):
        load_config(path, [f"data.encoding={encoding}"])
    assert load_config(path, ["data.encoding=latin-1"]).data.encoding == "latin-1"


@pytest.mark.parametrize(
    "value", ["2023-02-30", "2023-01-01 25:00:00", "9" * 5000], ids=["bad-date", "bad-hour", "5000-digits"]
)
def test_values_yaml_cannot_build_name_the_file_or_override(tmp_path: Path, value: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(BASE)
    with pytest.raises(ConfigError, match=r"override 'output\.name=.*': a value YAML cannot read: .*quote it"):
        load_config(path, [f"output.name={value}"])
    path.write_text(BASE + f"output: {{name: {value}}}\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml: a value YAML cannot read"):
        load_config(path)


def test_an_alias_bomb_in_a_runs_config_is_not_expanded(tmp_path: Path):
    """A run's config.yaml is read back by `runs compare` and reports, which flatten it: never expanded."""
    from tunewise.track.store import read_yaml

    path = tmp_path / "config.yaml"
    path.write_text(BASE + _alias_bomb())
    started = time.monotonic()
    assert read_yaml(path) == {}
    assert time.monotonic() - started < 5
