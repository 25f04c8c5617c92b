"""Benchmark: how far `tunewise estimate` and the bake-off's extrapolation are from what the full runs then did.

Takes a finished bake-off (default: the newest under runs/bakeoffs/, from `make demo-bakeoff`; or runs one on a
config with `--config`) and fine-tunes every candidate on the full training set with exactly its arms' config
(the same as `bakeoff.verify_top`, after the fact). Reports, per candidate:
- the estimate's peak memory and full-run training time vs the full run's measured ones (bar: within ±25%);
- the extrapolated validation metric vs the full fine-tune's measured one, and whether the ranking held;
- the time `tunewise estimate --probe-steps 0` takes (bar: ≤ 10 s), in a fresh process, as a user runs it.
Usage: python bench/bakeoff_accuracy.py [BAKEOFF_DIR] [--config CONFIG] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from tunewise import api

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.25
QUICK_ESTIMATE_S = 10.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bakeoff", nargs="?", type=Path, help="bake-off directory (default: newest in runs/bakeoffs)")
    parser.add_argument("--config", type=Path, help="run a bake-off on this config first")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bakeoff_accuracy.json")
    args = parser.parse_args()
    console = Console()
    out = args.bakeoff
    if args.config is not None:
        out = api.bakeoff(api.load_config(args.config), console=console, config_path=args.config)
    out = out or _newest_bakeoff()
    report = json.loads((out / "bakeoff.json").read_text(encoding="utf-8"))
    rows = []
    for row in report["candidates"]:
        if row["failure"] is None:
            arm = Path(row["learning_curve"][-1]["run_dir"]).resolve()
            row["verification"] = _full_run(out, arm, row, console)
        quick = _quick_estimate_seconds(arm / "config.yaml") if row["failure"] is None else None
        rows.append(_errors(row, quick))
    results = {"bakeoff": str(out), "candidates": rows, "ranking_held": _ranking_held(report)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    _print(console, results)


def _newest_bakeoff() -> Path:
    found = sorted((ROOT / "runs" / "bakeoffs").glob("*/bakeoff.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit("no bake-off in runs/bakeoffs: run make demo-bakeoff first, or pass --config")
    return found[-1].parent


def _full_run(out: Path, arm: Path, row: dict[str, Any], console: Console) -> dict[str, Any]:
    """The candidate's largest arm's config on the full training set: what `bakeoff.verify_top` runs."""
    full_data = (out / "data" / "train-1.jsonl").resolve()
    overrides = [f"data.train={full_data}", f"output.name={out.name}-{row['slug']}-full"]
    result = api.run(api.load_config(arm / "config.yaml", overrides), console=console)
    summary = json.loads((result.run_dir / "eval.json").read_text(encoding="utf-8"))
    train = summary["train"]
    measured = {
        "metric": result.score("fine-tuned"),
        "n_train": row["extrapolated"]["n_target"],
        "train_seconds": train.get("train_seconds"),
        "peak_memory_gib": train.get("peak_memory_gib"),
        "run_dir": str(result.run_dir),
    }
    extrapolated = row["extrapolated"]
    estimate = row["estimate"] or {}
    check: dict[str, Any] = {
        "measured": measured,
        "extrapolated": extrapolated["metric"],
        "error": measured["metric"] - extrapolated["metric"],
        "inside_interval": extrapolated["ci_low"] <= measured["metric"] <= extrapolated["ci_high"],
    }
    if measured["train_seconds"] and estimate.get("train_seconds"):
        check["time_error"] = estimate["train_seconds"] / measured["train_seconds"] - 1
    if measured["peak_memory_gib"] and estimate.get("peak_memory_bytes"):
        check["memory_error"] = estimate["peak_memory_bytes"] / 2**30 / measured["peak_memory_gib"] - 1
    return check


def _quick_estimate_seconds(config: Path) -> float:
    """`tunewise estimate --probe-steps 0` in a fresh interpreter, wall time including imports."""
    command = [
        sys.executable,
        "-m",
        "tunewise.cli",
        "estimate",
        str(config),
        "--probe-steps",
        "0",
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    return round(time.perf_counter() - start, 2)


def _errors(row: dict[str, Any], quick_seconds: float | None) -> dict[str, Any]:
    check = row.get("verification") or {}
    measured = check.get("measured") or {}
    estimate = row.get("estimate") or {}
    return {
        "model": row["model"],
        "failure": row["failure"],
        "estimate_seconds_no_probe": quick_seconds,
        "estimated_peak_gib": round(estimate.get("peak_memory_bytes", 0) / 2**30, 3) or None,
        "measured_peak_gib": measured.get("peak_memory_gib"),
        "memory_error": check.get("memory_error"),
        "estimated_train_s": estimate.get("train_seconds"),
        "measured_train_s": measured.get("train_seconds"),
        "time_error": check.get("time_error"),
        "extrapolated": check.get("extrapolated"),
        "interval": [row["extrapolated"]["ci_low"], row["extrapolated"]["ci_high"]]
        if row.get("extrapolated")
        else None,
        "measured_metric": measured.get("metric"),
        "extrapolation_error": check.get("error"),
        "inside_interval": check.get("inside_interval"),
    }


def _ranking_held(report: dict[str, Any]) -> bool | None:
    """Whether ordering the candidates by their measured full fine-tunes gives the bake-off's ranking."""
    ranked = [r for r in report["candidates"] if r["rank"] and (r.get("verification") or {}).get("measured")]
    if len(ranked) < 2:
        return None
    greater = report["greater_is_better"]
    by_measured = sorted(ranked, key=lambda r: r["verification"]["measured"]["metric"], reverse=greater)
    return [r["model"] for r in by_measured] == [r["model"] for r in sorted(ranked, key=lambda r: r["rank"])]


def _print(console: Console, results: dict[str, Any]) -> None:
    for row in results["candidates"]:
        if row["failure"]:
            console.print(f"{row['model']}: failed: {row['failure']}")
            continue
        bars = []
        for key, what in (("memory_error", "peak memory"), ("time_error", "training time")):
            error = row[key]
            verdict = "n/a" if error is None else ("pass" if abs(error) <= TOLERANCE else "MISS")
            bars.append(f"{what} {error:+.1%} ({verdict})" if error is not None else f"{what} not measured")
        quick = row["estimate_seconds_no_probe"]
        quick_verdict = "pass" if quick is not None and quick <= QUICK_ESTIMATE_S else "MISS"
        console.print(
            f"{row['model']}: " + "; ".join(bars) + f"; estimate without probe {quick} s ({quick_verdict}); "
            f"extrapolated {row['extrapolated']} vs measured {row['measured_metric']} "
            f"(error {row['extrapolation_error']}, inside interval: {row['inside_interval']})"
        )
    console.print(f"ranking held: {results['ranking_held']}")


if __name__ == "__main__":
    main()
