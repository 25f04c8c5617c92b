"""Benchmark: LoRA training throughput, tunewise padded (current default) vs tunewise packed vs TRL SFTTrainer.

Arms, same model, same data, same LoRA, same steps and seed, fp32 on CPU:
- `tunewise-padded`: Trainer + PaddingCollator, full logits (what `tunewise train` does today);
- `tunewise-packed`: Trainer + PackingCollator + completion_only_loss + varlen attention (issue #6);
- `trl-sft`: TRL SFTTrainer + PEFT, padding_free=True, completion_only_loss=True (its fused, tiled LM head).
Each run is a fresh subprocess (so peak RSS is per arm) and the arm order rotates every repeat (A/B alternation).
Data: random token ids shaped like the two demos: classification (~60-token prompt, 2-token answer) and
summarization (180-450-token abstract, 15-45-token summary). Reports non-padding tokens/s, wall time, peak RSS,
final loss, and an approximate MFU against a measured fp32 GEMM rate.
Usage: python bench/train_throughput.py --model smollm2-135m-instruct [--steps 20] [--repeats 2] [--threads 2]
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

ARMS = ("tunewise-padded", "tunewise-packed", "trl-sft")
SHAPES = {"classification": ((35, 90), (2, 2)), "summarization": ((180, 450), (15, 45))}  # (prompt, completion)


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


def gemm_gflops(size: int = 1024, reps: int = 8) -> float:
    """fp32 matmul rate of this process's threads: the denominator of the MFU estimate."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size**3 * reps / (time.perf_counter() - start) / 1e9


def run_arm(arm: str, shape: str, args: argparse.Namespace) -> dict[str, Any]:
    """One training run in this (fresh) process."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments, set_seed

    from tunewise.config import ModelConfig
    from tunewise.models import load_model
    from tunewise.train.collate import PaddingCollator
    from tunewise.train.loss import completion_only_loss
    from tunewise.train.packing import PackingCollator, enable_varlen_attention

    torch.set_num_threads(args.threads)
    loaded = load_model(ModelConfig(name=args.model))
    model, tokenizer = loaded.model, loaded.tokenizer
    examples = make_examples(shape, args.steps * args.batch_size, model.config.vocab_size, args.seed)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    out = tempfile.mkdtemp(prefix="train-bench-")
    common: dict[str, Any] = {
        "output_dir": out,
        "per_device_train_batch_size": args.batch_size,
        "max_steps": args.steps,
        "learning_rate": 2e-4,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "seed": args.seed,
        "data_seed": args.seed,
        "train_sampling_strategy": "group_by_length",  # as tunewise: same micro-batches in every arm
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    lengths = [len(e["input_ids"]) for e in examples]
    columns = {name: [e[name] for e in examples] for name in ("input_ids", "labels", "completion_mask")}
    set_seed(args.seed)
    if arm == "trl-sft":
        from trl import SFTConfig, SFTTrainer

        data = Dataset.from_dict({"input_ids": columns["input_ids"], "completion_mask": columns["completion_mask"]})
        # TRL defaults to bf16 autocast and gradient checkpointing: off, for the same fp32 work as the other arms
        extra = {"bf16": False, "gradient_checkpointing": False, "max_length": None}
        config = SFTConfig(padding_free=True, completion_only_loss=True, **extra, **common)
        trainer: Any = SFTTrainer(
            model=model, args=config, train_dataset=data, processing_class=tokenizer, peft_config=lora
        )
    else:
        peft_model = get_peft_model(model, lora)
        packed = arm == "tunewise-packed"
        if packed:
            enable_varlen_attention(peft_model)
        data = Dataset.from_dict({"input_ids": columns["input_ids"], "labels": columns["labels"], "length": lengths})
        trainer = Trainer(
            model=peft_model,
            args=TrainingArguments(remove_unused_columns=False, **common),
            train_dataset=data,
            data_collator=PackingCollator() if packed else PaddingCollator(tokenizer.pad_token_id),
            compute_loss_func=completion_only_loss if packed else None,
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
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
        "trained_tokens": sum(sum(e["completion_mask"]) for e in examples),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # Linux: KiB
        "final_loss": losses[-1] if losses else None,
        "losses": losses,
        "non_embedding_params": sum(p.numel() for n, p in model.named_parameters() if "embed" not in n),
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# Training throughput ({results['model']}, {results['steps']} steps x batch {results['batch_size']}, "
        f"{results['threads']} threads, fp32 GEMM {results['gemm_gflops']:.1f} GFLOP/s)",
        "",
        "| shape | arm | tokens/s (median) | wall s (median) | peak RSS MB | final loss | approx MFU |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["summary"]:
        lines.append(
            f"| {row['shape']} | {row['arm']} | {row['tokens_per_s']:.0f} | {row['wall_s']:.2f} | "
            f"{row['peak_rss_mb']:.0f} | {row['final_loss']:.4f} | {100 * row['mfu']:.1f}% |"
        )
    lines += [
        "",
        "tokens/s counts non-padding tokens (prompt + completion). MFU = 4 x non-embedding params x tokens/s over the "
        "fp32 GEMM rate (LoRA: forward 2N, backward to the inputs 2N, no weight gradients for frozen weights; "
        "attention and LM head left out), so it compares arms rather than states an absolute efficiency.",
    ]
    return "\n".join(lines) + "\n"


def summarize(runs: list[dict[str, Any]], gemm: float) -> list[dict[str, Any]]:
    summary = []
    for shape in dict.fromkeys(r["shape"] for r in runs):
        for arm in dict.fromkeys(r["arm"] for r in runs):
            mine = [r for r in runs if r["shape"] == shape and r["arm"] == arm]
            if not mine:
                continue
            tps = statistics.median(r["tokens_per_s"] for r in mine)
            summary.append(
                {
                    "shape": shape,
                    "arm": arm,
                    "tokens_per_s": tps,
                    "wall_s": statistics.median(r["wall_s"] for r in mine),
                    "peak_rss_mb": max(r["peak_rss_mb"] for r in mine),
                    "final_loss": mine[-1]["final_loss"],
                    "mfu": 4 * mine[0]["non_embedding_params"] * tps / (gemm * 1e9),
                }
            )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct", help="alias, HF model dir or .gguf")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
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
    passthrough = ["--model", args.model, "--steps", str(args.steps), "--batch-size", str(args.batch_size)]
    passthrough += ["--threads", str(args.threads), "--seed", str(args.seed)]
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
        "steps": args.steps,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "gemm_gflops": round(gemm, 2),
        "summary": summarize(runs, gemm),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown(results), encoding="utf-8")
    print(markdown(results))


if __name__ == "__main__":
    main()
