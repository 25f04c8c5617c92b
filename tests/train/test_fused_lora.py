"""train.fused_lora: the in-place LoRA update computes PEFT's LoRA exactly (losses and gradients), is the path the
plain case really takes, falls back to PEFT's forward wherever the in-place form does not apply, and changes nothing
that is saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora.layer import Embedding as LoraEmbedding
from torch.overrides import TorchFunctionMode
from transformers import AutoModelForCausalLM, AutoTokenizer

from support.features import make_features
from support.tiny import build_tiny_model
from tunewise.config import ModelConfig
from tunewise.models import load_model
from tunewise.train.fused_lora import FusedLoraLinear, enable_fused_lora
from tunewise.train.packing import PackingCollator

pytestmark = pytest.mark.usefixtures("one_torch_thread")
EXACT = 1e-5  # the same products and sums in another order: fp32 rounding apart


def lora_model(model_dir: Path, fused: bool, **lora: Any) -> Any:
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    torch.manual_seed(0)
    # init_lora_weights=False: B is random too, so the LoRA update and A's gradients are not zero. alpha/r = 1.75,
    # not a power of two: scaling before or after the product then rounds differently, as in real configs
    config = LoraConfig(
        **{"r": 4, "lora_alpha": 7, "lora_dropout": 0.0, "target_modules": "all-linear", **lora},
        init_lora_weights=False,
    )
    peft_model = get_peft_model(model, config)
    if fused:
        assert enable_fused_lora(peft_model) == 14  # q, k, v, o, gate, up, down in each of 2 layers
    return peft_model


def loss_and_grads(model: Any, batch: dict[str, Any], seed: int = 0) -> tuple[float, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)  # the same dropout masks in both models
    loss = model(**{k: v for k, v in batch.items() if k != "shift_labels"}).loss
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads


@pytest.fixture(scope="module")
def batch(tiny_model_dir: Path) -> dict[str, Any]:
    vocab = AutoTokenizer.from_pretrained(tiny_model_dir).vocab_size
    return PackingCollator(completion_only=False)(make_features(6, vocab, seed=11))


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_fused_update_gives_peft_losses_and_gradients(tiny_model_dir: Path, batch: dict, dropout: float) -> None:
    plain = lora_model(tiny_model_dir, fused=False, lora_dropout=dropout).train()
    fused = lora_model(tiny_model_dir, fused=True, lora_dropout=dropout).train()
    for seed in (0, 1):
        loss_p, grads_p = loss_and_grads(plain, batch, seed)
        loss_f, grads_f = loss_and_grads(fused, batch, seed)
        assert abs(loss_p - loss_f) < EXACT
        assert grads_p.keys() == grads_f.keys() and len(grads_p) == 28  # A and B of 14 layers
        worst = max((grads_p[k] - grads_f[k]).abs().max().item() for k in grads_p)
        assert worst < EXACT
        assert min(g.abs().max().item() for g in grads_f.values()) > 0  # every adapter matrix is trained


class TorchCalls(TorchFunctionMode):
    """Records the torch functions and tensor methods called under it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.names.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def test_fused_update_is_the_path_taken(tiny_model_dir: Path) -> None:
    """The plain case really runs the in-place addmm (else the exactness test above would compare PEFT to PEFT)."""
    model = lora_model(tiny_model_dir, fused=True)
    layer = model.get_base_model().model.layers[0].self_attn.q_proj
    assert isinstance(layer, FusedLoraLinear)
    x = torch.randn(1, 5, layer.in_features, requires_grad=True)
    with TorchCalls() as fused_calls:
        layer(x)
    with model.disable_adapter(), TorchCalls() as base_calls:
        layer(x)
    assert "addmm_" in fused_calls.names and "addmm_" not in base_calls.names


def test_fused_layers_fall_back_to_peft_where_the_in_place_form_does_not_apply(tiny_model_dir: Path) -> None:
    x = torch.randn(2, 5, 32)
    plain, fused = lora_model(tiny_model_dir, fused=False), lora_model(tiny_model_dir, fused=True)

    def q_proj(model: Any) -> torch.Tensor:
        with torch.no_grad():
            return model.get_base_model().model.layers[0].self_attn.q_proj(x)

    base_out = torch.nn.functional.linear(x, plain.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight)
    assert torch.allclose(q_proj(fused), q_proj(plain), atol=EXACT)
    assert (q_proj(fused) - base_out).abs().max() > 1e-3  # the adapter does change the output
    with fused.disable_adapter():
        assert torch.equal(q_proj(fused), base_out)
    fused.merge_adapter()  # merged: PEFT's forward is the base layer with the merged weight
    with TorchCalls() as merged_calls:
        assert torch.allclose(q_proj(fused), q_proj(plain), atol=1e-5)
    fused.unmerge_adapter()
    assert torch.allclose(q_proj(fused), q_proj(plain), atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16), TorchCalls() as autocast_calls:  # autocast: PEFT's own casts
        assert torch.allclose(q_proj(fused).float(), q_proj(plain).float(), atol=5e-2)
    # both really took PEFT's forward, not the in-place form (whose output could come out close enough)
    assert "addmm_" not in merged_calls.names and "addmm_" not in autocast_calls.names


@pytest.mark.filterwarnings("ignore:`lora_bias=True` was passed")  # merging is not what this test checks
@pytest.mark.parametrize("variant", [{"use_dora": True}, {"lora_bias": True}])
def test_fused_layers_leave_variants_to_peft(tiny_model_dir: Path, batch: dict, variant: dict) -> None:
    plain = lora_model(tiny_model_dir, fused=False, **variant)
    fused = lora_model(tiny_model_dir, fused=True, **variant)
    loss_p, grads_p = loss_and_grads(plain, batch)
    loss_f, grads_f = loss_and_grads(fused, batch)
    assert loss_p == loss_f
    assert all(torch.equal(grads_p[k], grads_f[k]) for k in grads_p)


def test_fused_adapters_save_and_load_as_peft_adapters(tiny_model_dir: Path, batch: dict, tmp_path: Path) -> None:
    fused = lora_model(tiny_model_dir, fused=True)
    plain_keys = set(lora_model(tiny_model_dir, fused=False).state_dict())
    assert set(fused.state_dict()) == plain_keys
    fused.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter")
    inputs = {k: batch[k] for k in ("input_ids", "position_ids")}
    with torch.no_grad():
        assert torch.allclose(reloaded(**inputs).logits, fused(**inputs).logits, atol=EXACT)


@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`")  # tying is not what this test checks
def test_only_lora_linear_layers_over_linear_bases_are_fused(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, target_modules=["q_proj", "embed_tokens"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    assert enable_fused_lora(peft_model) == 2  # q_proj in each of 2 layers; the embedding keeps PEFT's forward
    assert type(peft_model.get_base_model().model.embed_tokens) is LoraEmbedding
    assert enable_fused_lora(peft_model) == 0  # already fused: nothing left to swap


@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_a_quantized_base_keeps_peft_bitsandbytes_layers(tmp_path: Path, quantize: str) -> None:
    """bitsandbytes layers subclass nn.Linear; PEFT's LoRA over them dequantizes in its own forward: never swapped."""
    pytest.importorskip("bitsandbytes")
    from peft.tuners.lora import bnb as lora_bnb  # its classes exist only when bitsandbytes is installed

    model_dir = build_tiny_model(tmp_path / "tiny-64", hidden_size=64)
    model = load_model(ModelConfig(name=str(model_dir), quantize=quantize, device="cpu")).model
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    assert enable_fused_lora(peft_model) == 0
    wrapper = {"4bit": lora_bnb.Linear4bit, "8bit": lora_bnb.Linear8bitLt}[quantize]
    assert sum(type(m) is wrapper for m in peft_model.modules()) == 14
