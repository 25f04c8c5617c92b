"""`export_run` end to end on a tiny trained run: the merged directory loads with plain transformers and scores
like base + adapter, the export is published whole or not at all, and bad runs are one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

from tunewise.config import ExportConfig
from tunewise.errors import ExportError, TunewiseError
from tunewise.export import job
from tunewise.export.job import export_run

QUIET = Console(quiet=True)


def _merged_only(**changes: object) -> ExportConfig:
    return ExportConfig(formats=["merged"], **changes)


def test_merged_export_loads_without_tunewise_and_matches_base_plus_adapter(run_copy: Path, tiny_model_dir: Path):
    result = export_run(run_copy, _merged_only(), QUIET)
    merged = result.artifacts["merged"]
    assert (merged / "model.safetensors").is_file() and not list(merged.glob("*.bin"))
    # A separate interpreter that never imports tunewise loads it and prints its logits on fixed ids.
    ids = [5, 17, 42, 3, 99, 7]
    script = (
        "import json, sys, torch\n"
        "from transformers import AutoModelForCausalLM\n"
        "model = AutoModelForCausalLM.from_pretrained(sys.argv[1])\n"
        "assert not any(name.startswith('tunewise') for name in sys.modules)\n"
        f"print(json.dumps(model(input_ids=torch.tensor([{ids}])).logits[0].tolist()))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(merged)], capture_output=True, text=True, check=True)
    merged_logits = torch.tensor(json.loads(out.stdout.strip().splitlines()[-1]))

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, str(run_copy / "adapter")).eval()
    with torch.no_grad():
        expected = adapted(input_ids=torch.tensor([ids])).logits[0]
    assert (merged_logits - expected).abs().max().item() < 1e-4
    # The adapter's update is really in the weights: the merged model is not the base model.
    with torch.no_grad(), adapted.disable_adapter():
        plain = adapted(input_ids=torch.tensor([ids])).logits[0]
    assert (merged_logits - plain).abs().max().item() > 1e-3


def test_export_json_and_card_carry_the_fidelity_and_the_evidence(run_copy: Path):
    result = export_run(run_copy, _merged_only(), QUIET)
    report = json.loads((result.out_dir / "export.json").read_text())
    (check,) = report["checks"]
    assert check["artifact"] == "merged float32"
    assert check["logits"]["max_abs_diff"] <= 1e-3
    assert check["prediction_agreement"] == 1.0
    assert check["difference_to_adapter"]["delta"] == 0.0
    evaluated = json.loads((run_copy / "eval.json").read_text())
    assert report["adapter"]["metrics"]["macro_f1"] == pytest.approx(evaluated["models"]["fine-tuned"]["macro_f1"])
    card = (result.out_dir / "README.md").read_text()
    env = json.loads((run_copy / "env.json").read_text())
    assert env["data"]["train"]["sha256"] in card and env["data"]["test"]["sha256"] in card
    assert "## Export fidelity" in card and "<|im_start|>" in card  # the prompt, rendered
    assert (result.out_dir / "merged" / "README.md").read_text() == card
    generation = json.loads((result.artifacts["merged"] / "generation_config.json").read_text())
    assert generation["do_sample"] is False and generation["eos_token_id"] is not None


def test_overwrite_replaces_an_earlier_export_and_nothing_else(run_copy: Path):
    first = export_run(run_copy, _merged_only(), QUIET)
    (first.out_dir / "mine.txt").write_text("from the first export")
    with pytest.raises(ExportError, match="already exists; pass --overwrite"):
        export_run(run_copy, _merged_only(), QUIET)
    export_run(run_copy, _merged_only(), QUIET, overwrite=True)
    assert not (first.out_dir / "mine.txt").exists()
    folder = run_copy.parent / "my-models"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    with pytest.raises(ExportError, match="not an earlier export"):
        export_run(run_copy, _merged_only(), QUIET, out=folder, overwrite=True)
    assert (folder / "keep.txt").read_text() == "keep"


@pytest.mark.parametrize("target", ["run", "parent"])
def test_the_run_or_a_folder_holding_it_is_never_the_export_target(run_copy: Path, target: str):
    out = run_copy if target == "run" else run_copy.parent
    with pytest.raises(ExportError, match="is the run directory or holds it"):
        export_run(run_copy, _merged_only(), QUIET, out=out, overwrite=True)
    assert (run_copy / "adapter" / "adapter_model.safetensors").is_file()


def test_the_adapter_format_copies_only_the_adapter_files_never_a_link(run_copy: Path, tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    (run_copy / "adapter" / "notes.txt").symlink_to(secret)
    result = export_run(run_copy, ExportConfig(formats=["adapter"]), QUIET)
    shipped = sorted(p.name for p in result.artifacts["adapter"].iterdir())
    assert "notes.txt" not in shipped and "adapter_model.safetensors" in shipped
    weights = run_copy / "adapter" / "adapter_model.safetensors"
    weights.rename(tmp_path / "weights.safetensors")
    weights.symlink_to(tmp_path / "weights.safetensors")
    with pytest.raises(ExportError, match="not a regular file"):
        export_run(run_copy, ExportConfig(formats=["adapter"]), QUIET, overwrite=True)


def test_a_run_config_that_trusts_remote_code_is_refused(run_copy: Path):
    config = (run_copy / "config.yaml").read_text()
    (run_copy / "config.yaml").write_text(config.replace("trust_remote_code: false", "trust_remote_code: true"))
    with pytest.raises(ExportError, match="never runs a model's own code"):
        export_run(run_copy, _merged_only(), QUIET)


def test_a_failure_midway_leaves_no_export_and_no_staging(run_copy: Path, monkeypatch: pytest.MonkeyPatch):
    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(job, "write_model_card", full_disk)
    with pytest.raises(TunewiseError, match="no space left on device"):
        export_run(run_copy, _merged_only(), QUIET)
    assert not (run_copy / "export").exists()
    assert not [p for p in run_copy.iterdir() if p.name.startswith(".tmp-")]


def test_a_run_without_adapter_is_one_line(run_copy: Path):
    import shutil

    shutil.rmtree(run_copy / "adapter")
    with pytest.raises(ExportError, match="no trained adapter"):
        export_run(run_copy, _merged_only(), QUIET)


def test_a_prompt_tuning_adapter_cannot_be_merged(run_copy: Path):
    settings = json.loads((run_copy / "adapter" / "adapter_config.json").read_text())
    settings["peft_type"] = "PROMPT_TUNING"
    (run_copy / "adapter" / "adapter_config.json").write_text(json.dumps(settings))
    with pytest.raises(ExportError, match="cannot be merged.*--format adapter"):
        export_run(run_copy, _merged_only(), QUIET)


def test_an_adapter_trained_on_another_base_is_refused(run_copy: Path):
    settings = json.loads((run_copy / "adapter" / "adapter_config.json").read_text())
    settings["base_model_name_or_path"] = "/models/some-other-model"
    (run_copy / "adapter" / "adapter_config.json").write_text(json.dumps(settings))
    with pytest.raises(ExportError, match="trained on some-other-model"):
        export_run(run_copy, _merged_only(), QUIET)


def test_changed_test_data_is_refused(run_copy: Path):
    env = json.loads((run_copy / "env.json").read_text())
    test_file = Path(env["data"]["test"]["path"])
    original = test_file.read_text()
    try:
        test_file.write_text(original + '{"text": "one more", "label": "positive"}\n')
        with pytest.raises(ExportError, match="changed since the run"):
            export_run(run_copy, _merged_only(), QUIET)
    finally:
        test_file.write_text(original)


def test_not_a_run_directory(tmp_path: Path):
    with pytest.raises(ExportError, match="no such run directory"):
        export_run(tmp_path / "nope", _merged_only(), QUIET)
    with pytest.raises(ExportError, match="no config.yaml"):
        export_run(tmp_path, _merged_only(), QUIET)


def test_the_export_is_compared_with_the_runs_own_predictions_or_scores_the_adapter(run_copy: Path):
    recorded = export_run(run_copy, _merged_only(), QUIET, out=run_copy / "a").report
    assert recorded["adapter"]["predictions"] == "the run's predictions.jsonl"
    lines = (run_copy / "predictions.jsonl").read_text().splitlines()
    (run_copy / "predictions.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # one record short: not usable
    rescored = export_run(run_copy, _merged_only(), QUIET, out=run_copy / "b").report
    assert rescored["adapter"]["predictions"] == "scored by the export"
    assert rescored["adapter"]["metrics"]["macro_f1"] == pytest.approx(recorded["adapter"]["metrics"]["macro_f1"])
    assert rescored["checks"][0]["prediction_agreement"] == 1.0
