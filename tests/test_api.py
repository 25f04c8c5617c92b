"""`tunewise.api` resolves its inputs as the CLI does: overrides as a list or a mapping, configs from a file, a dict
or a Config, the resume choice, and the code-execution permission."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from tunewise import api
from tunewise.errors import TunewiseError
from tunewise.track.resume_target import ResumeRequest


def test_overrides_as_a_mapping_keep_their_types() -> None:
    strings = api._override_strings({"train.lr": 1e-4, "prompt.template": "yes: {{ text }}", "data.labels": ["a"]})
    assert strings == ["train.lr=0.0001", 'prompt.template="yes: {{ text }}"', 'data.labels=["a"]']
    assert api._override_strings(None) == [] and api._override_strings("train.lr=1") == ["train.lr=1"]


def test_resume_choices_map_to_the_cli_flags(tmp_path: Path) -> None:
    assert api.resume_request("auto") == ResumeRequest("auto") == api.resume_request(None)
    assert api.resume_request("fresh") == ResumeRequest("fresh")
    assert api.resume_request("newest") == ResumeRequest("resume", None)
    assert api.resume_request(tmp_path) == ResumeRequest("resume", tmp_path)
    with pytest.raises(TunewiseError, match="no such run directory"):
        api.resume_request(tmp_path / "missing")


def test_a_config_object_keeps_a_default_name_and_a_file_names_its_runs(write_config) -> None:
    path = write_config()
    config, named = api._config_and_path(path)
    assert named == path and config.model.name
    same, default = api._config_and_path(config)
    assert same is config and default.name == api.DEFAULT_CONFIG_NAME
    with pytest.raises(TunewiseError, match="edit the Config object"):
        api.Project(config, overrides=["train.lr=1"])


def test_unconfined_code_needs_the_code_permission() -> None:
    with pytest.raises(TunewiseError, match="only widens"), api._code_permission(False, True):
        pass


def test_a_run_with_an_export_section_ships_the_model_at_the_end(write_config, monkeypatch) -> None:
    import json

    from tunewise.export import verify

    monkeypatch.setattr(verify, "llama_cpp_installed", lambda: False)
    path = write_config(train={"epochs": 1}, export={"formats": ["merged"]})
    result = api.run(path, console=Console(quiet=True))
    export_dir = result.run_dir / "export"
    report = json.loads((export_dir / "export.json").read_text())
    assert report["formats"] == ["merged"] and (export_dir / "merged" / "model.safetensors").is_file()
    assert report["adapter"]["metrics"]["macro_f1"] == result.score("fine-tuned")


def test_export_takes_options_over_the_run_config_and_checks_them(tmp_path) -> None:
    with pytest.raises(TunewiseError, match="export: 'gguf_type'"):
        api.export(tmp_path / "no-run", gguf_type="q3_k")


def test_estimate_takes_overrides_and_refuses_a_negative_probe(write_config) -> None:
    estimate = api.estimate(write_config(), {"train.batch_size": 4}, probe_steps=0, console=Console(quiet=True))
    assert len(estimate.heaviest.examples) == 4 and estimate.probe is None and estimate.to_json()["fits"]
    with pytest.raises(TunewiseError, match="probe_steps must be 0"):
        api.estimate(write_config(), probe_steps=-1)


def test_launch_checks_the_process_count_and_only_rank_0_exports(write_config, monkeypatch) -> None:
    from tunewise import pipeline
    from tunewise.pipeline.eval_stages import Comparison, Evaluation
    from tunewise.pipeline.jobs import RunOutcome

    path = write_config(export={"formats": ["merged"]})
    with pytest.raises(TunewiseError, match="nproc must be 1 or more"):
        api.launch(["run", str(path)], 0, path)
    follower = RunOutcome(Path("runs/x"), "classification", "macro_f1", Evaluation(), Comparison(None), {}, False)
    monkeypatch.setattr(pipeline, "run_job", lambda *args, **kwargs: follower)
    monkeypatch.setattr(api, "export", lambda *args, **kwargs: pytest.fail("a rank > 0 exported"))
    result = api.run(path, console=Console(quiet=True))  # as rank 1 of a launch: trained, nothing else to do
    assert result.run_dir == Path("runs/x") and result.scores == []
