"""print_checks: the fidelity table and the lines under it, as a user's terminal shows them."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from tunewise.evaluate.stats import Difference
from tunewise.export.checks import ArtifactCheck
from tunewise.export.fidelity import LogitFidelity
from tunewise.export.report import print_checks


def _report(**extra: Any) -> dict[str, Any]:
    return {"adapter": {"metrics": {"macro_f1": 0.8125}}, "n_examples": 24, "split": "test", **extra}


def _printed(checks: list[ArtifactCheck], report: dict[str, Any]) -> str:
    console = Console(record=True, width=120)
    print_checks(console, checks, "macro_f1", report)
    return console.export_text()


def _merged() -> ArtifactCheck:
    return ArtifactCheck(
        "merged float32",
        "transformers",
        "base + adapter",
        logits=LogitFidelity(max_abs_diff=3.2e-6, nmse=4.5e-9, top1_agreement=1.0, positions=40),
        metrics={"macro_f1": 0.8125},
        difference=Difference(delta=0.0, low=-0.0125, high=0.025, p_value=1.0, n=24, resamples=1000),
        prediction_agreement=1.0,
        greedy_agreement=0.75,
        notes=["tokenizer re-encodes 24 of 24 prompts identically"],
    )


def test_each_artifact_with_its_nmse_delta_ci_and_notes():
    gguf = ArtifactCheck(
        "gguf q8_0",
        "llama.cpp",
        "merged",
        logits=LogitFidelity(max_abs_diff=0.031, nmse=2.0e-4, top1_agreement=0.95, positions=40),
        metrics={"macro_f1": 0.7917},
        difference=Difference(delta=-0.0208, low=-0.0625, high=0.0, p_value=0.5, n=24, resamples=1000),
        prediction_agreement=23 / 24,
        notes=["llama.cpp tokenizes 1 prompt differently"],
    )
    text = _printed([_merged(), gguf], _report())
    assert "export fidelity (24 test examples)" in text
    assert "base + adapter" in text and "0.8125" in text
    merged_row = next(line for line in text.splitlines() if "merged float32" in line)
    assert "3.2e-06" in merged_row and "4.5e-09" in merged_row
    assert "+0.0000 [-0.0125, +0.0250]" in merged_row and "100.0%" in merged_row
    gguf_row = next(line for line in text.splitlines() if "gguf q8_0" in line and "│" in line)
    assert "2.0e-04" in gguf_row and "-0.0208 [-0.0625, +0.0000]" in gguf_row and "95.8%" in gguf_row
    # the lines under the table (wrapped at the console's width): each check's verdict, and its notes
    flat = " ".join(text.split())
    assert "NMSE excellent, same top-1 token 100.0%, same greedy answer 75%" in flat
    assert "gguf q8_0 (llama.cpp): logits vs merged, 40 positions, NMSE pass, same top-1 token 95.0%" in flat
    assert "merged float32: tokenizer re-encodes 24 of 24 prompts identically" in text
    assert "gguf q8_0: llama.cpp tokenizes 1 prompt differently" in text


def test_a_check_without_logits_prints_blank_cells_not_none():
    adapter = ArtifactCheck("adapter", "files", "the run's adapter", notes=["copied byte for byte"])
    text = _printed([adapter], _report())
    assert "None" not in text and "nan" not in text
    row = next(line for line in text.splitlines() if line.startswith("│ adapter"))
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells == ["adapter", "", "", "", "", ""]
    assert "logits vs" not in text  # no verdict line for a check that compared no logits
    assert "adapter: copied byte for byte" in text


def test_markup_in_names_and_notes_is_printed_literally():
    check = ArtifactCheck("gguf [bold]q8_0[/]", "llama.cpp", "merged", notes=["[red]not markup[/red]"])
    text = _printed([check], _report())
    assert "gguf [bold]q8_0[/]" in text and "[red]not markup[/red]" in text


def test_modelfile_and_timings_lines():
    modelfile = {"identical_tokens": 23, "records": 24, "prompt_field": "text"}
    text = _printed([_merged()], _report(modelfile=modelfile, timings={"merge_and_save_s": 1.234, "gguf_write_s": 0.5}))
    assert "Modelfile: prompt token-identical to the trained prompt on 23 of 24 records" in text
    assert "send the record's `text` as the prompt" in text
    assert "timings: merge_and_save 1.2 s, gguf_write 0.5 s" in text


def test_no_modelfile_or_timings_lines_without_them():
    text = _printed([_merged()], _report())
    assert "Modelfile" not in text and "timings" not in text
