"""`tunewise predict`: where the predictions go by default and what the prediction field is called."""

import json
from pathlib import Path

import typer

from support.cli import invoke as _invoke
from tunewise.cli import app
from tunewise.evaluate.predict import default_output

LABELS = ["negative", "neutral", "positive"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_help_names_the_default_output_predict_writes():
    command = typer.main.get_command(app).commands["predict"]  # the text, not its boxed rendering
    help_text = next(p.help for p in command.params if p.name == "output")
    assert "default: <input stem>.predictions.jsonl beside the input" in help_text
    assert "new.jsonl -> new.predictions.jsonl" in help_text
    assert default_output(Path("data/new.jsonl")) == Path("data/new.predictions.jsonl")
    assert default_output(Path("rows.v2.csv")) == Path("rows.v2.predictions.jsonl")


def test_predict_without_output_writes_pred_beside_the_input(write_config, tmp_path: Path, monkeypatch):
    config = write_config(data={"labels": LABELS})
    inputs = tmp_path / "incoming" / "new.jsonl"
    inputs.parent.mkdir()
    inputs.write_text('{"text": "the ride was great"}\n{"text": "awful trip"}\nnot json\n')
    monkeypatch.chdir(tmp_path)  # a path relative to the working directory, as users type it
    result = _invoke("predict", config, "--input", "incoming/new.jsonl")
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in inputs.parent.iterdir())
    assert written == ["new.jsonl", "new.predictions.jsonl", "new.predictions.rejects.jsonl"]
    rows = _rows(inputs.parent / "new.predictions.jsonl")
    assert [r["text"] for r in rows] == ["the ride was great", "awful trip"]
    # the field a run's predictions.jsonl uses for a classification, so one reader serves both files
    assert all(r["pred"] in LABELS and "prediction" not in r for r in rows)
    assert all(max(r["logprobs"], key=r["logprobs"].get) == r["pred"] for r in rows)
    assert "2 predictions -> incoming/new.predictions.jsonl" in result.output


def test_generated_predictions_use_pred_too(write_config, tmp_path: Path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "the car was"}\n')
    config = write_config(
        data={"kind": "completion", "train": str(prompts), "val": None, "test": None}, eval={"max_new_tokens": 3}
    )
    result = _invoke("predict", config, "--input", prompts, "--output", tmp_path / "out" / "gen.jsonl")
    assert result.exit_code == 0, result.output
    (row,) = _rows(tmp_path / "out" / "gen.jsonl")
    assert isinstance(row["pred"], str) and "prediction" not in row
    assert not (tmp_path / "prompts.predictions.jsonl").exists()  # --output given: nothing beside the input


def test_predict_refuses_to_overwrite_its_input(write_config, tmp_path: Path):
    config = write_config(data={"labels": LABELS})
    inputs = tmp_path / "new.jsonl"
    inputs.write_text('{"text": "the ride was great"}\n')
    result = _invoke("predict", config, "--input", inputs, "--output", tmp_path / "." / "new.jsonl")
    assert result.exit_code == 2
    assert "is the input file; pass another --output" in " ".join(result.output.split())
    assert inputs.read_text() == '{"text": "the ride was great"}\n'
