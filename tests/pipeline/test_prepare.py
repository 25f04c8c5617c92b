"""The first stages: data read and checked into the run directory, eval inputs normalized as curation normalized
training text, adapters named as matrix cells, and a config pointed at curated files."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from support.tiny import make_classification_rows, write_jsonl
from tunewise.config import load_config
from tunewise.pipeline.prepare import adapter_names, load_model_for_run, prepare_data, with_curated_data
from tunewise.track import RunDir


def _run_dir(tmp_path: Path) -> RunDir:
    path = tmp_path / "run"
    path.mkdir()
    return RunDir(path)


def test_prepare_data_reads_the_splits_writes_rejects_and_picks_the_task(write_config, tmp_path: Path) -> None:
    config = load_config(write_config(data={"on_error": "skip"}))
    with (tmp_path / "data" / "train.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"text": "no label here"}\n')  # a reject, kept with its reason
    console = Console(record=True, width=120)
    data = prepare_data(config, _run_dir(tmp_path), console, curated=None)

    assert len(data.splits.train) == 96 and data.eval_records is data.splits.test
    assert data.task.primary_metric == "macro_f1" and data.normalization is None
    rejects = [json.loads(line) for line in (tmp_path / "run" / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 1 and rejects[0]["line"] == 97 and rejects[0]["field"] == "label"
    assert "rejects" in console.export_text()


def test_eval_inputs_are_normalized_like_curated_training_text(write_config, tmp_path: Path) -> None:
    rows = make_classification_rows(30, seed=2)
    write_jsonl(tmp_path / "data" / "test.jsonl", [{**r, "text": "cafÃ© " + r["text"]} for r in rows])
    config = load_config(write_config(curate={"output": str(tmp_path / "curated"), "steps": [{"step": "normalize"}]}))
    data = prepare_data(config, _run_dir(tmp_path), Console(quiet=True), curated=None)

    assert data.normalization is not None and data.normalization["changed"]["test"] == 30
    assert all(r.fields["text"].startswith("café ") for r in data.splits.test)  # mojibake repaired


def test_adapters_are_named_fine_tuned_alone_else_by_their_run(tmp_path: Path) -> None:
    one = tmp_path / "20260101-a" / "adapter"
    assert adapter_names([one]) == {"fine-tuned": one}
    other = tmp_path / "elsewhere" / "20260101-a" / "adapter"
    plain = tmp_path / "mine"
    assert list(adapter_names([one, other, plain])) == ["20260101-a", "20260101-a-2", "mine"]


def test_the_model_loads_with_one_renderer_per_prompt_variant(write_config, tmp_path: Path) -> None:
    config = load_config(write_config(prompt={"variants": {"terse": {"template": "{{ text }}"}}}))
    data = prepare_data(config, _run_dir(tmp_path), Console(quiet=True), curated=None)
    loaded = load_model_for_run(config, data.splits, Console(quiet=True))
    assert set(loaded.renderers) == {"default", "terse"} and loaded.renderer is loaded.renderers["default"]
    assert loaded.adapters == {}


def test_with_curated_data_reads_the_curated_files_with_canonical_fields(write_config, tmp_path: Path) -> None:
    config = load_config(write_config(data={"fields": {"text": "tweet"}}))
    curated = {"train": tmp_path / "c" / "train.jsonl", "val": tmp_path / "c" / "val.jsonl"}
    moved = with_curated_data(config, curated)
    assert moved.data.train == curated["train"] and moved.data.test is None
    assert moved.data.fields == {} and moved.data.format == "jsonl" and moved.curate is None
    assert config.data.fields == {"text": "tweet"}  # the original is unchanged
