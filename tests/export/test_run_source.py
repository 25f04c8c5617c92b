"""read_run_source, check_mergeable and evaluated_data: a run directory read and checked before any weights load;
every damaged file is one ExportError line naming it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from rich.console import Console

from tunewise.core.hashing import sha256_file
from tunewise.errors import ExportError
from tunewise.export.run_source import (
    MAX_ADAPTER_CONFIG,
    check_mergeable,
    evaluated_data,
    read_run_source,
    recorded_predictions,
)

QUIET = Console(quiet=True)


def _one_line(exc: pytest.ExceptionInfo[ExportError]) -> str:
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_finished_run_reads_whole(finished_run: Path):
    source = read_run_source(finished_run)
    assert source.run_dir == finished_run and source.adapter_dir == finished_run / "adapter"
    assert source.adapter_settings["peft_type"] == "LORA"
    assert source.config.data.kind == "classification"
    assert source.evaluation is not None and "fine-tuned" in source.evaluation["models"]
    assert source.environment is not None and set(source.environment["data"]) == {"train", "val", "test"}


@pytest.mark.parametrize("settings", [{"peft_type": "LORA"}, {"peft_type": "LORA", "use_dora": True}])
def test_lora_and_dora_are_mergeable(finished_run: Path, settings: dict):
    check_mergeable(dataclasses.replace(read_run_source(finished_run), adapter_settings=settings))


@pytest.mark.parametrize("kind", ["PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING", None])
def test_virtual_token_adapters_are_refused_with_the_adapter_format_hint(finished_run: Path, kind: str | None):
    source = dataclasses.replace(read_run_source(finished_run), adapter_settings={"peft_type": kind})
    with pytest.raises(ExportError, match="cannot be merged") as exc:
        check_mergeable(source)
    assert _one_line(exc).endswith("use --format adapter")


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'["peft_type", "LORA"]', "not a JSON object"),
        (b"\x00\xffnot json at all {", "not UTF-8"),
        (b'{"peft_type": LORA', "not valid JSON (line 1"),
        (b"", "empty"),
        (b'{"peft_type": "LORA", "r": ' + b"1" * (MAX_ADAPTER_CONFIG + 1) + b"}", "MB"),
    ],
    ids=["list", "binary", "garbage", "empty", "huge"],
)
def test_a_bad_adapter_config_is_one_line(run_copy: Path, content: bytes, says: str):
    path = run_copy / "adapter" / "adapter_config.json"
    path.write_bytes(content)
    with pytest.raises(ExportError) as exc:
        read_run_source(run_copy)
    message = _one_line(exc)
    assert message.startswith(str(path)) and says in message
    assert len(message) < 400  # the huge file's content is not quoted


def test_an_adapter_without_safetensors_weights(run_copy: Path):
    (run_copy / "adapter" / "adapter_model.safetensors").unlink()
    (run_copy / "adapter" / "adapter_model.bin").write_bytes(b"pickles are never read")
    with pytest.raises(ExportError, match="no adapter_model.safetensors") as exc:
        read_run_source(run_copy)
    _one_line(exc)


def test_an_invalid_config_yaml_names_the_file(run_copy: Path):
    config_file = run_copy / "config.yaml"
    config_file.write_text("model: {name: [unclosed\ndata: : :\n", encoding="utf-8")
    with pytest.raises(ExportError) as exc:
        read_run_source(run_copy)
    assert _one_line(exc).startswith(f"{config_file}:")


def test_a_config_that_is_not_a_mapping_names_the_file(run_copy: Path):
    config_file = run_copy / "config.yaml"
    config_file.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(ExportError) as exc:
        read_run_source(run_copy)
    assert str(config_file) in _one_line(exc)


def test_damaged_eval_and_env_files_read_as_absent(run_copy: Path):
    (run_copy / "eval.json").write_text("[1, 2, 3]")
    (run_copy / "env.json").write_text("{half written")
    source = read_run_source(run_copy)
    assert source.evaluation is None and source.environment is None


def test_the_evaluated_split_is_the_runs_test_split_in_the_runs_order(finished_run: Path):
    data = evaluated_data(read_run_source(finished_run), QUIET)
    lines = (finished_run / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    scored = [row["source"] for row in map(json.loads, lines) if row["model"] == "fine-tuned"]
    assert [r.where for r in data.records] == scored
    test_file = str(data.files["test"]["path"])
    assert len(scored) == 24 and all(r.source == test_file for r in data.records)
    assert data.task.name == "classification"
    assert data.task.labels == ["negative", "neutral", "positive"]
    assert set(data.files) == {"train", "val", "test"} and all(e["sha256"] for e in data.files.values())


def test_a_missing_test_file_is_gone(run_copy: Path, tmp_path: Path):
    env_file = run_copy / "env.json"
    env = json.loads(env_file.read_text())
    gone = tmp_path / "moved-away" / "test.jsonl"
    config = (run_copy / "config.yaml").read_text()
    (run_copy / "config.yaml").write_text(config.replace(env["data"]["test"]["path"], str(gone)))
    env["data"]["test"]["path"] = str(gone)
    env_file.write_text(json.dumps(env))
    with pytest.raises(ExportError, match="is gone") as exc:
        evaluated_data(read_run_source(run_copy), QUIET)
    assert str(gone) in _one_line(exc) and "(test)" in str(exc.value)


def test_files_the_run_recorded_as_missing_or_unhashed_are_not_checked(run_copy: Path, tmp_path: Path):
    env_file = run_copy / "env.json"
    env = json.loads(env_file.read_text())
    env["data"]["extra"] = {"path": str(tmp_path / "never-there.jsonl"), "missing": True}
    env_file.write_text(json.dumps(env))
    data = evaluated_data(read_run_source(run_copy), QUIET)
    assert "extra" in data.files and len(data.records) == 24


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda env: env.update(data=[1]), "missing or damaged"),
        (lambda env: env["data"].update(odd="not an entry"), "missing or damaged"),
        (lambda env: env.pop("data"), "missing or damaged"),
        (lambda env: env["data"]["test"].update(path="/elsewhere/test.jsonl"), "not .*the one config.yaml reads"),
    ],
)
def test_a_damaged_or_edited_env_json_is_one_line(run_copy: Path, change, message: str):
    env_file = run_copy / "env.json"
    env = json.loads(env_file.read_text())
    change(env)
    env_file.write_text(json.dumps(env))
    with pytest.raises(ExportError, match=message) as exc:
        evaluated_data(read_run_source(run_copy), QUIET)
    assert "\n" not in str(exc.value)


def test_training_records_come_from_the_curated_file_the_run_recorded(run_copy: Path, tmp_path: Path):
    env_file = run_copy / "env.json"
    env = json.loads(env_file.read_text())
    rows = Path(env["data"]["train"]["path"]).read_text(encoding="utf-8").splitlines()[:30]
    curated = tmp_path / "curated" / "train.jsonl"
    curated.parent.mkdir()
    curated.write_text("\n".join(rows) + "\n", encoding="utf-8")
    env["data"]["curated train"] = {"path": str(curated), "sha256": sha256_file(curated), "bytes": 1}
    env_file.write_text(json.dumps(env))
    data = evaluated_data(read_run_source(run_copy), QUIET)
    assert len(data.splits.train) == 30 and {r.source for r in data.splits.train} == {str(curated)}
    assert len(data.records) == 24  # the user's own test file, as given
    curated.write_text("\n".join(rows[:10]) + "\n", encoding="utf-8")
    with pytest.raises(ExportError, match=r"\(curated train\) changed since the run"):
        evaluated_data(read_run_source(run_copy), QUIET)


def test_a_curated_entry_without_a_path_is_one_line(run_copy: Path):
    env_file = run_copy / "env.json"
    env = json.loads(env_file.read_text())
    env["data"]["curated train"] = {"missing": True}
    env_file.write_text(json.dumps(env))
    with pytest.raises(ExportError):
        evaluated_data(read_run_source(run_copy), QUIET)


def test_recorded_predictions_are_used_only_when_they_hold_what_the_task_compares(run_copy: Path):
    source = read_run_source(run_copy)
    data = evaluated_data(source, QUIET)
    recorded = recorded_predictions(source, data)
    assert recorded is not None and len(recorded.predictions) == len(data.records)
    lines = (run_copy / "predictions.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    for row in rows:
        row.pop("gold")
    (run_copy / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert recorded_predictions(source, data) is None
    rows[0]["gold"] = {"unhashable": ["x"]}
    (run_copy / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert recorded_predictions(source, data) is None


def test_a_code_run_is_compared_on_generated_text_never_by_running_code() -> None:
    from tunewise.config import config_from_mapping
    from tunewise.export.run_source import _export_task

    config = config_from_mapping(
        {"data": {"kind": "completion", "train": "t.jsonl"}, "eval": {"task": "code", "samples": 1, "k": [1]}}
    )
    task = _export_task(config, [])
    assert task.name == "generation" and task.primary_metric == "sentence_chrf"
