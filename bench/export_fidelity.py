"""Benchmark: `tunewise export` of a finished run (default: the newest `make demo` run), its fidelity and its time.

Exports merged float32 + GGUF f16, then GGUF q8_0, each into a fresh directory, and checks the bars:
- merged: max |Δlogit| <= 1e-3 against base + adapter, identical predictions on every evaluated record;
- GGUF f16 (llama.cpp): logit NMSE < 1e-4, predictions agree on >= 99%, macro-F1 within 0.01 of the adapter;
- GGUF q8_0 (llama.cpp): logit NMSE < 1e-2, macro-F1 within 0.02;
- writing merged + GGUF (merge, save, convert) <= 60 s; the fidelity checks are timed separately.
The GGUF bars need llama.cpp (pip install 'tunewise[gguf]'); without it the GGUF is checked through transformers'
reader and the bars are reported as not measured.
Usage: python bench/export_fidelity.py [RUN_DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from tunewise.config import ExportConfig
from tunewise.export.job import export_run

WRITE_BUDGET_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", nargs="?", type=Path, help="run directory (default: newest runs/*-tweet-sentiment)")
    parser.add_argument("--keep", type=Path, help="keep the exports under this directory")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "export_fidelity.json")
    args = parser.parse_args()
    run = args.run or _newest_demo_run()
    console = Console()
    root = args.keep or Path(tempfile.mkdtemp(prefix="tunewise-export-bench-"))
    results: dict[str, Any] = {"run": str(run)}
    for name, settings in {
        "merged+f16": ExportConfig(formats=["merged", "gguf"], gguf_type="f16"),
        "q8_0": ExportConfig(formats=["gguf"], gguf_type="q8_0"),
    }.items():
        start = time.perf_counter()
        outcome = export_run(run, settings, console, out=root / name, overwrite=True)
        results[name] = {"total_s": round(time.perf_counter() - start, 1), **outcome.report}
    verdicts = _verdicts(results)
    results["verdicts"] = verdicts
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    for bar, (ok, figure) in verdicts.items():
        console.print(f"{'PASS' if ok else ('n/a ' if ok is None else 'FAIL')}  {bar}: {figure}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


def _verdicts(results: dict[str, Any]) -> dict[str, tuple[bool | None, str]]:
    main_run, q8 = results["merged+f16"], results["q8_0"]
    metric = main_run["primary_metric"]
    merged = _check(main_run, "merged")
    f16, q8_0 = _check(main_run, "gguf"), _check(q8, "gguf")
    timings = main_run["timings"]
    write_s = timings["merge_and_save_s"] + timings["gguf_write_s"]
    verdicts = {
        "merged max |Δlogit| <= 1e-3": (
            merged["logits"]["max_abs_diff"] <= 1e-3,
            f"{merged['logits']['max_abs_diff']:.2e}",
        ),
        "merged same predictions on all": (
            merged["prediction_agreement"] == 1.0,
            f"{merged['prediction_agreement']:.2%}",
        ),
        "merge + GGUF write <= 60 s": (
            write_s <= WRITE_BUDGET_S,
            f"{write_s:.1f} s (checks included: {main_run['total_s']} s)",
        ),
    }
    for label, check, nmse_bar, f1_bar in (("f16", f16, 1e-4, 0.01), ("q8_0", q8_0, 1e-2, 0.02)):
        measured = check["runtime"] == "llama.cpp"
        diff = check["difference_to_adapter"]["delta"]
        verdicts[f"GGUF {label} NMSE < {nmse_bar:g} (llama.cpp)"] = (
            (check["logits"]["nmse"] < nmse_bar) if measured else None,
            f"{check['logits']['nmse']:.2e} via {check['runtime']}",
        )
        verdicts[f"GGUF {label} {metric} within {f1_bar} of the adapter"] = (
            (abs(diff) <= f1_bar) if measured else None,
            f"{diff:+.4f} via {check['runtime']}",
        )
        if label == "f16":
            agreement = check["prediction_agreement"]
            verdicts["GGUF f16 predictions agree >= 99%"] = (
                (agreement >= 0.99) if measured else None,
                f"{agreement:.2%}",
            )
    return verdicts


def _check(report: dict[str, Any], prefix: str) -> dict[str, Any]:
    return next(c for c in report["checks"] if c["artifact"].startswith(prefix))


def _newest_demo_run() -> Path:
    runs = sorted(Path("runs").glob("*-tweet-sentiment"))
    if not runs:
        raise SystemExit("no runs/*-tweet-sentiment: run `make demo` first, or pass a run directory")
    return runs[-1]


if __name__ == "__main__":
    main()
