"""Every user mistake ends in one actionable line and exit code 2, never a traceback."""

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunewise.cli import app
from tunewise.errors import TunewiseError

runner = CliRunner()


def _fails_with(args: list, pattern: str) -> None:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert re.search(pattern, errors[0]), errors[0]


def test_config_typo(write_config):
    _fails_with(["run", write_config(train={"learning_rate": 1e-3})], r"unknown key 'train.learning_rate'")


def test_missing_config_and_missing_data_file(write_config, tmp_path: Path):
    _fails_with(["run", tmp_path / "nope.yaml"], r"nope.yaml: config file not found")
    _fails_with(["run", write_config(data={"train": str(tmp_path / "gone.jsonl")})], r"gone.jsonl: file not found")


def test_malformed_jsonl_line(write_config, tiny_data):
    with tiny_data["train"].open("a") as fh:
        fh.write('{"text": "oops", "label": \n')
    _fails_with(["run", write_config()], r"train.jsonl:97: invalid JSON at column \d+.*on_error: skip")


def test_unknown_label(write_config, tiny_data):
    with tiny_data["test"].open("a") as fh:
        fh.write(json.dumps({"text": "meh", "label": "mixed"}) + "\n")
    _fails_with(["run", write_config()], r"test.jsonl:31: field 'label': unknown label 'mixed'")


def test_bad_override(write_config):
    _fails_with(["run", write_config(), "train.lr"], r"expected KEY=VALUE")


def test_skip_mode_writes_rejects_and_reports_counts(write_config, tiny_data, tmp_path: Path):
    with tiny_data["train"].open("a") as fh:
        fh.write("garbage\n" + json.dumps({"text": "", "label": "neutral"}) + "\n")
    result = runner.invoke(app, ["train", str(write_config(data={"on_error": "skip"}, train={"max_steps": 2}))])
    assert result.exit_code == 0, result.output
    (run,) = [d for d in (tmp_path / "runs").iterdir() if d.is_dir()]
    rejects = [json.loads(line) for line in (run / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["field"]) for r in rejects] == [(97, None), (98, "text")]
    assert "rejected: 2" in result.output


def test_export_of_a_missing_or_untrained_run_is_one_line_and_exit_2(tmp_path: Path):
    _fails_with(["export", tmp_path / "runs" / "nope"], "no such run directory")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("data: {train: t.jsonl}\n")
    _fails_with(["export", tmp_path / "run", "--format", "gguf"], "no trained adapter")


def test_export_options_are_checked_before_the_run_is_read(tmp_path: Path):
    _fails_with(["export", tmp_path / "nope", "--format", "onnx"], r"export: 'formats\[1\]'.*'merged'")
    _fails_with(["export", tmp_path / "nope", "--quant", "q2_k"], r"export: 'gguf_type'.*'q8_0'")


def test_estimate_prints_the_breakdown_and_json_with_a_probe(write_config):
    config = str(write_config())
    table = runner.invoke(app, ["estimate", config, "--probe-steps", "0"])
    assert table.exit_code == 0, table.output
    for row in ("memory: weights", "activations", "arithmetic peak", "not run (--probe-steps 0)", "(rough)"):
        assert row in table.stdout
    assert table.stdout.strip().splitlines()[-1].startswith("fits: ")
    probed = runner.invoke(app, ["estimate", config, "train.batch_size=4", "--json"])  # the default: a 3-step probe
    assert probed.exit_code == 0, probed.output
    figures = json.loads(probed.stdout)
    assert figures["probe"]["failure"] is None and figures["probe"]["result"]["steps"] == 3
    assert (
        figures["time"]["kind"] == "measured"
        and figures["peak_memory_bytes"] == figures["probe"]["result"]["peak_bytes"]
    )


def test_estimate_exits_1_when_the_run_does_not_fit(write_config, monkeypatch):
    import tunewise.pipeline.estimate_stage as estimate_stage

    monkeypatch.setattr(estimate_stage, "available_memory_bytes", lambda device: 1 << 20)  # 1 MiB free
    result = runner.invoke(app, ["estimate", str(write_config()), "--probe-steps", "0"])
    assert result.exit_code == 1, result.output
    assert "does not fit" in result.stdout


def test_bakeoff_without_candidates_is_one_line_and_exit_2(write_config):
    _fails_with(["bakeoff", str(write_config())], r"no candidate models: pass --model A --model B")


def test_estimate_of_a_bad_config_or_model_is_one_line_and_exit_2(write_config, tmp_path: Path):
    _fails_with(["estimate", write_config(train={"learning_rate": 1e-3})], r"unknown key 'train.learning_rate'")
    _fails_with(["estimate", write_config(model={"name": str(tmp_path / "gone")})], r"not a model directory")


def test_nproc_runs_the_same_command_in_that_many_processes(write_config, monkeypatch):
    from tunewise import api

    launches: list[tuple[list[str], int]] = []
    monkeypatch.setattr(api, "launch", lambda command, nproc, config: launches.append((command, nproc)) or 0)
    monkeypatch.setattr(api, "run", lambda *a, **k: pytest.fail("the launching process must not run the job itself"))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    config = write_config()
    result = runner.invoke(app, ["run", str(config), "train.lr=1e-3", "--nproc", "2", "--allow-code-execution"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", str(config), "--resume", "--nproc", "3"])
    assert result.exit_code == 0, result.output
    assert launches == [
        (["run", str(config), "train.lr=1e-3", "--allow-code-execution"], 2),
        (["train", str(config), "--resume"], 3),
    ]
    monkeypatch.setattr(api, "launch", lambda command, nproc, config: 2)  # a process printed its error
    assert runner.invoke(app, ["train", str(config), "--nproc", "2"]).exit_code == 2
    _fails_with(["train", config, "train.lr=oops", "--nproc", "2"], r"train.lr")  # checked before any launch
    assert runner.invoke(app, ["train", str(config), "--nproc", "0"]).exit_code == 2


def test_in_a_launched_process_errors_name_the_rank_and_rank_0s_are_not_repeated(write_config, monkeypatch):
    from tunewise import api
    from tunewise.pipeline.handoff import LeaderStopped

    config = write_config()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")

    def fail(error):
        def train(*args, **kwargs):
            raise error

        return train

    monkeypatch.setattr(api, "train", fail(LeaderStopped("rank 0 stopped before training: DataError: x")))
    result = runner.invoke(app, ["train", str(config), "--nproc", "2"])  # one of the 2: runs, no new launch
    assert result.exit_code == 2 and result.output == ""
    monkeypatch.setattr(api, "train", fail(TunewiseError("model not found")))
    result = runner.invoke(app, ["train", str(config)])
    assert result.exit_code == 2 and "error: (training process 1) model not found" in result.output
