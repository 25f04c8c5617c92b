"""tunewise.train.estimate: the arithmetic of a run's memory and time. The weights and LoRA terms are exact; the
activations term is checked against the bytes autograd really saves on tunewise's training path (a forward of the
tiny models under saved-tensor hooks), which is what the peak is made of."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from support.tiny import build_tiny_gemma, build_tiny_model
from tunewise.config import Config
from tunewise.models.anatomy import read_anatomy
from tunewise.train.estimate import (
    CPU_RUNTIME_BYTES,
    HEAD_COPIES,
    LORA_STATE_BYTES,
    MemoryBreakdown,
    TokenLengths,
    activation_bytes,
    fit_verdict,
    heaviest_micro_batch,
    measured_time,
    memory_breakdown,
    micro_batch,
    rough_time,
    run_tokens,
)
from tunewise.train.trainer import add_lora, training_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LENGTHS = (100, 80, 60)  # one micro-batch; each example trains its last 2 tokens


def make_config(model_dir: Path, tmp_path: Path, **train: object) -> Config:
    model = {"name": str(model_dir), "dtype": train.pop("dtype", "float32"), "quantize": train.pop("quantize", "none")}
    lora = {"r": 8, "dropout": train.pop("dropout", 0.1), "target_modules": train.pop("targets", "all-linear")}
    return Config(
        model=model,
        data={"train": str(tmp_path / "unused.jsonl")},
        lora=lora,
        train={"batch_size": len(LENGTHS), **train},
    )


def saved_for_backward(model_dir: Path, config: Config) -> tuple[int, int]:
    """(bytes autograd saves in one training forward of LENGTHS, bytes of the saved log-softmax [positions, vocab])."""
    dtype = getattr(torch, config.model.dtype)
    peft_model = add_lora(AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype), config)
    collator, loss_fn = training_path(peft_model, config.train, 0)
    if config.train.gradient_checkpointing:  # as the Trainer enables it
        peft_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    peft_model.train()
    features = [
        {"input_ids": [3 + (i * 7 + j) % 200 for j in range(n)], "labels": [-100] * (n - 2) + [5, 6]}
        for i, n in enumerate(LENGTHS)
    ]
    batch = collator(features)
    labels = batch.pop("labels")
    parameters = {p.untyped_storage().data_ptr() for p in peft_model.parameters()}
    saved: dict[int, tuple[int, tuple[int, ...]]] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()  # views of one tensor are one allocation
        if storage.data_ptr() not in parameters:
            saved.setdefault(storage.data_ptr(), (storage.nbytes(), tuple(tensor.shape)))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        if loss_fn is None:
            peft_model(**batch, labels=labels)
        else:
            loss_fn(peft_model(**batch), labels, None)
    vocab = peft_model.config.vocab_size
    head = sum(size for size, shape in saved.values() if shape and shape[-1] == vocab)
    return sum(size for size, _ in saved.values()) - head, head


@pytest.mark.parametrize(
    ("options", "tolerance"),
    [
        ({}, 0.01),
        ({"dropout": 0.0}, 0.01),
        ({"dtype": "bfloat16"}, 0.01),
        ({"targets": ["q_proj", "v_proj"]}, 0.01),
        ({"packing": False}, 0.05),  # padded rows: the model's own loss, sdpa masks per layer
        ({"packing": False, "dropout": 0.0}, 0.05),
    ],
)
def test_activations_are_what_autograd_saves(tiny_model_dir: Path, tmp_path: Path, options: dict, tolerance: float):
    config = make_config(tiny_model_dir, tmp_path, **dict(options))
    measured, head = saved_for_backward(tiny_model_dir, config)
    items = [(n, 2) for n in LENGTHS]
    batch = micro_batch(items, list(range(len(items))), config.train)
    activations, _ = activation_bytes(read_anatomy(config.model), config, batch)
    assert activations == pytest.approx(measured, rel=tolerance)
    memory = memory_breakdown(read_anatomy(config.model), config, batch, "cpu")
    assert memory.lm_head == HEAD_COPIES * head  # the saved log-softmax is one of the head's copies


def test_activations_of_a_gemma_layout(tmp_path: Path) -> None:
    """Per-head query/key norms and four norms per layer (Gemma 3) are counted from the modules."""
    model_dir = build_tiny_gemma(tmp_path / "gemma")
    config = make_config(model_dir, tmp_path)
    measured, _ = saved_for_backward(model_dir, config)
    batch = micro_batch([(n, 2) for n in LENGTHS], [0, 1, 2], config.train)
    assert activation_bytes(read_anatomy(config.model), config, batch)[0] == pytest.approx(measured, rel=0.1)


def test_weights_and_lora_terms_are_exact(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = make_config(tiny_model_dir, tmp_path)
    anatomy = read_anatomy(config.model)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    weight_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    trainable, _ = add_lora(base, config).get_nb_trainable_parameters()
    batch = heaviest_micro_batch(TokenLengths([(10, 1)] * 4, [], 4, 0), config.train)
    memory = memory_breakdown(anatomy, config, batch, "cpu")
    assert memory.weights == weight_bytes
    assert memory.lora == trainable * LORA_STATE_BYTES  # fp32 parameter, gradient, AdamW's two moments
    half = memory_breakdown(anatomy, make_config(tiny_model_dir, tmp_path, dtype="bfloat16"), batch, "cpu")
    assert half.weights * 2 == memory.weights and half.lora == memory.lora  # adapters stay fp32
    assert memory.runtime == CPU_RUNTIME_BYTES and memory_breakdown(anatomy, config, batch, "cuda").runtime == 0
    parts = (memory.weights, memory.lora, memory.activations, memory.lm_head, memory.backward, memory.allocator)
    assert memory.total == sum(parts) + memory.runtime


def stored_bytes(model: torch.nn.Module) -> int:
    """Bytes a loaded model holds: its parameters, and the scales bitsandbytes keeps beside quantized weights."""
    total = 0
    for p in model.parameters():
        total += p.numel() * p.element_size()
        state = getattr(p, "quant_state", None)  # 4bit: absmax per block, and its own absmax when nested
        if state is not None:
            total += state.absmax.numel() * state.absmax.element_size()
            total += state.state2.absmax.numel() * 4 if state.nested else 0
        scales = getattr(p, "SCB", None)  # 8bit: one fp32 scale per row
        total += scales.numel() * 4 if scales is not None else 0
    return total


@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_quantized_weights_match_the_loaded_quantized_model(tmp_path: Path, quantize: str) -> None:
    """Quantized linear layers at their packed size plus their scales; the rest in fp32 after QLoRA's preparation."""
    from peft import prepare_model_for_kbit_training

    from tunewise.models.loader import load_model

    model_dir = build_tiny_model(tmp_path / "model", hidden_size=64)  # bitsandbytes' CPU blocks are 64 wide
    config = make_config(model_dir, tmp_path, quantize=quantize)
    model = prepare_model_for_kbit_training(load_model(config.model).model, use_gradient_checkpointing=False)
    batch = micro_batch([(10, 1)], [0], config.train)
    estimated = memory_breakdown(read_anatomy(config.model), config, batch, "cpu").weights
    assert estimated == pytest.approx(stored_bytes(model), rel=0.02)
    full = memory_breakdown(read_anatomy(config.model), make_config(model_dir, tmp_path), batch, "cpu").weights
    assert estimated < full


def test_packing_counts_tokens_and_padding_counts_rows_times_width(tiny_model_dir: Path, tmp_path: Path) -> None:
    lengths = TokenLengths([(10, 2), (40, 3), (20, 1), (30, 5)], [], 4, 0)
    packed = heaviest_micro_batch(lengths, make_config(tiny_model_dir, tmp_path, batch_size=2).train)
    assert sorted(packed.examples) == [1, 3] and (packed.tokens, packed.head_positions) == (70, 8)
    padded = heaviest_micro_batch(lengths, make_config(tiny_model_dir, tmp_path, batch_size=2, packing=False).train)
    assert (padded.tokens, padded.head_positions, padded.rows, padded.width) == (80, 80, 2, 40)  # logits everywhere


def test_gradient_checkpointing_keeps_layer_inputs_and_recomputes_one_layer(tiny_model_dir: Path, tmp_path: Path):
    plain = make_config(tiny_model_dir, tmp_path)
    kept = make_config(tiny_model_dir, tmp_path, gradient_checkpointing=True)
    anatomy, batch = read_anatomy(plain.model), micro_batch([(n, 2) for n in LENGTHS], [0, 1, 2], plain.train)
    full, one_layer = activation_bytes(anatomy, plain, batch)
    recomputed, _ = activation_bytes(anatomy, kept, batch)
    assert recomputed < full
    # what the forward saves under checkpointing: the layer inputs and what lies outside the layers (rotary tables
    # excepted: the checkpoint keeps those inputs without saving them); the recomputed layer comes on top
    measured, _ = saved_for_backward(tiny_model_dir, kept)
    assert recomputed - one_layer == pytest.approx(measured, rel=0.2)


def test_run_tokens_scale_a_sample_and_count_validation_passes(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = make_config(tiny_model_dir, tmp_path, batch_size=2, epochs=2, eval_steps=3)
    sample = TokenLengths([(10, 1), (30, 2)], [(20, 1)], n_train=100, n_val=10)  # lengths of a sample
    tokens = run_tokens(sample, config, steps=100)
    assert tokens.examples == 200 and tokens.train_tokens == 200 * 20 and tokens.train_head == 200 * 1.5
    assert tokens.val_tokens == 10 * 20 and tokens.evaluations == 33 and tokens.eval_every == 3
    padded = run_tokens(sample, make_config(tiny_model_dir, tmp_path, batch_size=2, epochs=2, packing=False), 100)
    assert padded.train_tokens == 200 * 30  # both examples padded to 30 in the one batch they fill
    capped = run_tokens(sample, make_config(tiny_model_dir, tmp_path, batch_size=2, max_steps=7), steps=7)
    assert capped.examples == 14 and capped.evaluations == 1  # one validation at least: eval_steps capped by steps


def test_measured_and_rough_time(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = make_config(tiny_model_dir, tmp_path, batch_size=2, eval_steps=5)
    tokens = run_tokens(TokenLengths([(10, 1), (30, 2)], [(20, 1)], 100, 10), config, steps=50)
    measured = measured_time(tokens, 0.002, 0.0005)
    assert measured.kind == "measured" and measured.train_seconds == pytest.approx(0.002 * 100 * 20)
    assert measured.validation_seconds == pytest.approx(0.0005 * 200 * 10)
    assert measured_time(tokens, 0.002, None).validation_seconds == pytest.approx(0.001 * 200 * 10)
    anatomy = read_anatomy(config.model)
    slow, fast = rough_time(anatomy, config, tokens, 1e9), rough_time(anatomy, config, tokens, 2e9)
    assert slow.kind == "rough" and slow.seconds == pytest.approx(2 * fast.seconds) and "rough" in slow.basis


def test_fit_verdict_names_the_change_that_shrinks_the_largest_part(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = make_config(tiny_model_dir, tmp_path)
    memory = MemoryBreakdown(2**30, 0, 8 * 2**30, 0, 0, 0, 0, "cpu")
    fits, reason = fit_verdict(9 * 2**30, 16 * 2**30, memory, config)
    assert fits and reason.startswith("fits: 9.00 GiB of 16.00 GiB")
    fits, reason = fit_verdict(9 * 2**30, 4 * 2**30, memory, config)
    assert not fits and "gradient_checkpointing" in reason
    gpu = MemoryBreakdown(2**30, 0, 0, 0, 0, 0, 0, "cuda")  # a CUDA context is added on a GPU
    assert not fit_verdict(2**30, 2**30 + 2**20, gpu, config)[0]
