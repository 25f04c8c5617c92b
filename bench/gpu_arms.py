"""The steps of bench/gpu_check.py, each run in its own process: tunewise runs, the export, and the TRL peer.

Each step function takes the check's plan (sizes, device, work folder) and returns its figures as a dict, or raises;
bench/gpu_check.py runs them through `python bench/gpu_check.py --worker STEP` and writes the report.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
from pathlib import Path
from typing import Any

# The configs bench/gpu_check.py writes into the work folder: the slice with its curate: section, and its curated
# splits read directly (the QLoRA run and TRL train on what the bf16 run curated, without curating again).
CURATING = "tweets.yaml"
CURATED = "curated.yaml"
RESULT = "{step}.json"  # each step's figures, in the work folder: the export reads the bf16 run's


def overrides(plan: dict[str, Any], step: str) -> list[str]:
    """The dotted overrides of one step: the device, bf16 autocast, packing, and its number of optimizer steps."""
    steps = plan["qlora_steps"] if step == "tunewise-qlora" else plan["steps"]
    chosen = [
        f"model.device={plan['device']}",
        "train.precision=bf16",
        "train.packing=true",
        f"train.max_steps={steps}",
        f"train.eval_steps={steps}",  # one validation, at the end: the loop's time is mostly training
    ]
    if step == "tunewise-qlora":
        chosen.append("model.quantize=4bit")
    return chosen


def tunewise_run(plan: dict[str, Any], step: str) -> dict[str, Any]:
    """`tunewise run` through the Python API (curating first for the bf16 step); eval.json's metrics checked."""
    from rich.console import Console

    from tunewise import api

    work = Path(plan["work"])
    config_file = work / (CURATING if step == "tunewise-bf16" else CURATED)
    config = api.load_config(config_file, overrides(plan, step))
    result = api.run(config, resume="fresh", console=Console(), config_path=config_file)
    evaluation = json.loads((result.run_dir / "eval.json").read_text(encoding="utf-8"))
    metric = evaluation["primary_metric"]
    scores = {cell: evaluation["models"].get(cell, {}).get(metric) for cell in ("base", "fine-tuned")}
    bad = [cell for cell, value in scores.items() if not isinstance(value, int | float) or math.isnan(value)]
    if bad:
        raise RuntimeError(f"eval.json has no {metric} for {', '.join(bad)}: {scores}")
    train = evaluation["train"]
    metrics_rows = _rows(result.run_dir / "metrics.jsonl")
    eval_s = sum(row["eval_runtime"] for row in metrics_rows if "eval_runtime" in row)
    loop_s = float(train["train_seconds"]) - eval_s  # validation passes are not training
    curated = load_curated(plan, step)
    figures = throughput(curated["lengths"], int(train["steps"]), config.train.batch_size, loop_s)
    return {
        **figures,
        "run_dir": str(result.run_dir),
        "peak_gib": train.get("peak_memory_gib"),
        "validation_s": round(eval_s, 2),
        "final_loss": final_loss(metrics_rows, int(train["steps"])),
        "metric": {"name": metric, **scores},
        "few_shot": {k: v.get(metric) for k, v in evaluation["models"].items() if k not in scores},
        **device_use(plan),
    }


def export_run(plan: dict[str, Any], _step: str) -> dict[str, Any]:
    """The bf16 run shipped as merged safetensors (and a GGUF when llama-cpp-python is installed), each measured
    against the adapter by `tunewise export`."""
    from rich.console import Console

    from tunewise import api

    source = Path(plan["work"]) / RESULT.format(step="tunewise-bf16")
    if not source.is_file():
        raise RuntimeError("no bf16 run to export: the tunewise-bf16 step did not finish")
    run_dir = Path(json.loads(source.read_text(encoding="utf-8"))["run_dir"])
    gguf = importlib.util.find_spec("llama_cpp") is not None
    formats = ["merged", "gguf"] if gguf else ["merged"]
    result = api.export(run_dir, formats=formats, overwrite=True, console=Console())
    checks = result.checks
    return {
        "formats": formats,
        "notes": [] if gguf else ["gguf skipped: llama-cpp-python is not installed"],
        "checks": [
            {k: c.get(k) for k in ("artifact", "logit_verdict", "prediction_agreement", "seconds")} for c in checks
        ],
        "metric": {"name": "prediction agreement", "value": min((c.get("prediction_agreement") or 0) for c in checks)},
        **device_use(plan, required=False),  # the merge may run where it likes; the runs above must use the GPU
    }


def trl_sft(plan: dict[str, Any], _step: str) -> dict[str, Any]:
    """TRL's SFTTrainer + PEFT on the tunewise runs' own encoded training examples, same LoRA, optimizer and steps."""
    import tempfile

    from peft import LoraConfig
    from transformers import set_seed
    from trl_peer import sft_trainer  # bench/trl_peer.py: run as python bench/<name>.py

    from tunewise import api
    from tunewise.models import load_model
    from tunewise.train.callbacks import peak_memory_gib, reset_peak_memory

    config = api.load_config(Path(plan["work"]) / CURATED, overrides(plan, "trl-sft"))
    loaded = load_model(config.model)
    curated = load_curated(plan, "trl-sft", loaded.tokenizer)
    t, lora = config.train, config.lora
    peft_lora = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )  # fmt: skip
    trainer_args = {
        "output_dir": tempfile.mkdtemp(prefix="trl-", dir=plan["work"]),
        "per_device_train_batch_size": t.batch_size,
        "max_steps": t.max_steps,
        "learning_rate": t.lr,
        "weight_decay": t.weight_decay,
        "warmup_steps": t.warmup,
        "lr_scheduler_type": t.scheduler,
        "max_grad_norm": t.max_grad_norm,
        "logging_steps": t.logging_steps,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": plan["device"] == "cpu",
        "seed": t.seed,
        "data_seed": t.seed,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    set_seed(t.seed)
    trainer = sft_trainer(
        loaded.model, loaded.tokenizer, curated["input_ids"], curated["completion_mask"], peft_lora, trainer_args,
        bf16=t.precision == "bf16",
    )  # fmt: skip
    reset_peak_memory()  # as tunewise does: the peak of the training loop alone
    started = time.perf_counter()
    trainer.train()
    loop_s = time.perf_counter() - started
    peak = peak_memory_gib()
    loss = final_loss(trainer.state.log_history, trainer.state.global_step)
    return {
        **throughput(curated["lengths"], trainer.state.global_step, t.batch_size, loop_s),
        "peak_gib": round(peak, 3),
        "final_loss": loss,
        "metric": {"name": "final loss", "value": loss},
        **device_use(plan),
    }


def load_curated(plan: dict[str, Any], step: str, tokenizer: Any = None) -> dict[str, Any]:
    """The curated training split encoded as tunewise's runs encode it: prompt + answer ids and the answer mask."""
    from tunewise import api
    from tunewise.data.encode import encode_records
    from tunewise.data.splits import load_splits
    from tunewise.data.variants import DEFAULT_PROMPT, prompt_variants
    from tunewise.models.loader import load_tokenizer

    config = api.load_config(Path(plan["work"]) / CURATED, overrides(plan, step))
    splits = load_splits(config.data, config.train.seed)
    tokenizer = tokenizer or load_tokenizer(config.model)
    renderer = prompt_variants(config, tokenizer, splits)[DEFAULT_PROMPT]
    items, _ = encode_records(splits.train, renderer, tokenizer, config.train.max_length)
    return {
        "input_ids": [item.input_ids for item in items],
        "completion_mask": [[int(label != -100) for label in item.labels] for item in items],
        "lengths": [len(item.input_ids) for item in items],
    }


def throughput(lengths: list[int], steps: int, batch_size: int, loop_s: float) -> dict[str, Any]:
    """Non-padding tokens trained per second. The examples seen are steps x batch size; their tokens are that many
    times the mean length, which is exact when the steps cover whole epochs (`exact`)."""
    seen = steps * batch_size
    tokens = round(seen * sum(lengths) / len(lengths)) if lengths else 0
    return {
        "steps": steps,
        "batch_size": batch_size,
        "train_examples": len(lengths),
        "tokens": tokens,
        "tokens_exact": bool(lengths) and seen % len(lengths) == 0,
        "train_s": round(loop_s, 3),
        "tokens_per_s": round(tokens / loop_s, 1) if loop_s > 0 else None,
    }


def final_loss(rows: list[dict[str, Any]], steps: int) -> float | None:
    """The loss logged at the last step (the Trainer's mean since the log before: the same window for tunewise and
    TRL, which log every train.logging_steps), else the run's mean training loss (a run shorter than that window)."""
    last = next((row["loss"] for row in reversed(rows) if "loss" in row and row.get("step") == steps), None)
    if last is None:
        last = next((row["train_loss"] for row in rows if "train_loss" in row), None)
    return None if last is None else float(last)


def device_use(plan: dict[str, Any], required: bool = True) -> dict[str, Any]:
    """Whether this process allocated GPU memory; on a CUDA check, a step that never did ran on the CPU: an error."""
    import torch

    if plan["device"] != "cuda":
        return {"gpu_used": False}
    used = torch.cuda.is_initialized() and torch.cuda.max_memory_allocated() > 0
    if required and not used:
        raise RuntimeError("this step never allocated GPU memory: it ran on the CPU although model.device is cuda")
    return {"gpu_used": used, "process_peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)}


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


STEPS = {
    "tunewise-bf16": tunewise_run,
    "tunewise-qlora": tunewise_run,
    "export": export_run,
    "trl-sft": trl_sft,
}
