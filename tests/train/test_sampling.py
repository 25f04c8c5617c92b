"""train.sampler: seeded epoch orders, batches that mix labels, and the warning when they would not."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from support.tiny import WORDS, write_jsonl
from tunewise.cli import app
from tunewise.config import load_config
from tunewise.train.sampling import EpochSeededSampler, batch_mix, epoch_order, stratified_order

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def length_skewed(n: int, minority: float, seed: int = 0) -> tuple[list[str], list[int]]:
    """Labels whose length predicts them, as spam vs ham: the minority is long, the majority short."""
    rng = random.Random(seed)
    labels = ["spam" if i < n * minority else "ham" for i in range(n)]
    rng.shuffle(labels)
    lengths = [rng.randint(30, 60) if label == "spam" else rng.randint(5, 35) for label in labels]
    return labels, lengths


def test_stratified_batches_hold_the_labels_in_their_training_set_proportions() -> None:
    labels, _ = length_skewed(1000, 0.13)
    order = stratified_order(labels, torch.Generator().manual_seed(3))
    assert sorted(order) == list(range(1000))
    share = labels.count("spam") / len(labels)
    for start in range(0, 1000 - 8, 8):
        spam = sum(labels[i] == "spam" for i in order[start : start + 8])
        assert int(8 * share) <= spam <= int(8 * share) + 1


def test_every_order_is_a_function_of_seed_and_epoch() -> None:
    labels, lengths = length_skewed(200, 0.2)
    for kind in ("random", "stratified", "length_grouped"):
        sampler = EpochSeededSampler(kind, 8, lengths, labels, seed=5)
        again = EpochSeededSampler(kind, 8, lengths, labels, seed=5)
        assert list(sampler) == list(again) == sampler.order(0)
        sampler.set_epoch(1)
        assert sorted(sampler) == list(range(200)) and list(sampler) != sampler.order(0)


def test_length_grouped_batches_of_length_correlated_labels_are_flagged_and_the_others_are_not() -> None:
    labels, lengths = length_skewed(1000, 0.13)
    mixes = {
        kind: batch_mix(epoch_order(kind, 1000, 8, torch.Generator().manual_seed(1), lengths, labels), labels, 8)
        for kind in ("random", "stratified", "length_grouped")
    }
    assert mixes["length_grouped"].dispersion > 2 > mixes["random"].dispersion > mixes["stratified"].dispersion
    warning = mixes["length_grouped"].warning("length_grouped")
    assert warning is not None and "hold one label" in warning and "random or stratified" in warning
    assert mixes["random"].warning("random") is None and mixes["stratified"].warning("stratified") is None


def test_an_epoch_that_ends_on_one_label_is_named() -> None:
    labels = ["a", "b"] * 40 + ["a"] * 40  # the last third: one label only
    mix = batch_mix(list(range(120)), labels, 8)
    assert mix.tail_label == "a" and mix.tail_share == pytest.approx(5 / 15)
    assert "the last 33% of the epoch sees only 'a'" in (mix.warning("length_grouped") or "")


def skewed_rows(n: int, seed: int) -> list[dict[str, str]]:
    """Positive texts (13%) are long, negative ones short: length alone nearly gives the label."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 8 == 0 else "negative"
        padding = rng.sample(
            ["the", "car", "ride", "was", "today", "really", "my", "trip"], 6 if label == "positive" else 1
        )
        rows.append({"text": " ".join([rng.choice(WORDS[label]), *padding]), "label": label})
    return rows


def test_the_default_sampler_mixes_labels_and_the_fine_tune_learns_both(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = {
        split: write_jsonl(tmp_path / f"{split}.jsonl", skewed_rows(n, seed))
        for split, n, seed in (("train", 192, 0), ("val", 32, 1), ("test", 64, 2))
    }
    config = {
        "model": {"name": str(tiny_model_dir)},
        "data": {"kind": "classification", **{k: str(v) for k, v in data.items()}},
        "train": {"lr": 3e-2, "batch_size": 8, "epochs": 3, "eval_steps": 24, "max_length": 64, "patience": 0},
        "eval": {"batch_size": 16},
        "output": {"dir": str(tmp_path / "runs"), "name": "skewed"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert load_config(path).train.sampler == "random"  # the default

    result = CliRunner().invoke(app, ["run", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())
    assert "hold one label" not in printed
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    tuned = Counter(r["pred"] for r in rows if r["model"] == "fine-tuned")
    assert set(tuned) == {"negative", "positive"}, tuned
    evaluation = json.loads((run / "eval.json").read_text())
    assert evaluation["models"]["fine-tuned"]["macro_f1"] > evaluation["models"]["base"]["macro_f1"]
    sizing = evaluation["train"]["sizing"]  # printed after the first steps, so the user can size the run
    assert sizing["seconds_per_step"] > 0 and sizing["peak_memory_gib"] > 0.1
    assert "sizing: " in printed and " s per optimizer step (steps 2-5); the 67 steps left take about" in printed

    flagged = CliRunner().invoke(app, ["run", str(path), "train.sampler=length_grouped", "train.epochs=1"])
    assert flagged.exit_code == 0, flagged.output
    assert "hold one label" in " ".join(flagged.output.split())


@pytest.mark.parametrize("kind", ["random", "stratified", "length_grouped"])
def test_accelerate_deals_each_ranks_share_of_the_one_process_accumulated_batch(kind: str) -> None:
    """Each rank draws the same order; accelerate's shard wrapper (what the Trainer's `prepare` puts around the
    batch sampler under DDP) deals its batches to the ranks in turn, so an optimizer step of 2 ranks x 1 micro-batch
    of 4 trains the examples of one process's 2 accumulated micro-batches of 4, epoch after epoch."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler

    labels, lengths = length_skewed(96, 0.3)
    sampler = EpochSeededSampler(kind, 8, lengths, labels, seed=3)  # length groups span the global batch of 8
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        one = list(BatchSampler(sampler, 4, drop_last=False))
        ranks = [list(BatchSamplerShard(BatchSampler(sampler, 4, False), 2, rank)) for rank in (0, 1)]
        steps = [ranks[0][step] + ranks[1][step] for step in range(len(ranks[0]))]
        assert steps == [one[2 * step] + one[2 * step + 1] for step in range(len(one) // 2)]
        assert len(steps) == 12
