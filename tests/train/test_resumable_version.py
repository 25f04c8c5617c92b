"""The trainer warns, once, when the installed transformers is outside the versions its Trainer overrides were
verified against, and says nothing at a verified version."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import transformers
from packaging.specifiers import SpecifierSet
from rich.console import Console
from transformers import AutoModelForCausalLM, TrainingArguments

from tunewise.train import resumable
from tunewise.train.resumable import VERIFIED_TRANSFORMERS, ResumableTrainer, unverified_transformers


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """No version warned about yet, as in a new process."""
    monkeypatch.setattr(resumable, "_warned_versions", set())


def _build(model_dir: Path, output_dir: Path) -> str:
    """What building a trainer prints on the run's console."""
    out = io.StringIO()
    console = Console(file=out, width=400, color_system=None)
    args = TrainingArguments(output_dir=str(output_dir), use_cpu=True, report_to="none", save_strategy="no")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ResumableTrainer(model=model, args=args, metrics_path=output_dir / "metrics.jsonl", console=console)
    return out.getvalue()


def test_the_installed_version_is_the_verified_one():
    assert transformers.__version__ in SpecifierSet(VERIFIED_TRANSFORMERS, prereleases=True)
    assert unverified_transformers() is None


@pytest.mark.parametrize("version", ["5.25.0", "5.23.2", "6.0.0.dev0", "not-a-version"])
def test_a_version_outside_the_range_is_named_with_the_fix(version: str):
    warning = unverified_transformers(version)
    assert warning is not None and "\n" not in warning
    assert f"transformers {version} is outside {VERIFIED_TRANSFORMERS}" in warning
    assert "exact resume may not hold" in warning and "pip install -c constraints.txt transformers" in warning


@pytest.mark.usefixtures("fresh_process")
def test_building_a_trainer_warns_once_at_an_unverified_version(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(resumable, "installed_transformers", "5.99.0")
    first = _build(tiny_model_dir, tmp_path / "a")
    assert first.count("warning: ") == 1
    assert f"transformers 5.99.0 is outside {VERIFIED_TRANSFORMERS}" in first and "exact resume" in first
    assert "warning" not in _build(tiny_model_dir, tmp_path / "b")  # a sweep's next trial: already said


@pytest.mark.usefixtures("fresh_process")
def test_building_a_trainer_is_silent_at_the_verified_version(tiny_model_dir: Path, tmp_path: Path):
    assert unverified_transformers() is None
    assert "warning" not in _build(tiny_model_dir, tmp_path)
