"""The embedded models for real (make test-slow): SmolLM2-135M-Instruct (GGUF load, cache, a few training steps,
export) and the Gemma 3 270M base model (assembly from its part packages, load, a few steps on the plain prompt)."""

import json
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tunewise.cli import app
from tunewise.config import ModelConfig
from tunewise.models import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tunewise-cache")


def test_gguf_alias_loads_answers_and_is_cached_as_safetensors(cache_dir: Path, monkeypatch):
    monkeypatch.setenv("TUNEWISE_CACHE", str(cache_dir))
    first = load_model(ModelConfig(name="smollm2-135m-instruct"))
    cached = list((cache_dir / "gguf").glob("SmolLM2-135M-Instruct.Q4_1-*/model.safetensors"))
    assert len(cached) == 1
    start = time.perf_counter()
    second = load_model(ModelConfig(name="smollm2-135m-instruct"))
    reload_seconds = time.perf_counter() - start
    print(f"cached reload: {reload_seconds:.2f} s")
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    tok = second.tokenizer
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = second.model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :])


def test_run_on_real_tweets_for_a_few_steps(cache_dir: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TUNEWISE_CACHE", str(cache_dir))
    root = Path(__file__).resolve().parents[2]
    example = root / "examples" / "tweet-sentiment"
    if not (example / "data" / "raw.jsonl").is_file():
        import subprocess
        import sys

        subprocess.run([sys.executable, str(example / "prepare.py")], check=True)
    steps = [
        {"step": "validate", "max_tokens": 160},
        {"step": "normalize"},
        {"step": "exact_dedup"},
        {"step": "confidence", "min": 0.9, "keep_missing": False},
        {"step": "balance", "per_class": 10},
        {"step": "split", "val": 6, "test": 12},
        {"step": "decontaminate"},
    ]
    overrides = [
        f"curate.steps={json.dumps(steps)}",
        f"curate.output={tmp_path / 'curated'}",
        "train.max_steps=2",
        "train.eval_steps=1",
        f"output.dir={tmp_path / 'runs'}",
    ]
    result = CliRunner().invoke(app, ["run", str(example / "config.yaml"), *overrides], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run,) = [d for d in (tmp_path / "runs").iterdir() if d.is_dir()]
    report = json.loads((run / "eval.json").read_text())
    assert report["models"]["base"]["n"] == 12 and report["train"]["steps"] == 2
    assert (tmp_path / "curated" / "curation_report.html").is_file()
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    _export_and_check(run)


def test_fused_lora_matches_peft_on_the_real_model(cache_dir: Path, monkeypatch):
    """The fused LoRA update on SmolLM2-135M (30 layers, 210 adapted projections, GQA): PEFT's loss and gradients."""
    import random

    from peft import LoraConfig, get_peft_model

    from tunewise.train.fused_lora import enable_fused_lora
    from tunewise.train.loss import completion_only_loss
    from tunewise.train.packing import PackingCollator, enable_varlen_attention

    monkeypatch.setenv("TUNEWISE_CACHE", str(cache_dir))
    rng = random.Random(0)
    features = []
    for _ in range(4):
        prompt, answer = rng.randint(20, 60), rng.randint(2, 8)
        ids = [rng.randrange(10, 40000) for _ in range(prompt + answer)]
        features.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    batch = PackingCollator()(features)
    labels = batch.pop("labels")
    results = []
    for fused in (False, True):
        model = load_model(ModelConfig(name="smollm2-135m-instruct")).model
        torch.manual_seed(0)
        # scaling 1.5: not a power of two, so the fused and PEFT's orders of operations round differently
        lora = LoraConfig(r=16, lora_alpha=24, lora_dropout=0.1, target_modules="all-linear", init_lora_weights=False)
        peft_model = enable_varlen_attention(get_peft_model(model, lora)).train()
        if fused:
            assert enable_fused_lora(peft_model) == 210
        torch.manual_seed(1)  # the same dropout masks in both
        loss = completion_only_loss(peft_model(**batch), labels)
        loss.backward()
        grads = {n: p.grad for n, p in peft_model.named_parameters() if p.requires_grad}
        results.append((loss.item(), grads))
    (loss_plain, grads_plain), (loss_fused, grads_fused) = results
    assert abs(loss_plain - loss_fused) < 1e-4
    worst = max(
        ((grads_plain[k] - grads_fused[k]).abs().max() / grads_plain[k].abs().max()).item() for k in grads_plain
    )
    print(
        f"fused vs PEFT on the real model: loss {loss_fused:.6f} vs {loss_plain:.6f}, "
        f"worst relative grad diff {worst:.1e}"
    )
    assert worst < 1e-4


def _export_and_check(run: Path) -> None:
    """The few-steps run shipped: merged float32 against base + adapter, then GGUF f16 and q8_0 (through
    llama.cpp when llama-cpp-python is installed, else transformers' reader), metadata from the source GGUF."""
    import gguf

    result = CliRunner().invoke(app, ["export", str(run)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((run / "export" / "export.json").read_text())
    merged, f16 = report["checks"]
    assert merged["logits"]["max_abs_diff"] <= 1e-3 and merged["prediction_agreement"] == 1.0
    # After 2 steps some label margins are within f16 rounding: 1 of the 12 may flip (the demo run: 300 of 300)
    assert f16["logits"]["nmse"] < 1e-4 and f16["prediction_agreement"] >= 11 / 12
    assert report["gguf"]["metadata_from"] == "source GGUF"
    fields = gguf.GGUFReader(run / "export" / report["artifacts"]["gguf"]).fields
    assert fields["tokenizer.ggml.pre"].contents() == "smollm"
    assert "<|im_start|>" in fields["tokenizer.chat_template"].contents()
    assert report["modelfile"]["identical_tokens"] == report["modelfile"]["records"] == 12
    out = run / "export-q8"
    result = CliRunner().invoke(
        app, ["export", str(run), "--format", "gguf", "--quant", "q8_0", "--out", str(out)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    checks = json.loads((out / "export.json").read_text())["checks"]
    q8 = next(c for c in checks if c["artifact"] == "gguf q8_0")
    assert q8["logits"]["nmse"] < 1e-2


TWEETS = {
    "positive": [
        "just landed a new job and I could not be happier!!",
        "best coffee in town this morning, thank you @cafe",
        "our team won the final tonight, what a game",
        "sunny weekend at the beach with friends, perfect",
        "finally finished my thesis, so proud and relieved",
        "this new album is incredible, on repeat all day",
        "the concert last night was amazing, loved every song",
        "got the puppy today, she is the sweetest thing",
        "grandma turned 90 today and danced all evening",
        "fresh snow and an empty slope, dream morning",
        "passed my driving test on the first try!",
        "the new library downtown is beautiful, go see it",
        "my sister made me breakfast in bed, so sweet",
        "best birthday ever, thank you all for the wishes",
    ],
    "negative": [
        "my flight got cancelled again, worst airline ever",
        "phone screen cracked on day two, so annoyed",
        "stuck in traffic for two hours, I hate mondays",
        "the restaurant lost our booking and was rude about it",
        "sick in bed all weekend, everything hurts",
        "package arrived broken and support will not answer",
        "rain ruined the picnic and my shoes are soaked",
        "lost my wallet on the bus, terrible day",
        "the heating broke and the landlord does not care",
        "waited an hour at the doctor just to be sent home",
        "my laptop died in the middle of the exam",
        "the update deleted all my photos, furious",
        "missed the last train home, freezing at the station",
        "worst customer service I have ever had, never again",
    ],
}


def test_gemma3_base_alias_assembles_loads_trains_and_evaluates(cache_dir: Path, tmp_path: Path, monkeypatch):
    """gemma3-270m: assembled from its four part packages into an empty cache (pinned SHA-256), loaded as a base
    model that knows a fact, then 3 training steps and both evaluations on the plain prompt (max_length 64)."""
    import hashlib

    from rich.console import Console

    from tunewise import api
    from tunewise.models.embedded import EMBEDDED

    monkeypatch.setenv("TUNEWISE_CACHE", str(cache_dir))
    loaded = load_model(ModelConfig(name="gemma3-270m"))
    assembled = cache_dir / "embedded" / "gemma-3-270m-q4_k_m.gguf"
    with assembled.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    pinned = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"  # the SHA256SUMS of the package
    assert digest == EMBEDDED["gemma3-270m"].sha256 == pinned
    model, tok = loaded.model, loaded.tokenizer
    assert type(model).__name__ == "Gemma3ForCausalLM" and not tok.chat_template
    assert model.config.sliding_window == 512 and model.config.layer_types.count("full_attention") == 3
    ids = tok("Question: What is the capital of France?\nAnswer:", return_tensors="pt")
    assert ids["input_ids"][0, 0].item() == tok.bos_token_id  # a base Gemma needs its <bos>
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :])
    del loaded, model

    positive, negative = TWEETS["positive"], TWEETS["negative"]
    alternating = [
        {"text": text, "label": label}
        for pair in zip(positive, negative, strict=True)
        for text, label in zip(pair, ("positive", "negative"), strict=True)
    ]
    data = {}
    for name, part in (("train", alternating[:16]), ("val", alternating[16:20]), ("test", alternating[20:28])):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
        data[name] = str(path)
    config = {
        "model": {"name": "gemma3-270m"},
        "data": {"kind": "classification", **data},
        "prompt": {"chat_template": "auto", "system": "Label the sentiment of the tweet."},
        "train": {"max_steps": 3, "batch_size": 4, "eval_steps": 3, "logging_steps": 1, "max_length": 64},
        "eval": {"batch_size": 8},
        "output": {"dir": str(tmp_path / "runs")},
    }
    start = time.perf_counter()
    result = api.run(config, console=Console(quiet=True))
    print(f"gemma3-270m: 3 steps and two evaluations in {time.perf_counter() - start:.0f} s")
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert len(losses) == 3 and all(0 < loss < 50 for loss in losses), losses
    report = json.loads((result.run_dir / "eval.json").read_text())
    for name in ("base", "fine-tuned"):
        assert report["models"][name]["n"] == 8 and 0.0 <= report["models"][name]["macro_f1"] <= 1.0
    predictions = [json.loads(line) for line in (result.run_dir / "predictions.jsonl").read_text().splitlines()]
    base = {p["source"]: p["logprobs"] for p in predictions if p["model"] == "base"}
    tuned = {p["source"]: p["logprobs"] for p in predictions if p["model"] == "fine-tuned"}
    assert base.keys() == tuned.keys() and base != tuned  # the 3 steps changed the model
