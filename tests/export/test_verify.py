"""Each artifact checked against what it must reproduce, with the runtime that checked it named; a llama.cpp that
is missing or fails falls back to transformers' GGUF reader with a note, never to no check at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from tunewise.config import ExportConfig
from tunewise.errors import ExportError
from tunewise.export import verify
from tunewise.export.job import export_run

QUIET = Console(quiet=True)


def _gguf_check(out_dir: Path) -> dict:
    report = json.loads((out_dir / "export.json").read_text())
    return next(c for c in report["checks"] if c["artifact"].startswith("gguf"))


def test_without_llama_cpp_the_gguf_is_checked_by_transformers(run_copy: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(verify, "llama_cpp_installed", lambda: False)
    result = export_run(run_copy, ExportConfig(formats=["gguf"]), QUIET)
    check = _gguf_check(result.out_dir)
    assert check["runtime"] == "transformers GGUF reader"
    assert any("pip install 'tunewise[gguf]'" in note for note in check["notes"])
    assert check["logits"]["nmse"] < 1e-4 and check["prediction_agreement"] == 1.0
    assert check["tokenizer_agreement"] == 1.0  # the tokenizer read back from the GGUF encodes alike
    assert not (result.out_dir / "merged").exists()  # only the GGUF was asked for
    assert sorted(result.artifacts) == ["gguf", "modelfile"]


def test_a_llama_cpp_failure_falls_back_with_the_reason(run_copy: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(verify, "llama_cpp_installed", lambda: True)

    def crash(*args: object, **kwargs: object) -> None:
        raise ExportError("llama.cpp crashed (SIGSEGV; a build of llama-cpp-python for this CPU may fix it)")

    monkeypatch.setattr(verify, "run_probe", crash)
    result = export_run(run_copy, ExportConfig(formats=["gguf"], gguf_type="q8_0"), QUIET)
    check = _gguf_check(result.out_dir)
    assert check["artifact"] == "gguf q8_0" and check["runtime"] == "transformers GGUF reader"
    assert any("SIGSEGV" in note and "instead" in note for note in check["notes"])
    assert check["logits"]["nmse"] < 1e-2


def test_through_llama_cpp_the_f16_gguf_matches_the_merged_model(run_copy: Path):
    pytest.importorskip("llama_cpp")
    result = export_run(run_copy, ExportConfig(), QUIET)
    check = _gguf_check(result.out_dir)
    assert check["runtime"] == "llama.cpp" and check["logits_against"] == "merged"
    assert check["logits"]["nmse"] < 1e-4 and check["logit_verdict"] == "excellent"
    assert check["prediction_agreement"] >= 0.99 and check["greedy_agreement"] == 1.0
    assert check["tokenizer_agreement"] == 1.0


def test_the_modelfile_prompt_is_token_identical_on_every_record(run_copy: Path):
    result = export_run(run_copy, ExportConfig(formats=["gguf"]), QUIET)
    report = json.loads((result.out_dir / "export.json").read_text())
    assert report["modelfile"]["identical_tokens"] == report["modelfile"]["records"] == report["n_examples"]
    assert report["modelfile"]["prompt_field"] == "text"
    lines = (result.out_dir / "Modelfile").read_text().splitlines()
    assert next(line for line in lines if line.startswith("FROM")) == f"FROM {result.artifacts['gguf'].name}"


def test_gguf_type_from_the_file_name() -> None:
    assert verify._gguf_type(Path("m.q8_0.gguf")) == "q8_0"
    assert verify._gguf_type(Path("odd.gguf")) == "gguf"
