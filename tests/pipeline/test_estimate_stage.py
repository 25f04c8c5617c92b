"""tunewise.pipeline.estimate_stage: a configured run sized from its own data (curated splits when curation wrote
them, a seeded sample of a large split), the probe's figures replacing the arithmetic's, and the table printed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from support.tiny import make_classification_rows, write_jsonl
from tunewise.config import load_config
from tunewise.data.encode import encode_records
from tunewise.data.splits import load_splits
from tunewise.data.variants import DEFAULT_PROMPT, prompt_variants
from tunewise.models import load_tokenizer
from tunewise.pipeline import estimate_stage
from tunewise.pipeline.estimate_stage import estimate_run, print_estimate
from tunewise.train.estimate import planned_steps
from tunewise.train.probe import ProbeOutcome, ProbeResult


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def test_a_run_is_sized_from_its_own_encoded_data(write_config) -> None:
    config = load_config(write_config())
    estimate = estimate_run(config, quiet(), probe_steps=0)
    # the lengths are the run's encoding of its splits, independently recomputed here
    splits = load_splits(config.data, config.train.seed)
    tokenizer = load_tokenizer(config.model)
    renderer = prompt_variants(config, tokenizer, splits)[DEFAULT_PROMPT]
    items, _ = encode_records(splits.train, renderer, tokenizer, config.train.max_length)
    longest = sorted((len(e.input_ids) for e in items), reverse=True)[: config.train.batch_size]
    assert estimate.lengths.n_train == len(splits.train) == 96 and estimate.lengths.n_val == 24
    assert estimate.heaviest.tokens == sum(longest)  # packed: the batch_size longest examples in one row
    assert estimate.steps == planned_steps(96, config) == 24
    assert estimate.tokens.evaluations == 6  # every 4 of 24 steps
    assert estimate.peak_memory_bytes == estimate.arithmetic_peak_bytes == estimate.memory.total
    assert estimate.time.kind == "rough" and estimate.train_seconds > 0 and estimate.probe is None
    assert estimate.fits and estimate.available_memory_bytes
    assert json.loads(json.dumps(estimate.to_json()))["memory"]["total"] == estimate.memory.total


def test_curated_splits_are_read_when_curation_wrote_them(write_config, tmp_path: Path) -> None:
    output = tmp_path / "curated"
    curate = {"output": str(output), "steps": [{"step": "exact_dedup"}]}
    config = load_config(write_config(curate=curate))
    before = estimate_run(config, quiet(), probe_steps=0)
    assert before.lengths.n_train == 96 and any("curation has not run yet" in n for n in before.notes)
    write_jsonl(output / "train.jsonl", make_classification_rows(40, seed=5))
    after = estimate_run(config, quiet(), probe_steps=0)
    assert after.lengths.n_train == 40 and "curated splits" in after.data_source


def test_a_large_split_is_a_seeded_sample_scaled_up(write_config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(estimate_stage, "SAMPLE", 30)
    estimate = estimate_run(load_config(write_config()), quiet(), probe_steps=0)
    assert estimate.lengths.n_train == 96 and len(estimate.lengths.train) == 30
    assert any("seeded sample of 30 of 96" in note for note in estimate.notes)


def fake_probe(peak: int, load_peak: int = 10) -> ProbeOutcome:
    figures = ProbeResult(
        steps=3,
        device="cpu",
        peak_bytes=peak,
        peak_scope="training steps",
        load_peak_bytes=load_peak,
        start_bytes=5,
        ready_bytes=10,
        step_seconds=[9.0, 1.0, 1.0],
        step_tokens=[100, 50, 50],
        eval_seconds=0.2,
        eval_tokens=40,
    )
    return ProbeOutcome(result=figures)


def test_the_probes_figures_replace_the_arithmetics(write_config, monkeypatch: pytest.MonkeyPatch) -> None:
    requests = []

    def probe(config, steps, eval_batch, pad_token_id):
        requests.append((steps, eval_batch))
        return fake_probe(peak=123_456_789)

    monkeypatch.setattr(estimate_stage, "run_probe", probe)
    config = load_config(write_config())
    estimate = estimate_run(config, quiet(), probe_steps=3)
    ((steps, eval_batch),) = requests
    assert len(steps) == 3 and all(len(step) == config.train.grad_accum for step in steps)
    assert sum(len(e["input_ids"]) for e in steps[0][0]) == estimate.heaviest.tokens  # step 1: the heaviest
    assert len(eval_batch) == config.train.batch_size
    assert estimate.peak_memory_bytes == 123_456_789 != estimate.arithmetic_peak_bytes
    assert estimate.time.kind == "measured"
    assert estimate.time.train_seconds == pytest.approx(2.0 / 100 * estimate.tokens.train_tokens)  # steps 2-3


def test_a_failed_probe_is_reported_and_an_out_of_memory_one_does_not_fit(
    write_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    failure = "the probe was killed (SIGKILL), most likely by the out-of-memory killer: the run does not fit"
    monkeypatch.setattr(estimate_stage, "run_probe", lambda *a, **k: ProbeOutcome(failure=failure))
    estimate = estimate_run(load_config(write_config()), quiet(), probe_steps=1)
    assert not estimate.fits and estimate.reason.startswith("does not fit: the probe was killed")
    assert estimate.time.kind == "rough" and estimate.peak_memory_bytes == estimate.arithmetic_peak_bytes
    monkeypatch.setattr(estimate_stage, "run_probe", lambda *a, **k: ProbeOutcome(failure="the probe crashed"))
    crashed = estimate_run(load_config(write_config()), quiet(), probe_steps=1)
    assert crashed.fits and "probe failed: the probe crashed" in crashed.notes


def test_a_load_peak_above_training_counts_in_the_fit(write_config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(estimate_stage, "run_probe", lambda *a, **k: fake_probe(peak=2**30, load_peak=2**50))
    estimate = estimate_run(load_config(write_config()), quiet(), probe_steps=3)
    assert estimate.peak_memory_bytes == 2**30 and not estimate.fits  # a petabyte to load fits nowhere
    assert any("loading the model peaked above training" in note for note in estimate.notes)


def test_the_table_shows_every_component_and_the_verdict(write_config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(estimate_stage, "run_probe", lambda *a, **k: fake_probe(peak=2**30))
    estimate = estimate_run(load_config(write_config()), quiet(), probe_steps=3)
    out = io.StringIO()
    print_estimate(Console(file=out, width=200), estimate)
    text = out.getvalue()
    for row in ("weights", "LoRA + grads + AdamW", "activations", "LM head", "arithmetic peak", "probe peak", "time"):
        assert row in text
    assert "1.00 GiB over 3 steps (training steps)" in text and "(measured)" in text
    assert text.strip().splitlines()[-1].startswith("fits: ")
