"""End to end on a tiny random Llama: `tunewise run`, `train` and `eval` through the CLI."""

import json
from pathlib import Path

from typer.testing import CliRunner

from support.cli import invoke as _invoke
from support.cli import only_run as _only_run
from tunewise.cli import app
from tunewise.config import load_config

runner = CliRunner()


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_run_writes_the_run_directory_and_learns(write_config, tmp_path: Path):
    result = _invoke("run", write_config())
    assert result.exit_code == 0, result.output
    run = _only_run(tmp_path / "runs")
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "eval.json",
        "predictions.jsonl",
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
    ):
        assert (run / name).is_file(), name
    assert not list((run / "adapter").glob("*.bin"))  # weights as safetensors only
    load_config(run / "config.yaml")  # the resolved config is itself a valid config

    losses = [m["loss"] for m in _metrics(run) if "loss" in m]
    assert len(losses) >= 5 and losses[-1] < 0.5 * losses[0]
    evals = [m["eval_loss"] for m in _metrics(run) if "eval_loss" in m]
    assert evals[-1] < evals[0]

    report = json.loads((run / "eval.json").read_text())
    assert set(report["models"]) == {"base", "fine-tuned"}
    for metrics in report["models"].values():
        assert metrics["n"] == 30 and 0.0 <= metrics["macro_f1"] <= 1.0
        assert set(metrics["per_class"]) == {"negative", "neutral", "positive"}
    assert report["train"]["best_step"] is not None
    f1_diff = report["differences"]["macro_f1"]
    assert f1_diff["ci_low"] <= f1_diff["delta"] <= f1_diff["ci_high"] and 0 < f1_diff["p_value"] <= 1
    assert f1_diff["delta"] == report["models"]["fine-tuned"]["macro_f1"] - report["models"]["base"]["macro_f1"]
    assert "95% CI" in result.output
    assert "macro_f1" in result.output and "fine-tuned" in result.output
    assert "trainable params" in result.output

    predictions = (run / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 60

    # the saved adapter reproduces the fine-tuned figures through `tunewise eval`
    again = _invoke("eval", write_config(output={"dir": str(tmp_path / "eval-runs")}), "--adapter", run / "adapter")
    assert again.exit_code == 0, again.output
    rerun = json.loads((_only_run(tmp_path / "eval-runs") / "eval.json").read_text())
    assert abs(rerun["models"]["fine-tuned"]["macro_f1"] - report["models"]["fine-tuned"]["macro_f1"]) < 1e-9
    assert rerun["models"]["base"] == report["models"]["base"]


def test_early_stopping_stops_a_run_whose_validation_loss_stalls(write_config, tmp_path: Path):
    config = write_config(train={"lr": 1e-9, "epochs": 4, "eval_steps": 2, "patience": 2, "min_delta": 0.01})
    result = _invoke("train", config)
    assert result.exit_code == 0, result.output
    run = _only_run(tmp_path / "runs")
    end = next(m for m in _metrics(run) if m.get("event") == "train_end")
    planned = 4 * 96 // 8
    assert end["stopped_early"] is True and end["step"] == 6 < planned  # evals at 2, 4, 6: no gain >= 0.01
    assert end["best_step"] in (2, 4, 6)  # the stalled evaluations differ only by float noise
    assert "early stopping at step 6" in result.output


def test_overfitting_warning_when_val_rises_while_train_falls(write_config, tmp_path: Path, tiny_data):
    # Three memorable training texts; validation asks the same texts with other answers,
    # so the better the model memorises train, the worse validation gets.
    texts = {"negative": "awful awful awful", "neutral": "plain plain plain", "positive": "great great great"}
    flipped = {"negative": "positive", "positive": "neutral", "neutral": "negative"}
    train_rows = [{"text": texts[label], "label": label} for label in sorted(texts)] * 32
    val_rows = [{"text": texts[label], "label": flipped[label]} for label in sorted(texts)] * 4
    tiny_data["train"].write_text("".join(json.dumps(r) + "\n" for r in train_rows))
    tiny_data["val"].write_text("".join(json.dumps(r) + "\n" for r in val_rows))
    # No LoRA dropout: with lr 2e-2 the dropout draw alone decides whether train loss still falls at the divergence.
    config = write_config(
        train={"lr": 2e-2, "epochs": 3, "eval_steps": 3, "divergence_evals": 2}, lora={"dropout": 0.0}
    )
    result = _invoke("train", config)
    assert result.exit_code == 0, result.output
    events = [m for m in _metrics(_only_run(tmp_path / "runs")) if m.get("event") == "divergence"]
    assert events and "overfitting" in result.output


def test_generative_kinds_train_and_report_answer_perplexity(write_config, tmp_path: Path, tiny_data):
    rows = [json.loads(line) for line in tiny_data["train"].read_text().splitlines()]
    chats = [
        {"messages": [{"role": "user", "content": r["text"]}, {"role": "assistant", "content": r["label"]}]}
        for r in rows
    ]
    for name, kind, records in (
        ("completion", "completion", [{"prompt": r["text"], "completion": r["label"]} for r in rows]),
        ("chat", "chat", chats),
        (
            "alpaca",
            "alpaca",
            [{"instruction": "Label it.", "input": r["text"], "output": r["label"]} for r in rows],
        ),
    ):
        data = tmp_path / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in records))
        config = write_config(
            data={"kind": kind, "train": str(data), "val": None, "test": None},
            train={"epochs": 1},
            output={"dir": str(tmp_path / name)},
        )
        result = _invoke("run", config)
        assert result.exit_code == 0, result.output
        report = json.loads((_only_run(tmp_path / name) / "eval.json").read_text())
        base, tuned = report["models"]["base"], report["models"]["fine-tuned"]
        assert report["task"] == "generation" and base["n"] == tuned["n"] > 0
        assert 0 <= tuned["chrf"] <= 100 and "bleu" in tuned
        assert tuned["reference_perplexity"] < base["reference_perplexity"], name
        assert set(report["differences"]) == {"sentence_chrf"}


def test_summarization_and_qa_tasks_score_generated_text(write_config, tmp_path: Path, tiny_data):
    rows = [json.loads(line) for line in tiny_data["train"].read_text().splitlines()]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"prompt": r["text"], "completion": r["label"]}) + "\n" for r in rows))
    for task, metric in (("summarization", "rougeL"), ("qa", "f1")):
        config = write_config(
            data={"kind": "completion", "train": str(data), "val": None, "test": None},
            train={"max_steps": 2},
            eval={"task": task, "max_new_tokens": 4, "stop": ["\n"]},
            output={"dir": str(tmp_path / task)},
        )
        result = _invoke("run", config)
        assert result.exit_code == 0, result.output
        run = _only_run(tmp_path / task)
        report = json.loads((run / "eval.json").read_text())
        assert report["task"] == task and report["primary_metric"] == metric
        assert 0 <= report["models"]["fine-tuned"][metric] <= 1
        first = json.loads((run / "predictions.jsonl").read_text().splitlines()[0])
        assert {"reference", "pred", metric} <= set(first)


def test_predict_writes_one_output_per_input_row(write_config, tmp_path: Path, tiny_data):
    labels = {"labels": ["negative", "neutral", "positive"]}
    config = write_config(data=labels, train={"max_steps": 2})
    assert _invoke("train", config).exit_code == 0
    adapter = _only_run(tmp_path / "runs") / "adapter"
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text('{"text": "the ride was great"}\n{"text": "awful trip"}\nnot json\n')
    result = _invoke("predict", config, "--input", inputs, "--adapter", adapter)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "inputs.predictions.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == ["the ride was great", "awful trip"]
    assert all(r["pred"] in labels["labels"] and set(r["logprobs"]) == set(labels["labels"]) for r in rows)
    assert "1 of 3 input rows rejected" in result.output

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "the car was"}\n')
    gen_config = write_config(
        data={"kind": "completion", "train": str(prompts), "val": None, "test": None}, eval={"max_new_tokens": 5}
    )
    result = _invoke("predict", gen_config, "--input", prompts, "--output", tmp_path / "out.jsonl")
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert row["prompt"] == "the car was" and isinstance(row["pred"], str)


def test_prompt_variants_make_a_model_by_prompt_matrix_with_cis(write_config, tmp_path: Path):
    variants = {"few-shot": {"few_shot": 2}, "terse": {"template": "{{ text }}"}}
    result = _invoke("run", write_config(prompt={"variants": variants}, train={"max_steps": 4}))
    assert result.exit_code == 0, result.output
    run = _only_run(tmp_path / "runs")
    cells = set(json.loads((run / "eval.json").read_text())["models"])
    assert cells == {
        "base",
        "base · few-shot",
        "base · terse",
        "fine-tuned",
        "fine-tuned · few-shot",
        "fine-tuned · terse",
    }
    matrix = json.loads((run / "eval_matrix.json").read_text())
    assert matrix["reference"] == "base" and matrix["cells"]["base"].get("vs_reference") is None
    diff = matrix["cells"]["fine-tuned · few-shot"]["vs_reference"]
    assert diff["ci_low"] <= diff["delta"] <= diff["ci_high"]
    assert "Models x prompts" in result.output


def test_early_stopping_on_a_task_metric_scored_during_training(write_config, tmp_path: Path):
    config = write_config(
        train={"lr": 1e-9, "epochs": 4, "eval_steps": 2, "patience": 2, "metric": "macro_f1", "metric_examples": 12}
    )
    result = _invoke("train", config)
    assert result.exit_code == 0, result.output
    metrics = _metrics(_only_run(tmp_path / "runs"))
    f1_at = {m["step"]: m["eval_macro_f1"] for m in metrics if "eval_macro_f1" in m}
    assert sorted(f1_at) == [2, 4, 6] and all(0 <= v <= 1 for v in f1_at.values())
    end = next(m for m in metrics if m.get("event") == "train_end")
    assert end["stopped_early"] and end["best_metric"] == f1_at[end["best_step"]]


def test_task_metric_of_another_task_is_refused(write_config):
    result = runner.invoke(app, ["train", str(write_config(train={"metric": "rougeL"}))])
    assert result.exit_code == 2 and "not a metric of the classification task" in result.output


def test_classification_by_generated_answer_and_label_parsing(write_config, tmp_path: Path):
    config = write_config(train={"max_steps": 2}, eval={"label_mode": "generate", "max_new_tokens": 4})
    result = _invoke("run", config)
    assert result.exit_code == 0, result.output
    run = _only_run(tmp_path / "runs")
    report = json.loads((run / "eval.json").read_text())
    for metrics in report["models"].values():
        assert 0 <= metrics["unparsed"] <= metrics["n"] == 30 and 0 <= metrics["macro_f1"] <= 1
    first = json.loads((run / "predictions.jsonl").read_text().splitlines()[0])
    assert "output" in first and first["pred"] in {"negative", "neutral", "positive", "(unparsed)"}


def test_eval_compares_several_adapters_with_the_prompted_base(write_config, tmp_path: Path):
    for lr in (1e-3, 1e-9):
        assert _invoke("train", write_config(train={"max_steps": 3, "lr": lr})).exit_code == 0
    adapters = sorted((tmp_path / "runs").glob("*/adapter"))
    assert len(adapters) == 2
    config = write_config(output={"dir": str(tmp_path / "eval-runs")}, prompt={"variants": {"few": {"few_shot": 2}}})
    result = _invoke("eval", config, "--adapter", adapters[0], "--adapter", adapters[1])
    assert result.exit_code == 0, result.output
    report = json.loads((_only_run(tmp_path / "eval-runs") / "eval.json").read_text())
    names = [a.parent.name for a in adapters]
    assert set(report["models"]) == {"base", "base · few"} | {n for n in names} | {f"{n} · few" for n in names}
    assert report["adapters"] == {n: str(a) for n, a in zip(names, adapters, strict=True)}
    scores = [report["models"][n]["macro_f1"] for n in names]
    matrix = json.loads((_only_run(tmp_path / "eval-runs") / "eval_matrix.json").read_text())
    assert [matrix["cells"][n]["macro_f1"] for n in names] == scores
    assert all(
        matrix["cells"][n]["vs_reference"]["ci_low"] <= matrix["cells"][n]["vs_reference"]["ci_high"] for n in names
    )
    # each cell really ran its own adapter: the lr=1e-9 one scores like the base model, the other does not
    rows = [json.loads(line) for line in (_only_run(tmp_path / "eval-runs") / "predictions.jsonl").open()]
    logprobs = {m: [r["logprobs"]["neutral"] for r in rows if r["model"] == m] for m in ("base", *names)}
    trained, frozen = names  # run directories sort in creation order
    assert max(abs(a - b) for a, b in zip(logprobs["base"], logprobs[frozen], strict=True)) < 1e-3
    assert max(abs(a - b) for a, b in zip(logprobs["base"], logprobs[trained], strict=True)) > 1e-2


def test_train_path_switches_give_the_plain_losses(write_config, tmp_path: Path):
    """Every speed/memory switch of `train:` trains the same model: packing, the fused LoRA update, checkpointing."""
    plain = {"packing": False, "fused_lora": False}
    variants = {
        "plain": plain,
        "default": {},
        "packed, PEFT forward": {"fused_lora": False},
        "padded, fused": {"packing": False},
        "default + gradient checkpointing": {"gradient_checkpointing": True},
    }
    losses = {}
    for name, switches in variants.items():
        out = tmp_path / f"runs-{len(losses)}"
        config = write_config(train={"max_steps": 3, **switches}, lora={"dropout": 0.0}, output={"dir": str(out)})
        assert _invoke("train", config).exit_code == 0
        rows = _metrics(_only_run(out))
        losses[name] = [m["loss"] for m in rows if "loss" in m] + [m["eval_loss"] for m in rows if "eval_loss" in m]
    assert len(losses["plain"]) >= 3
    for name, got in losses.items():
        assert max(abs(a - b) for a, b in zip(losses["plain"], got, strict=True)) < 1e-4, (name, got, losses["plain"])


def _data_summary(config: Path, with_config: bool) -> str:
    from rich.console import Console

    from tunewise.data.splits import load_splits
    from tunewise.pipeline.summary import print_data_summary

    data = load_config(config).data
    console = Console(record=True, width=300)
    print_data_summary(console, load_splits(data, seed=0), "rejects.jsonl", data if with_config else None)
    return console.export_text().splitlines()[0]


def test_data_summary_shows_the_records_used_and_the_file_count_when_a_cap_left_some_out(write_config):
    # the val file has 24 rows; the training and test files are used whole. Told from the counts alone, as
    # for a caller that does not pass the config.
    line = _data_summary(write_config(data={"max_val_examples": 5}), with_config=False)
    assert line == "data: train 96, val 5 of 24 (data.max_val_examples), test 30; rejected: 0"


def test_data_summary_names_a_training_cap_beside_the_splits_taken_from_the_training_file(write_config, tiny_data):
    with tiny_data["train"].open("a") as fh:
        fh.write("not json\n")
    config = write_config(data={"val": None, "test": None, "max_train_examples": 20, "on_error": "skip"})
    line = _data_summary(config, with_config=True)
    assert line.startswith("data: train 20 of 97 (1 rejected; val, test split off; data.max_train_examples), val ")
    assert line.count("(split off train)") == 2 and line.endswith("; rejected: 1")
