"""tunewise.models.quantize: `model.quantize` loads QLoRA's NF4 (or 8-bit) base, a missing bitsandbytes is one line
naming the install, a 4-bit base evaluated on CPU still trains with true gradients and works at any layer width, and
bitsandbytes' noise is filtered."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model

from support.tiny import build_tiny_model
from tunewise.config import ModelConfig
from tunewise.errors import ModelLoadError
from tunewise.models import load_model
from tunewise.models.quantize import NOISE, DropRepeats, bitsandbytes_config, quiet_bitsandbytes

pytest.importorskip("bitsandbytes")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny64_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-64"), hidden_size=64)


def test_4bit_is_qlora_nf4_with_double_quantization_in_the_model_dtype() -> None:
    config = bitsandbytes_config("4bit", torch.bfloat16)
    assert config.load_in_4bit and not config.load_in_8bit
    assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    eight = bitsandbytes_config("8bit", torch.float32)
    assert eight.load_in_8bit and not eight.load_in_4bit


@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_a_quantized_model_loads_with_bitsandbytes_layers(tiny64_dir: Path, quantize: str) -> None:
    import bitsandbytes as bnb

    layer = {"4bit": bnb.nn.Linear4bit, "8bit": bnb.nn.Linear8bitLt}[quantize]
    model = load_model(ModelConfig(name=str(tiny64_dir), quantize=quantize, device="cpu")).model
    quantized = [name for name, module in model.named_modules() if isinstance(module, layer)]
    assert len(quantized) == 14  # q, k, v, o, gate, up, down in each of 2 layers; the tied output layer is not
    assert not isinstance(model.lm_head, layer) and model.device.type == "cpu"


def test_without_bitsandbytes_quantize_is_one_line_naming_the_extra(tiny64_dir: Path, monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a)
    )
    with pytest.raises(ModelLoadError) as error:
        load_model(ModelConfig(name=str(tiny64_dir), quantize="4bit"))
    message = str(error.value)
    assert "\n" not in message
    assert "model.quantize: 4bit" in message and "pip install 'tunewise[qlora]'" in message
    assert "model.quantize: none" in message
    load_model(ModelConfig(name=str(tiny64_dir)))  # an unquantized model needs no bitsandbytes


def lora_gradients(model: Any, ids: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(model, config).train()
    loss = peft_model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.item(), {n: p.grad for n, p in peft_model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_a_base_evaluated_before_training_trains_with_the_gradients_of_a_fresh_one(
    tiny64_dir: Path, quantize: str
) -> None:
    """A run scores the base model (eval mode, no gradients) before training it. On a CPU with AVX512-BF16,
    bitsandbytes' 4-bit layers then switch for good to an inference kernel without a backward: unless tunewise
    keeps them off it, the gradient through every frozen base weight is lost (torch only warns)."""
    ids = torch.randint(5, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    fresh = load_model(ModelConfig(name=str(tiny64_dir), quantize=quantize, device="cpu")).model.train()
    with torch.no_grad():
        train_logits = fresh(input_ids=ids).logits
    evaluated = load_model(ModelConfig(name=str(tiny64_dir), quantize=quantize, device="cpu")).model.eval()
    with torch.no_grad():
        for shape in [(4, 12), (1, 1), (3, 1)]:  # batches, and the one-token rows of generation
            evaluated(input_ids=torch.randint(5, 300, shape))
        eval_logits = evaluated(input_ids=ids).logits
    loss_fresh, grads_fresh = lora_gradients(fresh, ids)
    loss_evaluated, grads_evaluated = lora_gradients(evaluated, ids)
    assert loss_evaluated == loss_fresh
    assert grads_fresh.keys() == grads_evaluated.keys() and len(grads_fresh) == 28
    assert all(torch.equal(grads_fresh[k], grads_evaluated[k]) for k in grads_fresh)
    if quantize == "4bit":  # evaluation computes as training does (8-bit eval is int8, its training dequantizes)
        assert torch.equal(eval_logits, train_logits)


def test_4bit_layers_of_any_width_evaluate_and_train_on_cpu(tmp_path: Path) -> None:
    """Widths of 32 (no multiple of bitsandbytes' 64-weight blocks): its CPU inference repacking would fail with
    "shape '[32, 0]' is invalid"; kept off it, the base evaluates and trains like any other."""
    model_dir = build_tiny_model(tmp_path / "tiny-32", hidden_size=32)
    model = load_model(ModelConfig(name=str(model_dir), quantize="4bit", device="cpu")).model.eval()
    with torch.no_grad():
        assert model(input_ids=torch.randint(5, 300, (2, 7))).logits.isfinite().all()
        model(input_ids=torch.randint(5, 300, (1, 1)))
    loss, grads = lora_gradients(model, torch.randint(5, 300, (2, 7)))
    assert loss > 0 and all(g.abs().max() > 0 for g in grads.values())


def test_bitsandbytes_noise_is_dropped_and_the_8bit_cast_said_once(caplog) -> None:
    quiet_bitsandbytes()
    quiet_bitsandbytes()  # idempotent: one filter per logger
    for name, prefix, _ in NOISE:
        assert sum(isinstance(f, DropRepeats) and f.prefix == prefix for f in logging.getLogger(name).filters) == 1
    caplog.set_level(logging.WARNING)
    kernels = logging.getLogger("bitsandbytes.backends.cpu.ops")
    kernels.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please ...", "no kernels")
    kernels.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]

    cast = DropRepeats("MatMul8bitLt: inputs will be cast from", keep=1)
    record = logging.LogRecord("x", logging.WARNING, "f", 1, "MatMul8bitLt: inputs will be cast from %s", ("a",), None)
    other = logging.LogRecord("x", logging.WARNING, "f", 1, "other", (), None)
    passed = [cast.filter(record), cast.filter(record), cast.filter(other), cast.filter(record)]
    assert passed == [True, False, True, False]
