"""The evaluation stages on given predictions: write_results writes eval.json, predictions.jsonl and (with more
cells than base and fine-tuned) the matrix, each cell compared to the prompted base with a paired bootstrap."""

from __future__ import annotations

import json
import random
from pathlib import Path

from rich.console import Console

from tunewise.config import load_config
from tunewise.data.records import Record
from tunewise.data.splits import DataSplits
from tunewise.evaluate.tasks import task_for
from tunewise.pipeline.eval_stages import Evaluation, write_results
from tunewise.pipeline.prepare import PreparedData
from tunewise.track import RunDir

LABELS = ["neg", "pos"]


def _cell(gold: list[str], accuracy: float, seed: int) -> tuple[dict, list[dict]]:
    rng = random.Random(seed)
    preds = [{"gold": g, "pred": g if rng.random() < accuracy else LABELS[1 - LABELS.index(g)]} for g in gold]
    correct = sum(p["gold"] == p["pred"] for p in preds) / len(preds)
    return {"macro_f1": correct, "accuracy": correct}, preds


def _prepared(config, n: int = 80) -> PreparedData:
    records = [Record("classification", {"text": f"t{i}", "label": LABELS[i % 2]}, "t.jsonl", i + 1) for i in range(n)]
    splits = DataSplits(train=[], val=[], test=records, labels=LABELS)
    task = task_for("classification", LABELS, config.eval, config.train.max_length)
    return PreparedData(splits, task, records, None)


def test_results_compare_each_cell_with_the_base_and_write_the_matrix(write_config, tmp_path: Path) -> None:
    config = load_config(write_config())
    data = _prepared(config)
    gold = [r.fields["label"] for r in data.eval_records]
    evaluation = Evaluation()
    for name, accuracy, seed in (("base", 0.5, 1), ("fine-tuned", 0.9, 2), ("base · terse", 0.55, 3)):
        evaluation.results[name], evaluation.predictions[name] = _cell(gold, accuracy, seed)
    (tmp_path / "run").mkdir()
    console = Console(record=True, width=140)
    comparison = write_results(config, data, evaluation, None, {}, RunDir(tmp_path / "run"), console)

    assert comparison.reference == "base" and set(comparison.vs_reference) == {"fine-tuned", "base · terse"}
    assert comparison.differences["macro_f1"].low > 0  # 0.9 vs 0.5 on 80 examples: clearly better
    written = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert (
        written["delta"]["macro_f1"]
        == evaluation.results["fine-tuned"]["macro_f1"] - evaluation.results["base"]["macro_f1"]
    )
    matrix = json.loads((tmp_path / "run" / "eval_matrix.json").read_text())
    assert matrix["reference"] == "base" and set(matrix["cells"]) == set(evaluation.results)
    assert matrix["cells"]["fine-tuned"]["vs_reference"]["delta"] == comparison.vs_reference["fine-tuned"].delta
    predictions = (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 3 * 80 and json.loads(predictions[0])["model"] == "base"
    assert "base · terse" in console.export_text()


def test_no_results_write_nothing(write_config, tmp_path: Path) -> None:
    config = load_config(write_config())
    (tmp_path / "run").mkdir()
    comparison = write_results(config, _prepared(config), Evaluation(), None, {}, RunDir(tmp_path / "run"), Console())
    assert comparison.reference is None and not (tmp_path / "run" / "eval.json").exists()
