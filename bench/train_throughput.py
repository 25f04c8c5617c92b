"""Benchmark: LoRA training throughput of tunewise against TRL SFTTrainer + PEFT on the same machine.

Arms, same model, same data, same LoRA (r=16, all linear layers), same optimizer steps and seed, fp32 on CPU:
- `tunewise`: the default path (`trainer.training_path`): Trainer + PackingCollator + completion-only LM head +
  per-example SDPA + the LoRA update fused into the base output in place;
- `tunewise-unfused`: the same with `train.fused_lora: false` (PEFT's own LoRA forward), to measure that part;
- `tunewise-plain`: the same Trainer with `train.packing: false` and `train.fused_lora: false` (padded batches, full
  logits, PEFT's forward);
- `tunewise-length-grouped`, `tunewise-plain-length-grouped`: those two with batches grouped by length
  (`train.sampler: length_grouped`) instead of the random order every other arm uses (tunewise's default): what
  length grouping saves in padding and time, packed and padded;
- `trl-sft`: the reference peer: SFTTrainer + PEFT with completion_only_loss=True and TRL's defaults
  otherwise (padded batches, gradient checkpointing on), except bf16=False: TRL turns bf16 autocast on by default,
  which changes the numerics; the bars compare the same fp32 objective;
- `trl-sft-tuned`: TRL with its own fast settings (padding_free=True, gradient checkpointing off), for reference.
Each run is a fresh subprocess (so peak RSS is per arm) and the arm order rotates every repeat (A/B alternation).
Data: random token ids shaped like the two demos: classification (~60-token prompt, 2-token answer) and
summarization (180-450-token abstract, 15-45-token summary). Reports non-padding tokens/s, wall time, model load
time, peak RSS, final loss, the ratios against `trl-sft`, and an approximate MFU against a measured fp32 GEMM rate.
Usage: python bench/train_throughput.py [--model smollm2-135m-instruct] [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ARMS = (
    "tunewise",
    "trl-sft",
    "tunewise-unfused",
    "tunewise-plain",
    "trl-sft-tuned",
    "tunewise-length-grouped",
    "tunewise-plain-length-grouped",
)
REFERENCE = "trl-sft"
SHAPES = {"classification": ((35, 90), (2, 2)), "summarization": ((180, 450), (15, 45))}  # (prompt, completion)
# (optimizer steps, micro-batch): each arm trains ~10k tokens per shape, about 1-3 minutes on 2 cores
SIZES = {"classification": (20, 8), "summarization": (6, 4)}
BARS = {"classification": 2.0, "summarization": 1.4}  # target throughput ratio against `trl-sft`


def make_examples(shape: str, n: int, vocab: int, seed: int) -> list[dict[str, list[int]]]:
    (p_lo, p_hi), (c_lo, c_hi) = SHAPES[shape]
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        prompt, completion = rng.randint(p_lo, p_hi), rng.randint(c_lo, c_hi)
        ids = [rng.randrange(10, vocab) for _ in range(prompt + completion)]  # ids < 10: specials in small vocabs
        examples.append(
            {
                "input_ids": ids,
                "labels": [-100] * prompt + ids[prompt:],
                "completion_mask": [0] * prompt + [1] * completion,
            }
        )
    return examples


def gemm_gflops(size: int = 2048, reps: int = 4, rounds: int = 5) -> float:
    """fp32 matmul rate of this process's threads, best of `rounds`: the denominator of the MFU estimate.
    (One short round of 1024^2 under-measured the rate here: MFU came out above 100%.)"""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * size**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


def run_arm(arm: str, shape: str, args: argparse.Namespace) -> dict[str, Any]:
    """One training run in this (fresh) process."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments, set_seed

    from tunewise.config import ModelConfig, TrainConfig
    from tunewise.models import load_model
    from tunewise.train.trainer import training_path

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    loaded = load_model(ModelConfig(name=args.model))  # GGUF: dequantized once, then a safetensors cache
    load_s = time.perf_counter() - start
    load_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    model, tokenizer = loaded.model, loaded.tokenizer
    steps, batch_size = SIZES[shape]
    examples = make_examples(shape, steps * batch_size, model.config.vocab_size, args.seed)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    out = tempfile.mkdtemp(prefix="train-bench-")
    common: dict[str, Any] = {
        "output_dir": out,
        "per_device_train_batch_size": batch_size,
        "max_steps": steps,
        "learning_rate": 2e-4,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "seed": args.seed,
        "data_seed": args.seed,
        "train_sampling_strategy": "random",  # tunewise's default order; the same micro-batches in every arm
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    lengths = [len(e["input_ids"]) for e in examples]
    columns = {name: [e[name] for e in examples] for name in ("input_ids", "labels", "completion_mask")}
    set_seed(args.seed)
    if arm.startswith("trl-sft"):
        from trl_peer import sft_trainer  # bench/trl_peer.py: run as python bench/<name>.py

        # bf16 off in both TRL arms: the same fp32 numerics as tunewise (see the module docstring)
        trainer: Any = sft_trainer(
            model,
            tokenizer,
            columns["input_ids"],
            columns["completion_mask"],
            lora,
            common,
            bf16=False,
            tuned=arm == "trl-sft-tuned",
        )
    else:
        peft_model = get_peft_model(model, lora)
        switches = {
            "tunewise": {},
            "tunewise-unfused": {"fused_lora": False},
            "tunewise-plain": {"packing": False, "fused_lora": False},
            "tunewise-length-grouped": {},
            "tunewise-plain-length-grouped": {"packing": False, "fused_lora": False},
        }
        if arm.endswith("length-grouped"):
            common["train_sampling_strategy"] = "group_by_length"
        path = TrainConfig(**switches[arm])
        collator, loss_fn = training_path(peft_model, path, tokenizer.pad_token_id)
        data = Dataset.from_dict({"input_ids": columns["input_ids"], "labels": columns["labels"], "length": lengths})
        trainer = Trainer(
            model=peft_model,
            args=TrainingArguments(remove_unused_columns=False, **common),
            train_dataset=data,
            data_collator=collator,
            compute_loss_func=loss_fn,
        )
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    tokens = sum(lengths)  # steps * batch_size examples, one epoch: every example is trained once
    return {
        "arm": arm,
        "shape": shape,
        "wall_s": round(wall, 3),
        "load_s": round(load_s, 2),
        "steps": steps,
        "batch_size": batch_size,
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
        "trained_tokens": sum(sum(e["completion_mask"]) for e in examples),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # Linux: KiB
        "load_peak_rss_mb": round(load_rss_mb, 1),
        "final_loss": losses[-1] if losses else None,
        "losses": losses,
        "non_embedding_params": sum(p.numel() for n, p in model.named_parameters() if "embed" not in n),
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# Training throughput ({results['model']}, LoRA r=16 all-linear, fp32, {results['threads']} threads, "
        f"fp32 GEMM {results['gemm_gflops']:.1f} GFLOP/s, {results['repeats']} repeats, medians)",
        "",
        "| shape | arm | steps x batch | tokens/s | vs trl-sft | wall s | load s | peak RSS MB | final loss "
        "| loss - trl-sft | approx MFU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["summary"]:
        lines.append(
            f"| {row['shape']} | {row['arm']} | {row['steps']} x {row['batch_size']} | {row['tokens_per_s']:.0f} | "
            f"{row['speedup']:.2f}x | {row['wall_s']:.1f} | {row['load_s']:.1f} | {row['peak_rss_mb']:.0f} | "
            f"{row['final_loss']:.5f} | {row['loss_diff']:+.1e} | {100 * row['mfu']:.1f}% |"
        )
    lines += ["", "| target | required | measured | met |", "|---|---|---|---|"]
    for bar in results["bars"]:
        lines.append(f"| {bar['bar']} | {bar['required']} | {bar['measured']} | {'yes' if bar['met'] else 'NO'} |")
    lines += [
        "",
        "tokens/s counts non-padding tokens (prompt + completion) over the training loop's wall time (model load "
        "excluded, shown apart). MFU = 4 x non-embedding params x tokens/s over the fp32 GEMM rate (LoRA: forward 2N, "
        "backward to the inputs 2N, no weight gradients for frozen weights; attention and LM head left out), so it "
        "compares arms rather than states an absolute efficiency.",
    ]
    return "\n".join(lines) + "\n"


def summarize(runs: list[dict[str, Any]], gemm: float) -> list[dict[str, Any]]:
    summary = []
    for shape in dict.fromkeys(r["shape"] for r in runs):
        rows = {}
        for arm in dict.fromkeys(r["arm"] for r in runs):
            mine = [r for r in runs if r["shape"] == shape and r["arm"] == arm]
            if not mine:
                continue
            tps = statistics.median(r["tokens_per_s"] for r in mine)
            rows[arm] = {
                "shape": shape,
                "arm": arm,
                "steps": mine[0]["steps"],
                "batch_size": mine[0]["batch_size"],
                "tokens_per_s": tps,
                "wall_s": statistics.median(r["wall_s"] for r in mine),
                "load_s": statistics.median(r["load_s"] for r in mine),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in mine),
                "final_loss": mine[-1]["final_loss"],
                "mfu": 4 * mine[0]["non_embedding_params"] * tps / (gemm * 1e9),
            }
        reference = rows.get(REFERENCE)
        for row in rows.values():
            row["speedup"] = row["tokens_per_s"] / reference["tokens_per_s"] if reference else float("nan")
            row["loss_diff"] = row["final_loss"] - reference["final_loss"] if reference else float("nan")
            summary.append(row)
    return summary


def bars(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The benchmark targets (bars) for the `tunewise` arm against `trl-sft`."""
    checks = []
    for row in summary:
        ref = next((r for r in summary if r["shape"] == row["shape"] and r["arm"] == REFERENCE), None)
        if row["arm"] != "tunewise" or row["shape"] not in BARS or ref is None:  # e.g. --arms without trl-sft
            continue
        shape, need = row["shape"], BARS[row["shape"]]
        checks += [
            {
                "bar": f"{shape}: throughput vs trl-sft",
                "required": f">= {need}x",
                "measured": f"{row['speedup']:.2f}x",
                "met": row["speedup"] >= need,
            },
            {
                "bar": f"{shape}: peak RSS vs trl-sft",
                "required": "<= 1.00x",
                "measured": f"{row['peak_rss_mb'] / ref['peak_rss_mb']:.2f}x",
                "met": row["peak_rss_mb"] <= ref["peak_rss_mb"],
            },
            {
                "bar": f"{shape}: final loss - trl-sft",
                "required": "within 1e-3",
                "measured": f"{row['loss_diff']:+.1e}",
                "met": abs(row["loss_diff"]) <= 1e-3,
            },
        ]
    return checks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct", help="alias, HF model dir or .gguf")
    parser.add_argument("--repeats", type=int, default=2, help="runs per arm and shape, arm order rotating")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_throughput")
    parser.add_argument("--worker", nargs=2, metavar=("ARM", "SHAPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(run_arm(*args.worker, args)))
        return

    import torch

    torch.set_num_threads(args.threads)
    gemm = gemm_gflops()
    passthrough = ["--model", args.model, "--threads", str(args.threads), "--seed", str(args.seed)]
    runs = []
    for shape in args.shapes:
        for rep in range(args.repeats):
            order = args.arms[rep % len(args.arms) :] + args.arms[: rep % len(args.arms)]
            for arm in order:
                cmd = [sys.executable, __file__, "--worker", arm, shape, *passthrough]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise SystemExit(f"{arm}/{shape} failed:\n{done.stderr[-3000:]}")
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"{shape:14} {arm:16} {runs[-1]['tokens_per_s']:>9.0f} tok/s  {runs[-1]['wall_s']:.2f} s")
    results = {
        "model": args.model,
        "threads": args.threads,
        "repeats": args.repeats,
        "gemm_gflops": round(gemm, 2),
        "summary": summarize(runs, gemm),
        "runs": runs,
    }
    results["bars"] = bars(results["summary"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown(results), encoding="utf-8")
    print(markdown(results))


if __name__ == "__main__":
    main()
