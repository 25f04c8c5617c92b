"""`tunewise estimate`: the model's size and a configured LoRA run's peak memory and time, in seconds, without
training: the arithmetic of train/estimate.py over the model's anatomy and the run's own encoded data, checked by
a short measured probe (train/probe.py) unless `probe_steps` is 0."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunewise.config import Config
from tunewise.core.format import duration
from tunewise.data.encode import IGNORE_INDEX, Encoded, encode_records
from tunewise.data.records import Record
from tunewise.data.splits import load_splits
from tunewise.data.variants import DEFAULT_PROMPT, prompt_variants
from tunewise.errors import DataError
from tunewise.models import load_tokenizer
from tunewise.models.anatomy import ModelAnatomy, read_anatomy
from tunewise.train.estimate import (
    MemoryBreakdown,
    MicroBatch,
    RunTokens,
    TimeEstimate,
    TokenLengths,
    fit_verdict,
    heaviest_micro_batch,
    measured_time,
    memory_breakdown,
    planned_steps,
    rough_time,
    run_tokens,
)
from tunewise.train.probe import (
    ProbeOutcome,
    ProbeResult,
    available_memory_bytes,
    matmul_flops_per_second,
    run_probe,
    training_device,
)

SAMPLE = 2000  # examples per split encoded for their lengths; a larger split is a seeded sample, scaled up


@dataclass
class RunEstimate:
    """A configured run, sized: the model, the data as the run batches it, memory by component and time."""

    anatomy: ModelAnatomy
    lora_params: int
    device: str
    data_source: str
    lengths: TokenLengths
    steps: int
    heaviest: MicroBatch
    tokens: RunTokens
    memory: MemoryBreakdown
    arithmetic_peak_bytes: int
    peak_memory_bytes: int  # the probe's measured peak when it ran, else the arithmetic
    time: TimeEstimate
    probe: ProbeOutcome | None
    available_memory_bytes: int | None
    fits: bool
    reason: str
    notes: list[str] = field(default_factory=list)

    @property
    def train_seconds(self) -> float:
        """Optimizer steps plus validation passes of the full configured run (`time.kind`: measured or rough)."""
        return self.time.seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.anatomy.to_json(),
            "lora_params": self.lora_params,
            "device": self.device,
            "data": {
                "source": self.data_source,
                "n_train": self.lengths.n_train,
                "n_val": self.lengths.n_val,
                "measured_train": len(self.lengths.train),
                "measured_val": len(self.lengths.val),
                "planned_steps": self.steps,
                "heaviest_micro_batch": {
                    "tokens": self.heaviest.tokens,
                    "head_positions": self.heaviest.head_positions,
                },
                "train_tokens": round(self.tokens.train_tokens),
                "val_tokens_per_pass": round(self.tokens.val_tokens),
                "evaluations": self.tokens.evaluations,
            },
            "memory": self.memory.to_json(),
            "arithmetic_peak_bytes": self.arithmetic_peak_bytes,
            "peak_memory_bytes": self.peak_memory_bytes,
            "available_memory_bytes": self.available_memory_bytes,
            "train_seconds": round(self.train_seconds, 1),
            "time": self.time.to_json(),
            "probe": self.probe.to_json() if self.probe else None,
            "fits": self.fits,
            "reason": self.reason,
            "notes": self.notes,
        }


def estimate_run(
    config: Config, console: Console, probe_steps: int = 3, *, available_bytes: int | None = None
) -> RunEstimate:
    """Size the configured run: model anatomy, token lengths of its data, memory and time by arithmetic, and, with
    `probe_steps` > 0, `probe_steps` real training steps in a child process whose measurements replace the
    arithmetic's peak and time. `available_bytes`: the memory the run may use, when the caller measured it before
    its own work took some (a bake-off, before its first candidate); else measured now."""
    device = training_device(config.model.device)
    anatomy = read_anatomy(config.model)
    notes: list[str] = []
    data = _encoded_data(config, notes)
    steps = planned_steps(data.lengths.n_train, config)
    heaviest = heaviest_micro_batch(data.lengths, config.train)
    memory = memory_breakdown(anatomy, config, heaviest, device)
    tokens = run_tokens(data.lengths, config, steps)
    probe = _probe(config, data, heaviest, probe_steps, console) if probe_steps > 0 else None
    measured = probe.result if probe else None
    time = _time(anatomy, config, tokens, heaviest, measured, device)
    peak = measured.peak_bytes if measured else memory.total
    available = available_bytes if available_bytes is not None else available_memory_bytes(device)
    fits, reason = _verdict(peak, available, memory, config, probe, notes)
    return RunEstimate(
        anatomy=anatomy,
        lora_params=anatomy.lora_params(config.lora),
        device=device,
        data_source=data.source,
        lengths=data.lengths,
        steps=steps,
        heaviest=heaviest,
        tokens=tokens,
        memory=memory,
        arithmetic_peak_bytes=memory.total,
        peak_memory_bytes=peak,
        time=time,
        probe=probe,
        available_memory_bytes=available,
        fits=fits,
        reason=reason,
        notes=notes,
    )


def _probe(config: Config, data: _EncodedData, heaviest: MicroBatch, steps: int, console: Console) -> ProbeOutcome:
    with console.status(f"probing {steps} training step{'s' if steps != 1 else ''} in a child process"):
        return run_probe(config, *_probe_batches(config, data, heaviest, steps), data.pad_token_id)


def _time(
    anatomy: ModelAnatomy,
    config: Config,
    tokens: RunTokens,
    heaviest: MicroBatch,
    measured: ProbeResult | None,
    device: str,
) -> TimeEstimate:
    """From the probe's seconds per token when it timed steps, else rough: FLOPs over this machine's matmul speed."""
    if measured and measured.train_seconds_per_token:
        return measured_time(tokens, measured.train_seconds_per_token, measured.eval_seconds_per_token)
    rows = min(heaviest.tokens, 512)
    flops = matmul_flops_per_second(device, config.model.dtype, rows, anatomy.hidden_size, anatomy.intermediate_size)
    return rough_time(anatomy, config, tokens, flops)


def _verdict(
    peak: int,
    available: int | None,
    memory: MemoryBreakdown,
    config: Config,
    probe: ProbeOutcome | None,
    notes: list[str],
) -> tuple[bool, str]:
    """Whether the run fits. A probe's load peak counts (a GGUF's first load converts it), and a probe killed for
    memory says the run does not fit whatever the arithmetic says."""
    load = probe.result.load_peak_bytes if probe and probe.result else 0
    fits, reason = fit_verdict(max(peak, load), available, memory, config)
    if load > peak:
        notes.append(
            f"loading the model peaked above training, at {load / 2**30:.2f} GiB (a GGUF's first load converts it)"
        )
    if probe and probe.failure:
        notes.append(f"probe failed: {probe.failure}")
        if "does not fit" in probe.failure:
            return False, f"does not fit: {probe.failure}"
    return fits, reason


@dataclass
class _EncodedData:
    lengths: TokenLengths
    train: list[Encoded]  # aligned with lengths.train
    val: list[Encoded]
    pad_token_id: int
    source: str


def _encoded_data(config: Config, notes: list[str]) -> _EncodedData:
    """The training and validation examples as the run encodes them, from the curated splits when curation has
    written them, else from the configured files."""
    curated, data_cfg = _curated_splits(config), config.data
    source = f"curated splits in {curated['train'].parent}" if curated else f"{config.data.train}"
    if config.curate is not None and curated is None:
        data_cfg = data_cfg.model_copy(update={"on_error": "skip"})  # as curation reads it
        notes.append("curation has not run yet: sizes are of the raw file, which curation will shrink")
    elif curated:
        notes.append("curated splits written earlier; curate again if the config's curate: section changed")
    splits = load_splits(data_cfg, config.train.seed, curated=curated)
    tokenizer = load_tokenizer(config.model)
    renderer = prompt_variants(config, tokenizer, splits)[DEFAULT_PROMPT]
    rng = random.Random(config.train.seed)
    encoded, sizes = {}, {}
    for name in ("train", "val"):
        records: list[Record] = getattr(splits, name)
        sample = rng.sample(records, SAMPLE) if len(records) > SAMPLE else records
        items, _ = encode_records(sample, renderer, tokenizer, config.train.max_length)
        if len(sample) < len(records):
            notes.append(f"{name}: token lengths of a seeded sample of {len(sample)} of {len(records)} examples")
        encoded[name] = items
        sizes[name] = round(len(records) * len(items) / len(sample)) if sample else 0  # rejects dropped as in a run
    lengths = TokenLengths(
        [_shape(e) for e in encoded["train"]], [_shape(e) for e in encoded["val"]], sizes["train"], sizes["val"]
    )
    if not lengths.train:
        raise DataError(source, 0, None, "no training example fits train.max_length", "raise train.max_length")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return _EncodedData(lengths, encoded["train"], encoded["val"], int(pad or 0), source)


def _curated_splits(config: Config) -> dict[str, Path] | None:
    """The split files an earlier `tunewise curate` (or run) wrote for this config, when there are some."""
    if config.curate is None:
        return None
    files = {split: config.curate.output / f"{split}.jsonl" for split in ("train", "val", "test")}
    return {split: path for split, path in files.items() if path.is_file()} if files["train"].is_file() else None


def _shape(item: Encoded) -> tuple[int, int]:
    """(tokens, answer positions): a packed row trains the positions whose next token is an answer token."""
    return len(item.input_ids), sum(1 for label in item.labels[1:] if label != IGNORE_INDEX)


def _probe_batches(
    config: Config, data: _EncodedData, heaviest: MicroBatch, steps: int
) -> tuple[list[list[list[dict[str, list[int]]]]], list[dict[str, list[int]]]]:
    """Step 1 carries the heaviest micro-batch; every other micro-batch is a seeded random draw, as a shuffled
    epoch draws them. The validation batch is the first batch of the validation set."""
    rng = random.Random(config.train.seed)
    t = config.train

    def features(items: list[Encoded]) -> list[dict[str, list[int]]]:
        return [{"input_ids": e.input_ids, "labels": e.labels} for e in items]

    def typical() -> list[dict[str, list[int]]]:
        return features(rng.sample(data.train, min(t.batch_size, len(data.train))))

    first = [features([data.train[i] for i in heaviest.examples])] + [typical() for _ in range(t.grad_accum - 1)]
    later = [[typical() for _ in range(t.grad_accum)] for _ in range(steps - 1)]
    return [first, *later], features(data.val[: t.batch_size])


def print_estimate(console: Console, estimate: RunEstimate) -> None:
    """The estimate as one table: model, data, memory by component, time, and whether the run fits."""
    table = Table(
        title=f"estimate: {escape(estimate.anatomy.name)} on {estimate.device}", show_header=False, title_justify="left"
    )
    table.add_column("item", style="bold")
    table.add_column("value")
    for key, value in [*_model_rows(estimate), *_memory_rows(estimate), *_time_rows(estimate)]:
        table.add_row(key, value)
    console.print(table)
    for note in estimate.notes:
        console.print(f"[dim]note: {escape(note)}[/]")
    console.print(f"[{'green' if estimate.fits else 'red'}]{escape(estimate.reason)}[/]")


def _model_rows(estimate: RunEstimate) -> list[tuple[str, str]]:
    a, lengths, tokens, heaviest = estimate.anatomy, estimate.lengths, estimate.tokens, estimate.heaviest
    shape = f"{a.n_layers} layers x {a.hidden_size} hidden, MLP {a.intermediate_size}"
    heads = f"heads {a.n_heads} ({a.n_kv_heads} kv) x {a.head_dim}, vocab {_count(a.vocab_size)}"
    tied = ", tied embeddings" if a.tied_embeddings else ""
    return [
        ("model", f"{a.architecture}: {_count(a.n_params)} params ({_count(a.non_embedding_params)} non-embedding)"),
        ("", f"{shape}, {heads}, context {a.context_length}{tied}"),
        ("LoRA", f"{_count(estimate.lora_params)} trainable ({100 * estimate.lora_params / a.n_params:.2f}%)"),
        ("data", f"{lengths.n_train} train, {lengths.n_val} val ({escape(estimate.data_source)})"),
        ("steps", f"{estimate.steps}, validation every {tokens.eval_every} ({tokens.evaluations} passes)"),
        ("heaviest micro-batch", f"{heaviest.tokens} tokens, {heaviest.head_positions} through the LM head"),
    ]


def _memory_rows(estimate: RunEstimate) -> list[tuple[str, str]]:
    m, probe, cpu = estimate.memory, estimate.probe, estimate.memory.device == "cpu"
    rows = [
        ("memory: weights", _size(m.weights)),
        ("  LoRA + grads + AdamW", _size(m.lora)),
        ("  activations", _size(m.activations)),
        ("  LM head (loss)", _size(m.lm_head)),
        ("  backward in flight", _size(m.backward)),
        ("  allocator slack", _size(m.allocator) if cpu else "none (GPU)"),
        ("  runtime", _size(m.runtime) if cpu else "CUDA context not counted"),
        ("  arithmetic peak", _size(estimate.arithmetic_peak_bytes)),
    ]
    if probe and probe.result:
        r = probe.result
        ratio = estimate.arithmetic_peak_bytes / r.peak_bytes
        measured = f"{_size(r.peak_bytes)} over {r.steps} steps ({r.peak_scope}); arithmetic/probe {ratio:.2f}"
        rows.append(("  probe peak", measured))
    elif probe:
        rows.append(("  probe", f"[red]{escape(probe.failure or 'failed')}[/]"))
    else:
        rows.append(("  probe", "not run (--probe-steps 0)"))
    available = estimate.available_memory_bytes
    rows.append(("  available", _size(available) if available is not None else "unknown"))
    return rows


def _time_rows(estimate: RunEstimate) -> list[tuple[str, str]]:
    t = estimate.time
    split = f"training {duration(t.train_seconds)}, validation {duration(t.validation_seconds)}"
    return [("time", f"{duration(t.seconds)} ({t.kind}): {split}"), ("", escape(t.basis))]


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n:,}"


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"
