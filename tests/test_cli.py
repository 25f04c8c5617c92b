"""Every user mistake ends in one actionable line and exit code 2, never a traceback."""

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from tunewise.cli import app

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
