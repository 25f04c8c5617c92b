"""Run sizing (train/callbacks.py RunSizing): time per step and the time left, measured after the first step."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from tunewise.train import callbacks
from tunewise.train.callbacks import RunSizing, peak_memory_gib


def run_steps(
    monkeypatch, seconds_per_step: list[float], max_steps: int, eval_steps: int | None
) -> tuple[RunSizing, str]:
    """RunSizing through `len(seconds_per_step)` optimizer steps that take those times (after a first step)."""
    clock = iter([0.0, *(sum(seconds_per_step[: i + 1]) for i in range(len(seconds_per_step)))])
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(callbacks, "peak_memory_gib", lambda: 1.234)
    out = io.StringIO()
    sizing = RunSizing(Console(file=out, width=400))
    args = SimpleNamespace(eval_steps=eval_steps)
    for step in range(1, len(seconds_per_step) + 2):
        sizing.on_step_end(args, SimpleNamespace(global_step=step, max_steps=max_steps), None)
    return sizing, out.getvalue()


def test_sizing_is_printed_once_after_the_measured_steps(monkeypatch):
    sizing, printed = run_steps(monkeypatch, [2.0, 2.0, 2.0, 2.0, 9.0, 9.0], max_steps=105, eval_steps=50)
    assert sizing.figures == {"seconds_per_step": 2.0, "peak_memory_gib": 1.23}
    assert printed.count("sizing:") == 1  # later steps do not print again
    assert printed.strip() == (
        "sizing: 2.00 s per optimizer step (steps 2-5); the 100 steps left take about 3m20s of training, plus "
        "3 validation passes; peak memory so far 1.23 GiB"
    )


def test_the_first_step_is_left_out_of_the_timing(monkeypatch):
    clock = iter([100.0, 101.0, 102.0, 103.0, 104.0])  # the first step's own cost never enters
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(callbacks, "peak_memory_gib", lambda: 0.5)
    sizing = RunSizing(Console(file=io.StringIO()))
    for step in range(1, 6):
        sizing.on_step_end(SimpleNamespace(eval_steps=None), SimpleNamespace(global_step=step, max_steps=5), None)
    assert sizing.figures["seconds_per_step"] == 1.0


@pytest.mark.parametrize(
    ("per_step", "left", "shown"),
    [(0.25, 100, "25s"), (1.5, 100, "2m30s"), (12.0, 500, "100m00s")],
)
def test_the_time_left_reads_as_the_run_table_prints_durations(monkeypatch, per_step: float, left: int, shown: str):
    _, printed = run_steps(monkeypatch, [per_step] * 4, max_steps=left + 5, eval_steps=None)
    assert f"the {left} steps left take about {shown} of training, plus 0 validation passes;" in printed


def test_one_validation_pass_is_singular_and_a_short_run_prints_nothing(monkeypatch):
    _, printed = run_steps(monkeypatch, [1.0] * 4, max_steps=5, eval_steps=10)
    assert "plus 1 validation pass;" in printed and "the 0 steps left take about 0s" in printed
    sizing, printed = run_steps(monkeypatch, [1.0] * 3, max_steps=4, eval_steps=None)
    assert printed == "" and sizing.figures == {}


def test_peak_memory_is_the_process_peak_without_an_accelerator():
    assert 0.01 < peak_memory_gib() < 1024


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="resettable peak needs Linux /proc")
def test_the_peak_restarts_at_a_reset():
    held = b"x" * (200 * 2**20)  # resident: every page written
    before = callbacks.peak_memory_bytes()
    del held
    assert callbacks.reset_peak_memory()
    after = callbacks.peak_memory_bytes()
    assert after < before - 150 * 2**20 and after <= (callbacks.resident_bytes() or 0) + 2**20
    assert peak_memory_gib() == pytest.approx(callbacks.peak_memory_bytes() / 2**30, abs=0.01)
