"""The fidelity table an export prints: each artifact against what it must reproduce, and its task score."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunewise.core.format import metric, signed
from tunewise.export.checks import ArtifactCheck


def print_checks(console: Console, checks: list[ArtifactCheck], primary: str, report: dict[str, Any]) -> None:
    adapter_score = report["adapter"]["metrics"].get(primary)
    table = Table(title=f"export fidelity ({report['n_examples']} {report['split']} examples)")
    table.add_column("artifact")
    for column in ("max |Δlogit|", "NMSE", primary, "Δ vs adapter [95% CI]", "same pred."):
        table.add_column(column, justify="right")
    recorded = report["adapter"].get("predictions") == "the run's predictions.jsonl"
    table.add_row("base + adapter" + (" (run)" if recorded else ""), "", "", metric(adapter_score), "", "")
    for check in checks:
        logits, diff = check.logits, check.difference
        table.add_row(
            escape(check.artifact),
            f"{logits.max_abs_diff:.1e}" if logits else "",
            f"{logits.nmse:.1e}" if logits else "",
            metric((check.metrics or {}).get(primary), missing=""),
            f"{signed(diff.delta)} [{signed(diff.low)}, {signed(diff.high)}]" if diff else "",
            "" if check.prediction_agreement is None else f"{check.prediction_agreement:.1%}",
        )
    console.print(table)
    for check in checks:
        if check.logits:
            console.print(
                f"{escape(check.artifact)} ({escape(check.runtime)}): logits vs {escape(check.against)}, "
                f"{check.logits.positions} positions, NMSE {check.logits.verdict}, same top-1 token "
                f"{check.logits.top1_agreement:.1%}"
                + ("" if check.greedy_agreement is None else f", same greedy answer {check.greedy_agreement:.0%}")
            )
    for check in checks:
        for note in check.notes:
            console.print(f"{escape(check.artifact)}: {escape(note)}")
    for check in checks:
        if check.logits and check.logits.verdict == "fail":
            console.print(
                f"[bold red]{escape(check.artifact)} does not reproduce {escape(check.against)}: logit NMSE "
                f"{check.logits.nmse:.1e} (llama.cpp's check fails at 1e-2); do not ship it as the evaluated model[/]"
            )
    modelfile = report.get("modelfile")
    if modelfile:
        console.print(
            f"Modelfile: prompt token-identical to the trained prompt on {modelfile['identical_tokens']} of "
            f"{modelfile['records']} records"
            + (
                f" (send the record's `{escape(modelfile['prompt_field'])}` as the prompt)"
                if modelfile["prompt_field"]
                else ""
            )
        )
    timings = report.get("timings") or {}
    if timings:
        console.print(
            "timings: " + ", ".join(f"{name.removesuffix('_s')} {value:.1f} s" for name, value in timings.items())
        )
