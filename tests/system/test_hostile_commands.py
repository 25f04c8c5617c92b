"""Hostile input across commands, each one line `error: ...` and exit code 2 (or a clean success), never a traceback:

1. rich markup in user text (labels, output.dir, model.name, --output) is printed literally;
2. a damaged or mismatched --adapter is a `ModelLoadError` naming the problem (eval and predict);
3. damaged run files (huge numbers, fields of the wrong type, ragged confusion matrices) still get a report;
4. predict's --output checked before the model loads; a full disk while writing predictions or a report.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support.tiny import make_classification_rows, write_jsonl
from tunewise.cli import app
from tunewise.errors import ModelLoadError
from tunewise.track.run_report import render_report
from tunewise.track.shapes import eval_summary

runner = CliRunner()
MARKUP_LABELS = ["[/]", "[bold]", "[red]x"]  # each one a crash (MarkupError) or a silent style if parsed


def _cli(*args: object, code: int = 0) -> str:
    """A CLI command's output, asserting its exit code and that it ended without a traceback."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if code == 2:
        assert sum("error:" in line for line in result.output.splitlines()) == 1, result.output
    return result.output


def _markup_path(base: Path, name: str, target: Path | None = None) -> Path:
    """`base/<name>[/]x`: the `[/]` splits it into two directories (`<name>[` and `]x`); `target` links the last."""
    (base / f"{name}[").mkdir(parents=True)
    path = base / f"{name}[/]x"
    if target is not None:
        path.symlink_to(target)
    return path


# ---- 1. rich markup in user text ------------------------------------------------------------------


def _markup_data(tmp_path: Path) -> dict[str, str]:
    names = dict(zip(["negative", "neutral", "positive"], MARKUP_LABELS, strict=True))
    rows = [{"text": r["text"], "label": names[r["label"]]} for r in make_classification_rows(60, seed=3)]
    parts = {"train": rows[:30], "val": rows[30:45], "test": rows[45:]}
    return {split: str(write_jsonl(tmp_path / "markup" / f"{split}.jsonl", part)) for split, part in parts.items()}


def test_markup_in_labels_output_dir_and_model_name_is_printed_literally(
    write_config, tiny_model_dir: Path, tmp_path: Path
) -> None:
    model = _markup_path(tmp_path, "m", tiny_model_dir)
    out = _markup_path(tmp_path, "o")
    config = write_config(model={"name": str(model)}, data=_markup_data(tmp_path), output={"dir": str(out)})
    output = _cli("eval", config)
    assert "labels: [/], [bold], [red]x" in output
    for label in MARKUP_LABELS:
        assert f"F1 {label}" in output  # table rows; the confusion matrix has them as columns
    (run,) = [d for d in out.iterdir() if d.is_dir()]
    assert f"run directory: {run}" in output and f"outputs in {run}" in output
    assert set(json.loads((run / "eval.json").read_text())["models"]["base"]["per_class"]) == set(MARKUP_LABELS)


def test_a_missing_model_whose_name_has_markup_is_one_error_line(write_config, tmp_path: Path) -> None:
    config = write_config(model={"name": str(tmp_path / "nowhere[/]x")})
    output = _cli("eval", config, code=2)
    assert "nowhere[/]x" in output and "MarkupError" not in output


def test_predict_prints_markup_in_paths_and_labels_literally(
    write_config, tiny_model_dir: Path, tmp_path: Path
) -> None:
    model = _markup_path(tmp_path, "m", tiny_model_dir)
    config = write_config(model={"name": str(model)}, data={"labels": MARKUP_LABELS})
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"text": "the ride was great"}\nnot json\n')
    target = _markup_path(tmp_path, "p") / "out.jsonl"
    output = _cli("predict", config, "--input", inputs, "--output", target)
    assert f"1 predictions -> {target}" in output and str(target.with_suffix(".rejects.jsonl")) in output
    (row,) = [json.loads(line) for line in target.read_text().splitlines()]
    assert row["pred"] in MARKUP_LABELS and set(row["logprobs"]) == set(MARKUP_LABELS)


def test_curate_prints_markup_in_labels_and_paths_literally(tmp_path: Path) -> None:
    rows = [{"text": f"the car number {i} today", "label": MARKUP_LABELS[i % 2]} for i in range(40)]
    train = write_jsonl(_markup_path(tmp_path, "raw") / "train.jsonl", rows)
    out = _markup_path(tmp_path, "curated")
    steps = [{"step": "validate"}, {"step": "split", "val": 0.2, "test": 0.2}]
    config = tmp_path / "c.yaml"
    config.write_text(
        json.dumps(
            {"data": {"kind": "classification", "train": str(train)}, "curate": {"output": str(out), "steps": steps}}
        )
    )
    output = " ".join(_cli("curate", config).split())
    for label in MARKUP_LABELS[:2]:  # too few examples of each: the advice names the label
        assert re.search(rf"advice: class '{re.escape(label)}' has \d+ training examples", output), output
    assert f"report: {out / 'curation_report.html'}" in output and str(out / "train.jsonl") in output


# ---- 2. damaged or mismatched --adapter -------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter of the tiny model, as `tunewise train` saves one (safetensors)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    path = tmp_path_factory.mktemp("adapter") / "adapter"
    get_peft_model(model, lora).save_pretrained(path)
    return path


def _edit_config(**changes: object):
    def edit(path: Path) -> None:
        settings = json.loads((path / "adapter_config.json").read_text())
        (path / "adapter_config.json").write_text(json.dumps({**settings, **changes}))

    return edit


DAMAGE = {
    "config is a list": (
        lambda p: (p / "adapter_config.json").write_text("[]"),
        "adapter_config.json is a JSON array, not an object",
    ),
    "config is not JSON": (
        lambda p: (p / "adapter_config.json").write_text('{"peft_type": "LORA",'),
        "adapter_config.json is not valid JSON (line 1, column 22)",
    ),
    "config is huge": (
        lambda p: (p / "adapter_config.json").write_text(json.dumps({"pad": "x" * (1 << 20)})),
        "adapter_config.json is 1.0 MB, more than the 1.0 MB expected",
    ),
    "unknown peft_type": (_edit_config(peft_type="BOGUS"), 'peft_type "BOGUS" is not a PEFT adapter type'),
    "bad safetensors header": (
        lambda p: (p / "adapter_model.safetensors").write_bytes(b"\xff" * 64),
        "not an adapter for this model: SafetensorError",
    ),
    "r doubled": (_edit_config(r=8), "not an adapter for this model: RuntimeError: Error(s) in loading state_dict"),
    "unknown target modules": (_edit_config(target_modules=["nope_proj"]), "not an adapter for this model:"),
}


@pytest.mark.parametrize("command", ["eval", "predict"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_or_mismatched_adapter_is_one_line(
    command: str, damage: str, adapter: Path, write_config, tmp_path: Path
) -> None:
    broken = tmp_path / "broken" / "adapter"
    shutil.copytree(adapter, broken)
    spoil, expected = DAMAGE[damage]
    spoil(broken)
    config = write_config(data={"labels": ["negative", "neutral", "positive"]})
    if command == "eval":
        output = _cli("eval", config, "--adapter", broken, code=2)
    else:
        inputs = tmp_path / "in.jsonl"
        inputs.write_text('{"text": "the ride was great"}\n')
        output = _cli("predict", config, "--input", inputs, "--adapter", broken, code=2)
    line = " ".join(output.split())  # the console may wrap the long line
    assert f"error: --adapter {broken}: " in line and expected in line, output
    assert "pass the adapter/ directory of a run trained on" in line
    if damage == "r doubled":
        assert "size mismatch for" in line  # the line after PEFT's "Error(s) in loading state_dict for ...:"


def test_a_sound_adapter_still_loads(adapter: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    from tunewise.models.adapters import attach_adapter

    model = attach_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter, "first")
    assert attach_adapter(model, adapter, "second") is model and set(model.peft_config) == {"first", "second"}
    with pytest.raises(ModelLoadError, match="no adapter_config.json"):
        attach_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter.parent, "x")


# ---- 3. damaged run files in `tunewise report` ------------------------------------------------------


def _run_dir(path: Path, metrics: list[str], evaluation: dict) -> Path:
    path.mkdir(parents=True)
    rows = [{"step": s, "loss": 2.0 - 0.1 * s} for s in (1, 2, 3, 4)] + [{"step": s, "eval_loss": 1.5} for s in (2, 4)]
    lines = [json.dumps(r) for r in rows] + metrics
    (path / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    (path / "eval.json").write_text(json.dumps(evaluation))
    return path


def _evaluation(**changes: object) -> dict:
    matrix = {"labels": ["a", "b"], "rows_gold_cols_pred": [[3, 1], [0, 4]]}
    models = {"base": {"accuracy": 0.5, "n": 8}, "fine-tuned": {"accuracy": 0.875, "n": 8, "confusion_matrix": matrix}}
    train = {"steps": 4, "planned_steps": 4, "best_step": 4, "trainable_params": 1000, "total_params": 20000}
    evaluation = {"task": "classification", "primary_metric": "accuracy", "split": "test", "models": models}
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if section == "train":
            train[field] = value
        elif section == "matrix":
            matrix[field] = value
        else:
            evaluation[section] = value
    return {**evaluation, "train": train}


HUGE = "1" + "0" * 400  # a number no float holds: math.isfinite and float() raise OverflowError on it
DAMAGED_RUNS = {
    "400-digit loss": ([f'{{"step": 5, "loss": {HUGE}}}'], _evaluation()),
    "400-digit step": ([f'{{"step": {HUGE}, "eval_loss": 1.0}}'], _evaluation()),
    "infinite train_runtime": (['{"step": 6, "train_runtime": Infinity}'], _evaluation()),
    "trainable_params a string": ([], _evaluation(train__trainable_params="abc")),
    "total_params a string": ([], _evaluation(train__total_params="abc")),
    "divergence warnings a number": ([], _evaluation(train__divergence_warnings_at=5)),
    "400-digit best_step": ([], _evaluation(train__best_step=int(HUGE))),
    "confusion rows a string": ([], _evaluation(matrix__rows_gold_cols_pred="xx")),
    "ragged confusion rows": ([], _evaluation(matrix__rows_gold_cols_pred=[[1, 2, 3], [1]])),
    "confusion labels a number": ([], _evaluation(matrix__labels=7)),
    "400-digit delta": ([], _evaluation(differences={"accuracy": {"delta": int(HUGE), "p_value": int(HUGE)}})),
}


@pytest.mark.parametrize("damage", list(DAMAGED_RUNS))
def test_report_of_a_run_with_damaged_files_renders(damage: str, tmp_path: Path) -> None:
    metrics, evaluation = DAMAGED_RUNS[damage]
    run = _run_dir(tmp_path / "run", metrics, evaluation)
    output = _cli("report", run)
    page = (run / "report.html").read_text()
    assert f"report: {run / 'report.html'}" in output and "Training" in page
    assert (run / "plots" / "loss.png").is_file()
    confusion = (run / "plots" / "confusion-fine-tuned.png").is_file()
    assert confusion == (not damage.startswith(("confusion", "ragged"))), damage


def test_fields_of_the_wrong_shape_are_dropped_and_sound_ones_kept() -> None:
    summary = eval_summary(
        _evaluation(
            train__trainable_params="abc",
            train__divergence_warnings_at=5,
            train__best_metric=float("nan"),
            matrix__rows_gold_cols_pred=[[1, 2, 3], [1]],
        )
    )
    train = summary["train"]
    assert "trainable_params" not in train and "divergence_warnings_at" not in train
    assert train["total_params"] == 20000 and train["best_step"] == 4 and train["best_metric"] != train["best_metric"]
    assert "confusion_matrix" not in summary["models"]["fine-tuned"] and summary["models"]["fine-tuned"]["n"] == 8
    sound = eval_summary(_evaluation(train__divergence_warnings_at=[2, 4]))
    assert sound["train"]["divergence_warnings_at"] == [2, 4]
    assert sound["models"]["fine-tuned"]["confusion_matrix"]["rows_gold_cols_pred"] == [[3, 1], [0, 4]]


def test_the_report_shows_what_a_damaged_train_summary_still_has(tmp_path: Path) -> None:
    run = _run_dir(tmp_path / "run", [], _evaluation(train__trainable_params="abc", train__divergence_warnings_at=5))
    page = render_report(run).read_text()
    assert "trainable params" not in page and "Overfitting warning" not in page
    assert "best step" in page and "4 of 4" in page
    run = _run_dir(tmp_path / "sound", [], _evaluation(train__divergence_warnings_at=[2, 4]))
    page = render_report(run).read_text()
    assert "1,000 of 20,000" in page and "Overfitting warning during training at step(s) 2, 4." in page


# ---- 4. predict's output, full disks -------------------------------------------------------------------


def _no_space(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _never_load(*args: object, **kwargs: object) -> None:
    raise AssertionError("the model was loaded before the output path was checked")


def test_predict_to_a_directory_fails_before_the_model_loads(write_config, tmp_path: Path, monkeypatch) -> None:
    import tunewise.models

    monkeypatch.setattr(tunewise.models, "load_model", _never_load)
    config = write_config(data={"labels": ["negative", "neutral", "positive"]})
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"text": "the ride was great"}\n')
    (tmp_path / "outdir").mkdir()
    output = _cli("predict", config, "--input", inputs, "--output", tmp_path / "outdir", code=2)
    assert f"error: predict: the output {tmp_path / 'outdir'} is a directory; pass --output with a file name" in output
    (tmp_path / "a-file").write_text("")
    output = _cli("predict", config, "--input", inputs, "--output", tmp_path / "a-file" / "out.jsonl", code=2)
    assert f"{tmp_path / 'a-file'} is not a directory" in " ".join(output.split())


def test_a_full_disk_while_writing_predictions_is_one_line(write_config, tmp_path: Path, monkeypatch) -> None:
    import tunewise.evaluate.predict as predict_module

    config = write_config(data={"labels": ["negative", "neutral", "positive"]})
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"text": "the ride was great"}\n')
    target = tmp_path / "out" / "predictions.jsonl"
    target.parent.mkdir()
    target.write_text("previous\n")
    monkeypatch.setattr(predict_module, "write_jsonl", _no_space)
    output = " ".join(_cli("predict", config, "--input", inputs, "--output", target, code=2).split())
    assert f"error: cannot write {target}: no space left on device (errno 28)" in output
    assert "pass --output on another disk" in output
    assert target.read_text() == "previous\n" and [p.name for p in target.parent.iterdir()] == ["predictions.jsonl"]


@pytest.mark.parametrize("failing", ["write_text", "write_bytes"])
def test_a_full_disk_while_writing_a_report_is_one_line(failing: str, tmp_path: Path, monkeypatch) -> None:
    run = _run_dir(tmp_path / "run", [], _evaluation())
    out = tmp_path / "pages" / "page.html"
    monkeypatch.setattr(Path, failing, _no_space)
    output = " ".join(_cli("report", run, "--out", out, code=2).split())
    written = out if failing == "write_text" else out.parent / "plots" / "loss.png"
    assert f"error: cannot write {written}: no space left on device (errno 28)" in output
    assert "run `tunewise report` again" in output
    assert not list(out.parent.glob("*.tmp"))
