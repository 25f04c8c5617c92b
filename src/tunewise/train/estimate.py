"""The arithmetic of a LoRA run's peak memory and time: pure functions of the model's anatomy, the config and the
training data's token lengths. Every term and its source is in docs/estimate.md.

Activations are what autograd saves for backward on tunewise's training path (fused LoRA, packed rows with
per-example SDPA, the LM head on answer positions only), counted per token and layer from the architecture; the
counts match the tensors a forward really saves (tests/train/test_estimate.py measures them).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any

from tunewise.config import Config, TrainConfig
from tunewise.models.anatomy import ModelAnatomy

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
FP32 = 4
LORA_STATE_BYTES = 4 + 4 + 8  # fp32 parameter, its gradient, AdamW's exp_avg and exp_avg_sq
HEAD_COPIES = 3  # [positions, vocab] fp32: the log-softmax saved for backward, its gradient, the logits' gradient
# Resident memory of a Python process with torch 2.13, transformers 5.24, peft and tunewise's trainer imported,
# measured on Linux x86-64 (VmRSS after the imports): what a CPU run holds before it loads anything.
CPU_RUNTIME_BYTES = 475 * 2**20
# glibc keeps much of what the forward frees between the tensors it saves (temporaries of rotary embeddings,
# norms, projections) as holes it cannot return or fully reuse: a CPU step's resident peak exceeds the saved
# activations by 17-36% of them (SmolLM2-135M, Gemma 3 270M, packed float32 batches of 480-880 tokens). A GPU's
# caching allocator reuses them: no such term there.
CPU_ALLOCATOR_SLACK = 0.3
# A CUDA context and the caching allocator's slack, which torch.cuda.max_memory_allocated does not count: added to
# the GPU peak only when deciding whether the run fits.
GPU_CONTEXT_BYTES = 512 * 2**20
# Linears whose inputs are one tensor: with lora.dropout 0 (and float32 adapters on a float32 model) LoRA saves that
# input once for the group, with dropout each adapter saves its own dropped copy and mask.
SHARED_INPUTS = ({"q_proj", "k_proj", "v_proj"}, {"gate_proj", "up_proj"}, {"query", "key", "value"}, {"w1", "w3"})
# Without a probe, the run's compute is FLOPs over a matmul throughput measured on this machine; a training step
# reaches only part of that throughput (small matmuls, attention, norms, optimizer, Python): 0.4 is the share packed
# SmolLM2-135M steps reached on a 2-core CPU (3.8 ms per token measured, against 312 GFLOP/s of matmul).
ROUGH_EFFICIENCY = 0.4


def planned_steps(n_train: int, cfg: Config) -> int:
    """The optimizer steps of a run on `n_train` examples: train.max_steps, else the epochs rule."""
    if cfg.train.max_steps > 0:
        return cfg.train.max_steps
    per_epoch = math.ceil(n_train / (cfg.train.batch_size * cfg.train.grad_accum))
    return max(1, math.ceil(per_epoch * cfg.train.epochs))


@dataclass(frozen=True)
class TokenLengths:
    """Per example (tokens, answer positions) of the training and validation sets as encoded for training; the
    lists may be a seeded sample of the `n_train` / `n_val` examples the run will have."""

    train: list[tuple[int, int]]
    val: list[tuple[int, int]]
    n_train: int
    n_val: int


@dataclass(frozen=True)
class MicroBatch:
    """One micro-batch as the layers see it: `tokens` positions (a packed row, or rows x width padded) of which
    `head_positions` go through the LM head. `examples`: indices into TokenLengths.train."""

    examples: list[int]
    tokens: int
    head_positions: int
    rows: int
    width: int


@dataclass(frozen=True)
class MemoryBreakdown:
    """Peak memory of a training step by component, in bytes."""

    weights: int  # the frozen base model at model.dtype, or quantized (model.quantize)
    lora: int  # LoRA parameters with their gradients and AdamW state, fp32
    activations: int  # saved for backward over the heaviest micro-batch
    lm_head: int  # the vocabulary-sized fp32 tensors of the loss
    backward: int  # gradients in flight while one layer is differentiated
    allocator: int  # freed forward temporaries the CPU allocator keeps (CPU_ALLOCATOR_SLACK); 0 on a GPU
    runtime: int  # the interpreter and libraries (CPU); 0 on a GPU, whose counter sees tensors only
    device: str

    @property
    def total(self) -> int:
        parts = (self.weights, self.lora, self.activations, self.lm_head, self.backward, self.allocator, self.runtime)
        return sum(parts)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


@dataclass(frozen=True)
class RunTokens:
    """The work of the full configured run, in token positions."""

    steps: int
    examples: float  # training examples processed: epochs x train set, or max_steps x examples per step
    train_tokens: float  # positions the layers compute in training (padding included without packing)
    train_head: float  # positions the LM head computes in training
    val_tokens: float  # one validation pass
    val_head: float
    eval_every: int  # steps between validation passes
    evaluations: int
    mean_context: float  # mean attention span of a token (half an example's length, weighted by tokens)


@dataclass(frozen=True)
class TimeEstimate:
    """Seconds of the full configured run: optimizer steps plus validation passes."""

    seconds: float
    train_seconds: float
    validation_seconds: float
    kind: str  # "measured" (probe) or "rough" (FLOPs over a measured matmul throughput)
    basis: str  # how it was computed, in words

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def heaviest_micro_batch(lengths: TokenLengths, train: TrainConfig) -> MicroBatch:
    """The worst micro-batch a shuffled epoch can draw: the batch_size longest examples together."""
    order = sorted(range(len(lengths.train)), key=lambda i: lengths.train[i], reverse=True)
    return micro_batch([lengths.train[i] for i in order[: train.batch_size]], order[: train.batch_size], train)


def micro_batch(items: list[tuple[int, int]], indices: list[int], train: TrainConfig) -> MicroBatch:
    width = max(n for n, _ in items)
    if train.packing:  # one row, no padding; the LM head only where a next token is trained
        total = sum(n for n, _ in items)
        return MicroBatch(indices, total, sum(a for _, a in items), 1, total)
    rows = len(items)  # padded rows; the model's own loss computes logits at every position
    return MicroBatch(indices, rows * width, rows * width, rows, width)


def activation_bytes(anatomy: ModelAnatomy, config: Config, batch: MicroBatch) -> tuple[int, int]:
    """(bytes saved for backward by the micro-batch over the whole model, bytes of its most expensive layer)."""
    per_layer = layer_bytes_per_token(anatomy, config)
    act = DTYPE_BYTES[config.model.dtype]
    # Once per forward: rotary cos and sin (one row's positions), the final norm's input and statistic, and the LM
    # head's selection (a bool mask over a packed row; int64 targets of a padded batch's own loss)
    shared = batch.width * 2 * anatomy.head_dim * act + batch.tokens * ((anatomy.hidden_size + 1) * FP32 + 1)
    mask = 0
    if not config.train.packing:  # padded batches: every layer keeps its own copy of sdpa's [rows, 1, width, width]
        shared += batch.tokens * (8 - 1)
        mask = batch.rows * batch.width * batch.width * act
    per_layer = {index: per_token * batch.tokens + mask for index, per_token in per_layer.items()}
    heaviest = max(per_layer.values(), default=0)
    if config.train.gradient_checkpointing:  # each layer keeps its input; one layer is recomputed at a time
        kept = len(per_layer) * anatomy.hidden_size * act * batch.tokens
        return kept + heaviest + shared, heaviest
    return sum(per_layer.values()) + shared, heaviest


def layer_bytes_per_token(anatomy: ModelAnatomy, config: Config) -> dict[int, int]:
    """Bytes each decoder layer saves for backward per token, from the layer's modules:

    - every norm: its input and one statistic per row, in fp32 (RMSNorm computes in fp32 whatever the dtype);
    - attention: q, k, v and the output for SDPA, at the model dtype, plus fp32 log-sum-exp per head (padded batches
      repeat k and v for every query head, packed rows keep the shared KV heads);
    - the MLP: the activation's input and output and the up projection (gated), or the activation's input;
    - every adapted linear: LoRA A's fp32 output (r values) and A's input: with dropout the dropped copy and its
      mask (2 x in, fp32), without it the input itself, once per group of linears that read one tensor.
    The frozen base linears save nothing: their weights need no gradient and their inputs' gradients need only W."""
    act = DTYPE_BYTES[config.model.dtype]
    nh, kv, hd = anatomy.n_heads, anatomy.n_kv_heads, anatomy.head_dim
    kv_saved = kv if config.train.packing else nh
    layers = {index: (2 * nh * hd + 2 * kv_saved * hd) * act + nh * FP32 for index in range(anatomy.n_layers)}
    for name, dim in anatomy.norms.items():
        if (index := anatomy.layer_of(name)) in layers:
            rows = 1 if dim == anatomy.hidden_size else (nh if name.rsplit(".", 1)[-1].startswith("q") else kv)
            layers[index] += rows * (dim + 1) * FP32
    for index in layers:
        leaves = {n.rsplit(".", 1)[-1] for n in anatomy.linears if anatomy.layer_of(n) == index}
        layers[index] += (3 if any("gate" in leaf for leaf in leaves) else 1) * anatomy.intermediate_size * act
    targets = anatomy.lora_targets(config.lora)
    for index, lora in _lora_bytes(targets, anatomy, config).items():
        layers[index] += lora
    if 0 in layers:
        layers[0] -= _first_layer_savings(anatomy, targets, config.lora.dropout > 0)
    return layers


def _lora_bytes(targets: dict[str, tuple[int, int]], anatomy: ModelAnatomy, config: Config) -> dict[int, int]:
    """Per layer, per token: each adapted linear's A output (r, fp32) and A's saved input (see SHARED_INPUTS)."""
    dropout, same_dtype = config.lora.dropout > 0, config.model.dtype == "float32"
    saved: dict[int, int] = {}
    groups_seen: set[tuple[str, int]] = set()
    for name, (n_in, _) in targets.items():
        index = anatomy.layer_of(name)
        if index is None:
            continue
        parent, _, leaf = name.rpartition(".")
        group = next((i for i, members in enumerate(SHARED_INPUTS) if leaf in members), None)
        shared = not dropout and same_dtype and group is not None
        repeat = shared and (parent, group) in groups_seen  # a sibling already saved this input
        if shared:
            groups_seen.add((parent, group))
        input_bytes = 0 if repeat else (2 if dropout else 1) * n_in * FP32
        saved[index] = saved.get(index, 0) + config.lora.r * FP32 + input_bytes
    return saved


def _first_layer_savings(anatomy: ModelAnatomy, targets: dict[str, tuple[int, int]], dropout: bool) -> int:
    """Layer 0 reads the embeddings, which need no gradient: its input norm saves nothing, and the attention inputs'
    dropout masks are not kept (only the dropped copies LoRA A needs)."""
    first = [n for n in anatomy.norms if anatomy.layer_of(n) == 0 and n.endswith(("input_layernorm", "ln_1"))]
    saved = sum((anatomy.norms[n] + 1) * FP32 for n in first)
    if first and dropout:
        attention_inputs = SHARED_INPUTS[0] | SHARED_INPUTS[2]
        saved += sum(
            n_in * FP32
            for name, (n_in, _) in targets.items()
            if anatomy.layer_of(name) == 0 and name.rsplit(".", 1)[-1] in attention_inputs
        )
    return saved


# A bitsandbytes-quantized linear layer of in x out weights. 4bit: NF4 nibbles, plus one 8-bit absmax per 64 weights
# (double quantization) and one fp32 second-level absmax per 256 of those. 8bit: int8, plus an fp32 scale per row.
def quantized_linear_bytes(quantize: str, n_in: int, n_out: int) -> float:
    weights = n_in * n_out
    if quantize == "4bit":
        return weights * (0.5 + 1 / 64 + FP32 / (64 * 256))
    return weights + FP32 * n_out


def weight_bytes(anatomy: ModelAnatomy, config: Config) -> int:
    """The frozen base model's bytes. Quantized (model.quantize): every linear layer but the output layer at the
    quantized size, and the rest (embeddings, norms, output layer) in fp32, as QLoRA's preparation upcasts them."""
    quantize = config.model.quantize
    if quantize == "none":
        return anatomy.n_params * DTYPE_BYTES[config.model.dtype]
    linears = {name: shape for name, shape in anatomy.linears.items() if name != anatomy.output_layer}
    quantized = sum(quantized_linear_bytes(quantize, n_in, n_out) for n_in, n_out in linears.values())
    rest = anatomy.n_params - sum(n_in * n_out for n_in, n_out in linears.values())  # embeddings, norms, output
    return round(quantized) + rest * FP32


def memory_breakdown(anatomy: ModelAnatomy, config: Config, batch: MicroBatch, device: str) -> MemoryBreakdown:
    activations, one_layer = activation_bytes(anatomy, config, batch)
    return MemoryBreakdown(
        weights=weight_bytes(anatomy, config),
        lora=anatomy.lora_params(config.lora) * LORA_STATE_BYTES,
        activations=activations,
        lm_head=HEAD_COPIES * batch.head_positions * anatomy.vocab_size * FP32,
        backward=one_layer,
        allocator=round(CPU_ALLOCATOR_SLACK * activations) if device == "cpu" else 0,
        runtime=CPU_RUNTIME_BYTES if device == "cpu" else 0,
        device=device,
    )


def run_tokens(lengths: TokenLengths, config: Config, steps: int) -> RunTokens:
    """The positions the full run computes: `steps` optimizer steps over the training set (the lengths scaled up
    when they are a sample) and a validation pass every train.eval_steps."""
    t = config.train
    per_step = t.batch_size * t.grad_accum
    examples = steps * per_step if t.max_steps > 0 else t.epochs * lengths.n_train
    train_tokens, train_head = _per_example(lengths.train, t, shuffled=True)
    val_tokens, val_head = _per_example(lengths.val, t, shuffled=False)
    eval_every = min(t.eval_steps, steps)
    weight = sum(n for n, _ in lengths.train) or 1
    return RunTokens(
        steps=steps,
        examples=examples,
        train_tokens=train_tokens * examples,
        train_head=train_head * examples,
        val_tokens=val_tokens * lengths.n_val,
        val_head=val_head * lengths.n_val,
        eval_every=eval_every,
        evaluations=steps // eval_every,
        mean_context=sum(n * n / 2 for n, _ in lengths.train) / weight,
    )


def _per_example(items: list[tuple[int, int]], train: TrainConfig, shuffled: bool) -> tuple[float, float]:
    """Mean (layer positions, head positions) per example: packed, its own tokens; padded, its batch's width, over
    batches drawn as the run draws them (seeded random for training, in order for validation)."""
    if not items:
        return 0.0, 0.0
    if train.packing:
        return sum(n for n, _ in items) / len(items), sum(a for _, a in items) / len(items)
    order = list(range(len(items)))
    if train.sampler == "length_grouped":
        order.sort(key=lambda i: items[i][0])
    elif shuffled:
        random.Random(train.seed).shuffle(order)
    padded = 0
    for start in range(0, len(order), train.batch_size):
        batch = [items[i][0] for i in order[start : start + train.batch_size]]
        padded += len(batch) * max(batch)
    return padded / len(items), padded / len(items)


def measured_time(tokens: RunTokens, train_s_per_token: float, eval_s_per_token: float | None) -> TimeEstimate:
    """Seconds from the probe's measured seconds per token, training and forward-only validation."""
    train_s = train_s_per_token * tokens.train_tokens
    per_eval = eval_s_per_token if eval_s_per_token is not None else train_s_per_token / 2
    val_s = per_eval * tokens.val_tokens * tokens.evaluations
    basis = f"measured: {train_s_per_token * 1e3:.3f} ms per training token"
    basis += f", {per_eval * 1e3:.3f} ms per validation token" + ("" if eval_s_per_token else " (half, not measured)")
    return TimeEstimate(train_s + val_s, train_s, val_s, "measured", basis)


def rough_time(anatomy: ModelAnatomy, config: Config, tokens: RunTokens, flops_per_second: float) -> TimeEstimate:
    """Seconds from FLOPs: per training token 4 x the non-embedding parameters (forward 2, backward 2 for the input
    gradients; the frozen weights get none), 6 x the LoRA parameters, attention scores over the token's context, and
    per LM head position 4 x hidden x vocab; validation is the forward half. At ROUGH_EFFICIENCY of the throughput."""
    body = anatomy.non_embedding_params
    # Attention in parameter equivalents (2 FLOPs each forward, like a weight): QK^T and AV are 4 x layers x heads x
    # head_dim x context FLOPs per token forward.
    attention = 2 * anatomy.n_layers * anatomy.n_heads * anatomy.head_dim * tokens.mean_context
    head = 2 * anatomy.hidden_size * anatomy.vocab_size
    recompute = 1 if config.train.gradient_checkpointing else 0  # one more forward per step
    train_flops = (4 + 2 * recompute) * (body + attention) + 6 * anatomy.lora_params(config.lora)
    train_total = train_flops * tokens.train_tokens + 2 * head * tokens.train_head
    val_total = (2 * (body + attention) * tokens.val_tokens + head * tokens.val_head) * tokens.evaluations
    rate = flops_per_second * ROUGH_EFFICIENCY
    basis = (
        f"rough: FLOPs at {ROUGH_EFFICIENCY:.0%} of a measured {flops_per_second / 1e9:.0f} GFLOP/s matmul throughput"
    )
    return TimeEstimate((train_total + val_total) / rate, train_total / rate, val_total / rate, "rough", basis)


def fit_verdict(peak: int, available: int | None, memory: MemoryBreakdown, config: Config) -> tuple[bool, str]:
    """Whether `peak` fits the memory `available` to the run, and one line saying why, with the change that would
    shrink the largest part when it does not fit."""
    need = peak + (GPU_CONTEXT_BYTES if memory.device != "cpu" else 0)
    if available is None:
        return True, "available memory unknown; the estimate assumes the run fits"
    share = need / available if available else math.inf
    if need <= available:
        return True, f"fits: {_gib(need)} of {_gib(available)} available ({share:.0%})"
    parts = {"weights": memory.weights, "activations": memory.activations, "lm_head": memory.lm_head}
    largest = max(parts, key=lambda k: parts[k])
    hints = {
        "weights": "model.dtype: bfloat16 halves the weights"
        if config.model.dtype == "float32"
        else "a smaller model is needed",
        "activations": "lower train.batch_size or train.max_length, or set train.gradient_checkpointing: true",
        "lm_head": "train.packing: true computes the LM head on answer tokens only"
        if not config.train.packing
        else "lower train.batch_size",
    }
    return False, f"does not fit: {_gib(need)} needed, {_gib(available)} available; {hints[largest]}"


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"
