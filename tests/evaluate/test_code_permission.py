"""Only the command line of the current invocation lets generated code run: no config file, dotted
override, sweep parameter, prompt variant or ablation arm can carry the permission, because it is
not a config key at all, and the grant ends with the command (or the Python `with` block)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tunewise.cli import app
from tunewise.config import EvalConfig, load_config, validate_config
from tunewise.errors import ConfigError
from tunewise.evaluate.code_permission import code_execution_allowed, current_grant
from tunewise.evaluate.tasks import task_for

REFUSED = "not a setting: generated code runs only when the command line"


def _code_config(write_config, tmp_path: Path, **extra: dict) -> Path:
    data = tmp_path / "code.jsonl"
    data.write_text('{"prompt": "def f():\\n", "completion": "    return 1\\n", "test": "", "entry_point": "f"}\n')
    return write_config(
        data={"kind": "completion", "train": str(data), "val": str(data), "test": str(data)},
        eval={"task": "code", "max_new_tokens": 4, "timeout": 2, **extra.pop("eval", {})},
        prompt={"template": "{{ prompt }}", "chat_template": False, "answer_prefix": ""},
        **extra,
    )


@pytest.mark.parametrize("value", [True, False, "yes", 1])
def test_a_config_file_cannot_mention_it(write_config, tmp_path: Path, value):
    with pytest.raises(ConfigError, match=REFUSED):
        load_config(_code_config(write_config, tmp_path, eval={"allow_code_execution": value}))


def test_an_override_cannot_set_it(write_config, tmp_path: Path):
    with pytest.raises(ConfigError, match=REFUSED):
        load_config(_code_config(write_config, tmp_path), ["eval.allow_code_execution=true"])


def test_a_sweep_parameter_cannot_set_it(write_config, tmp_path: Path):
    sweep = {"params": {"eval.allow_code_execution": {"choices": [True]}}, "n_trials": 1}
    path = _code_config(write_config, tmp_path, sweep=sweep)
    with pytest.raises(ConfigError, match=f"sweep.params: eval.allow_code_execution is {REFUSED}"):
        load_config(path)
    result = CliRunner().invoke(app, ["sweep", str(path), "--n-trials", "1"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_a_trial_or_arm_config_built_from_a_dict_cannot_set_it(write_config, tmp_path: Path):
    """Sweep trials and ablation arms are validated from dicts: the same refusal, whatever the source."""
    raw = yaml.safe_load(_code_config(write_config, tmp_path).read_text())
    raw["eval"]["allow_code_execution"] = True
    with pytest.raises(ConfigError, match=f"ablation arm 10%: eval.allow_code_execution is {REFUSED}"):
        validate_config(raw, source="ablation arm 10%")


def test_the_code_task_needs_a_grant_and_the_grant_ends_with_its_block():
    cfg = EvalConfig(task="code")
    with pytest.raises(ConfigError, match="--allow-code-execution"):
        task_for("completion", [], cfg, 64)
    with code_execution_allowed():
        assert task_for("completion", [], cfg, 64).allow_execution is not None
        with code_execution_allowed(False):  # a nested refusal wins inside its block
            assert current_grant() is None
        assert current_grant() is not None
    assert current_grant() is None
    with pytest.raises(ConfigError, match="--allow-code-execution"):
        task_for("completion", [], cfg, 64)


def test_the_cli_grant_is_per_invocation(write_config, tmp_path: Path):
    path = _code_config(write_config, tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["eval", str(path), "--allow-unconfined-code"]).exit_code == 2  # needs both flags
    refused = runner.invoke(app, ["eval", str(path)])
    assert refused.exit_code == 2 and "--allow-code-execution" in refused.output, refused.output
    assert current_grant() is None  # nothing left behind in this process by the invocations above


def test_sweep_and_ablate_take_the_flag():
    for command in ("sweep", "ablate", "run", "eval"):
        result = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
        assert "--allow-code-execution" in result.output, command
