"""HTML reports (run, sweep, comparison): structure by plain parsing, then the pages in headless Chromium.

Browser check, and why this way: the report pages contain no script, and their Content-Security-Policy
forbids script and any fetch. The test loads a copy of each page with a probe <script> inserted before
that CSP (a meta CSP governs only what comes after it), which records error events (including images that
fail to decode), CSP violations and console.error calls, and on `load` writes them into the DOM; Chromium's
`--dump-dom` returns that DOM. A missing probe result fails the test (the page never finished loading).
Chromium's own `--enable-logging=stderr` console lines are checked too: a script-free page must log
nothing at all, which also catches messages the probe cannot see (e.g. blocked inline scripts).
Then a screenshot of the unmodified page must not be blank.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from rich.console import Console

from support.cli import invoke as _invoke
from support.cli import only_run as _only_run
from tunewise.core.format import p_floor_note
from tunewise.errors import TunewiseError
from tunewise.evaluate.stats import Difference
from tunewise.pipeline.summary import print_comparison, print_matrix
from tunewise.track import charts
from tunewise.track.run_report import render_report
from tunewise.track.views import show_run


class Page(HTMLParser):
    """Images and the text of every table cell, by table id."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.images.append(attributes)
        elif tag == "table":
            self._table = attributes.get("id", f"table{len(self.tables)}")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def decode_png(src: str) -> Image.Image:
    assert src.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    image.load()  # decodes every pixel: a truncated or corrupt PNG raises here
    assert image.format == "PNG" and image.width > 100 and image.height > 100
    return image


_CLI_RUNS: dict[str, Path] = {}


@pytest.fixture
def cli_run(write_config, tmp_path: Path) -> Path:
    """One tiny `tunewise run` through the CLI, made by the first test that asks and shared by the others:
    training is the slow part, and rendering never changes the run's own files."""
    if "run" not in _CLI_RUNS:
        result = _invoke("run", write_config(train={"max_steps": 8, "eval_steps": 4, "logging_steps": 2}))
        assert result.exit_code == 0, result.output
        _CLI_RUNS["run"] = _only_run(tmp_path / "runs")
    return _CLI_RUNS["run"]


def test_run_report_of_a_tiny_cli_run(cli_run: Path):
    run = cli_run
    page_path = render_report([run])
    assert page_path == run / "report.html"
    text = page_path.read_text(encoding="utf-8")
    page = Page(text)
    assert f"Run {run.name}" in text and "<script" not in text
    assert len(page.images) >= 3  # loss curves + a confusion matrix per model
    for image in page.images:
        decode_png(image["src"])
    assert {p.name for p in (run / "plots").glob("*.png")} >= {"loss.png", "confusion-base.png"}

    report = json.loads((run / "eval.json").read_text())
    metric = report["primary_metric"]
    cells = {row[0]: row for row in page.tables["eval-cells"][1:]}
    assert set(cells) == {"base", "fine-tuned"}
    for name in cells:
        assert cells[name][1] == f"{report['models'][name][metric]:.4f}"
    diff = report["differences"][metric]
    assert cells["fine-tuned"][2].startswith(f"{diff['delta']:+.4f}")
    assert cells["fine-tuned"][3] == f"[{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}]"
    metrics = {row[0]: row[1:3] for row in page.tables["eval-metrics"][1:]}
    assert metrics["accuracy"] == [f"{report['models'][m]['accuracy']:.4f}" for m in ("base", "fine-tuned")]
    summary = dict(page.tables["summary"])
    assert summary["training steps"] == "8 of 8"
    assert summary["best step"].startswith(str(report["train"]["best_step"]))


def write_fake_run(path: Path, tmp_path: Path, lr: float = 1e-3, crashed: bool = False) -> Path:
    """A run directory as tunewise writes it, with an overfitting stretch, a task metric and a curation report."""
    path.mkdir(parents=True)
    curated = tmp_path / "curated"
    curated.mkdir(exist_ok=True)
    (curated / "curation_report.json").write_text(
        json.dumps(
            {
                "totals": {"input": 500, "kept": 120, "rejected": 380},
                "split_sizes": {"train": 80, "val": 20, "test": 20},
                "steps": [
                    {"name": "exact_dedup", "enabled": True, "n_in": 500, "kept": 300, "dropped": {"dedup:exact": 200}},
                    {"name": "balance", "enabled": True, "n_in": 300, "kept": 120, "dropped": {"balance:capped": 180}},
                ],
            }
        )
    )
    config = {"data": {"kind": "classification", "train": str(curated / "train.jsonl")}, "train": {"lr": lr}}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    rows = [{"step": s, "loss": 2.0 - 0.1 * s} for s in range(1, 13)]
    for step, val in ((4, 1.5), (8, 1.2), (12, 1.4)):  # 8 -> 12: validation rises while training falls
        rows += [{"step": step, "eval_loss": val}, {"step": step, "eval_macro_f1": 0.3 + step / 40}]
    if not crashed:
        rows.append({"step": 12, "event": "train_end", "best_step": 8, "best_metric": 1.2, "stopped_early": True})
    lines = "".join(json.dumps({"time": 1000.0 + i, **r}) + "\n" for i, r in enumerate(rows))
    (path / "metrics.jsonl").write_text(lines + ('{"time": 1100.0, "step": 13, "lo' if crashed else ""))
    if crashed:
        return path
    confusion = {"labels": ["neg", "pos"], "rows_gold_cols_pred": [[8, 2], [3, 7]]}
    models = {
        "base": {"n": 20, "macro_f1": 0.5, "accuracy": 0.55, "confusion_matrix": confusion},
        "fine-tuned": {"n": 20, "macro_f1": 0.75, "accuracy": 0.75, "confusion_matrix": confusion},
        "fine-tuned · <script>alert(1)</script>": {"n": 20, "macro_f1": 0.7, "accuracy": 0.7},
    }
    significant = {"delta": 0.25, "ci_low": 0.05, "ci_high": 0.45, "p_value": 0.01, "significant": True}
    evaluation = {"task": "classification", "primary_metric": "macro_f1", "split": "test", "n_examples": 20}
    evaluation |= {"models": models, "differences": {"macro_f1": significant}}
    evaluation["train"] = {"steps": 12, "planned_steps": 20, "best_step": 8, "best_metric": 1.2, "stopped_early": True}
    (path / "eval.json").write_text(json.dumps(evaluation))
    vs_base = {"delta": 0.2, "ci_low": -0.05, "ci_high": 0.4, "p_value": 0.12, "significant": False}
    matrix = {"metric": "macro_f1", "reference": "base", "cells": {"fine-tuned · <script>alert(1)</script>": {}}}
    matrix["cells"]["fine-tuned · <script>alert(1)</script>"]["vs_reference"] = vs_base
    (path / "eval_matrix.json").write_text(json.dumps(matrix))
    return path


def test_fake_run_page_shows_curation_matrix_cells_and_escapes_names(tmp_path: Path):
    run = write_fake_run(tmp_path / "runs" / "fake", tmp_path)
    page_path = render_report([run], tmp_path / "out" / "page.html")
    text = page_path.read_text()
    page = Page(text)
    assert "<script" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert {p.name for p in (tmp_path / "out" / "plots").glob("*.png")} == {
        "loss.png",
        "val_metric.png",
        "confusion-base.png",
        "confusion-fine-tuned.png",
    }
    cells = {row[0]: row[1:] for row in page.tables["eval-cells"][1:]}
    assert cells["fine-tuned"][:3] == ["0.7500", "+0.2500 *", "[+0.0500, +0.4500]"]
    assert cells["fine-tuned · <script>alert(1)</script>"][:4] == ["0.7000", "+0.2000", "[-0.0500, +0.4000]", "0.120"]
    assert page.tables["curation"][1] == ["exact_dedup", "500", "300", "200", "dedup:exact: 200"]
    summary = dict(page.tables["summary"])
    assert summary["curated sizes"] == "train 80, val 20, test 20" and summary["stopped early"] == "yes"


def test_console_and_html_report_give_one_p_string(tmp_path: Path):
    """The same p reads the same in the console tables, `runs show` and the HTML report; at the bootstrap's
    floor (1/1001 with 1,000 resamples) it is "p ≤ 0.001", explained in a footnote."""
    run = write_fake_run(tmp_path / "runs" / "fake", tmp_path)
    floor = {"delta": 0.25, "ci_low": 0.05, "ci_high": 0.45, "p_value": 1 / 1001, "significant": True}
    floor |= {"n": 20, "resamples": 1000}
    plain = {**floor, "p_value": 0.12, "significant": False}
    evaluation = json.loads((run / "eval.json").read_text())
    evaluation["differences"] = {"macro_f1": floor, "accuracy": plain}
    (run / "eval.json").write_text(json.dumps(evaluation))
    script_cell = "fine-tuned · <script>alert(1)</script>"
    matrix = json.loads((run / "eval_matrix.json").read_text())
    matrix["cells"][script_cell]["vs_reference"] = floor
    (run / "eval_matrix.json").write_text(json.dumps(matrix))

    text = render_report([run]).read_text(encoding="utf-8")
    page = Page(text)
    html_statements = {row[0]: row[-1].rsplit(", ", 1)[-1] for row in page.tables["eval-metrics"][1:] if row[-1]}
    html_cells = {row[0]: row[4] for row in page.tables["eval-cells"][1:] if len(row) > 4}
    assert html_statements == {"macro_f1": "p ≤ 0.001", "accuracy": "p = 0.120"}
    assert html_cells == {"fine-tuned": "≤ 0.001", script_cell: "≤ 0.001"}
    footnote = re.search(r'<p class="muted" id="p-note">(.*?)</p>', text, re.S).group(1)
    assert " ".join(html.unescape(footnote).split()) == p_floor_note(1000)

    console = Console(record=True, width=250)
    differences = {
        name: Difference(d["delta"], d["ci_low"], d["ci_high"], d["p_value"], 20, 1000)
        for name, d in (("macro_f1", floor), ("accuracy", plain))
    }
    models = {name: evaluation["models"][name] for name in ("base", "fine-tuned")}
    print_comparison(console, models, "macro_f1", differences)
    matrix_cells = {script_cell: {"macro_f1": 0.7, "vs_reference": floor}, "base": {"macro_f1": 0.5}}
    print_matrix(console, {"reference": "base", "cells": matrix_cells}, "macro_f1")
    show_run(console, run)
    printed = console.export_text()
    comparison = {line.split()[1]: line for line in printed.splitlines() if line.startswith("│ ") and "[" in line}
    assert comparison["macro_f1"].rstrip(" │").endswith("p ≤ 0.001")
    assert comparison["accuracy"].rstrip(" │").endswith("p = 0.120")
    matrix_row = next(line for line in printed.splitlines() if "<script>" in line)
    assert matrix_row.rstrip(" │").endswith("│ ≤ 0.001")
    assert "95% CI [+0.0500, +0.4500], p ≤ 0.001" in printed  # runs show
    assert "p<" not in printed and "p=" not in printed
    assert p_floor_note(1000) in " ".join(printed.split())


def test_crashed_run_with_a_partial_last_metrics_line_still_renders(tmp_path: Path):
    run = write_fake_run(tmp_path / "crashed", tmp_path, crashed=True)
    text = render_report(run).read_text()
    assert "the run crashed" in text
    page = Page(text)
    assert len(page.images) == 2  # loss + task metric; no evaluation, so no confusion matrix
    assert "eval-cells" not in page.tables


def test_overfitting_stretch_is_val_rising_while_train_falls():
    train = [(s, 2.0 - 0.1 * s) for s in range(1, 21)]
    val = [(4, 1.5), (8, 1.2), (12, 1.3), (16, 1.4), (20, 1.1)]
    assert charts.overfitting_stretches(train, val) == [(8, 16)]
    rising_train = [(s, 0.1 * s) for s in range(1, 21)]  # both rise: underfitting noise, not overfitting
    assert charts.overfitting_stretches(rising_train, val) == []


def write_fake_sweep(path: Path) -> Path:
    (path / "plots").mkdir(parents=True)
    (path / "plots" / "history.png").write_bytes(charts.overlay_plot({"trials": [(0, 0.5), (1, 0.4), (2, 0.45)]}))
    trials = [
        {"number": n, "state": state, "params": {"train.lr": lr}, "value": value, "seconds": 3.0}
        for n, state, lr, value in ((0, "COMPLETE", 1e-5, 0.5), (1, "COMPLETE", 3e-4, 0.4), (2, "PRUNED", 1e-2, 0.1))
    ]
    trials[0]["run_dir"] = str(path / "trials" / "trial-0")
    trials.append({"number": 3, "state": "FAIL", "params": {}, "value": None, "error": "DataError: <bad> row"})
    (path / "trials.json").write_text(json.dumps(trials))
    (path / "best.yaml").write_text("train:\n  lr: 0.0003\n  metric: eval_loss\n")
    return path


def test_sweep_page_marks_the_best_completed_trial_and_shows_best_yaml(tmp_path: Path):
    sweep = write_fake_sweep(tmp_path / "sweep")
    text = render_report([sweep]).read_text()
    page = Page(text)
    decode_png(page.images[0]["src"])
    rows = {row[0]: row for row in page.tables["trials"][1:]}
    assert rows["1 ★"][2] == "0.4000"  # eval_loss is minimised; the pruned trial's 0.1 does not count
    assert "0 ★" not in rows and "2 ★" not in rows
    assert rows["0"][3:] == ["1e-05", "3.0", "trials/trial-0"]  # lr in significant digits; run dir within the sweep
    assert rows["3"][1] == "FAIL DataError: <bad> row"
    assert "lr: 0.0003" in html.unescape(re.search(r"<pre>(.*?)</pre>", text, re.S).group(1))


def test_comparison_page_has_metrics_config_diff_and_overlaid_curves(tmp_path: Path):
    a = write_fake_run(tmp_path / "a" / "run-a", tmp_path, lr=1e-3)
    b = write_fake_run(tmp_path / "b" / "run-b", tmp_path, lr=5e-4)
    out = render_report([a, b], tmp_path / "cmp" / "comparison.html")
    page = Page(out.read_text())
    decode_png(page.images[0]["src"])
    assert (tmp_path / "cmp" / "plots" / "val_loss_overlay.png").is_file()
    assert page.tables["config-diff"][1:] == [["train.lr", "0.001", "0.0005"]]
    first = page.tables["compare"][1]
    assert first[:4] == ["run-a", "macro_f1", "0.5000", "0.7500"] and "eval_loss = 1.2000" in first


def test_report_of_a_directory_that_is_no_run_nor_sweep_is_a_user_error(tmp_path: Path):
    with pytest.raises(TunewiseError, match="no metrics.jsonl or eval.json"):
        render_report([tmp_path])


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("Chromium not installed: apt-get install chromium")


PROBE = """<script>
window.__errors = [];
const note = (m) => window.__errors.push(String(m));
addEventListener("error", (e) => note(e.message || "failed to load " + (e.target.src || e.target.href)), true);
addEventListener("securitypolicyviolation", (e) => note("CSP blocked " + e.blockedURI + " " + e.violatedDirective));
const consoleError = console.error;
console.error = (...args) => { note("console.error: " + args.join(" ")); consoleError.apply(console, args); };
addEventListener("load", () => {
  for (const img of document.images) if (!img.complete || img.naturalWidth === 0) note("not decoded: " + img.alt);
  const out = document.createElement("pre"); out.id = "__probe"; out.textContent = JSON.stringify(__errors);
  document.body.appendChild(out);
});
</script>"""


def browse(browser: str, page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",  # tests run as root in containers
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={profile}",
        "--window-size=1280,2400",
        "--virtual-time-budget=5000",  # let `load` fire and the probe write its result before the dump
    ]
    return subprocess.run([browser, *flags, *args, page.as_uri()], capture_output=True, text=True, timeout=90)


def assert_loads_cleanly(browser: str, page: Path, tmp_path: Path) -> None:
    probe = tmp_path / f"{page.parent.name}-{page.stem}.probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    dumped = browse(browser, probe, tmp_path / "profile", "--dump-dom")
    found = re.search(r'<pre id="__probe">(.*?)</pre>', dumped.stdout, re.S)
    assert found, f"{page.name}: page did not finish loading\n{dumped.stderr[-2000:]}"
    errors = json.loads(html.unescape(found.group(1)))
    assert not errors, f"{page.name}: {errors}"
    console = [line for line in dumped.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, f"{page.name}: {console}"

    shot = tmp_path / f"{page.parent.name}-{page.stem}.png"
    browse(browser, page, tmp_path / "profile", f"--screenshot={shot}")
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2400, 1280)
    # A blank page is all white; the sparsest page here (a sweep of three trials) is ~1.5% dark pixels.
    assert (pixels < 200).mean() > 0.005 and pixels.std() > 10, f"{page}: blank screenshot"


def test_the_browser_probe_sees_a_broken_image(tmp_path: Path):
    """The check below is not vacuous: a page with an undecodable image fails it."""
    browser = chromium()
    page = tmp_path / "broken.html"
    page.write_text(
        '<!doctype html><html><head></head><body><img alt="x" src="data:image/png;base64,AAAA"></body></html>'
    )
    with pytest.raises(AssertionError, match="not decoded: x"):
        assert_loads_cleanly(browser, page, tmp_path)


def test_report_pages_load_in_chromium_without_errors(cli_run: Path, tmp_path: Path):
    browser = chromium()
    run = cli_run
    pages = [render_report([run]), render_report([write_fake_sweep(tmp_path / "sweep")])]
    fake = write_fake_run(tmp_path / "fake", tmp_path)
    pages.append(render_report([run, fake], tmp_path / "comparison.html"))
    for page in pages:
        assert_loads_cleanly(browser, page, tmp_path)
