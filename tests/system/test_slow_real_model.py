"""The embedded SmolLM2-135M-Instruct for real (make test-slow): GGUF load, cache, a few training steps, export."""

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
