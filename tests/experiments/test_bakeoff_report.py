"""What `tunewise.experiments.bakeoff_report` leaves: the console table, bakeoff.json, a self-contained and escaped
HTML page, and a best.yaml that is a valid config for the recommended model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from tunewise.config import load_config
from tunewise.experiments.bakeoff_report import cells, print_table, write_best_config, write_outputs

HOSTILE = '<script>alert("x")</script>$x^$'


def _payload() -> dict[str, Any]:
    def candidate(model: str, rank: int | None, metric: float, failure: str | None = None) -> dict[str, Any]:
        arms = [] if failure else [{"n_train": 10, "metric": metric - 0.2}, {"n_train": 20, "metric": metric - 0.1}]
        curve = {"form": "log-linear", "a": 0.1, "slope": 0.1}
        return {
            "model": model,
            "slug": model[:8],
            "rank": rank,
            "failure": failure,
            "estimate": None
            if failure
            else {"model": {"n_params": 134_515_008}, "train_seconds": 540.0, "peak_memory_bytes": 3 * 2**30},
            "base": {} if failure else {"zero-shot": {"metric": 0.3, "ci_low": 0.2, "ci_high": 0.4}},
            "learning_curve": arms,
            "extrapolated": None
            if failure
            else {"metric": metric, "ci_low": metric - 0.1, "ci_high": metric + 0.1, "curve": curve},
            "probability_best": None if failure else (0.9 if rank == 1 else 0.1),
            "verification": None,
        }

    return {
        "name": "demo",
        "task": "classification",
        "primary_metric": "macro_f1",
        "n_val": 96,
        "n_train": 80,
        "subsets": [10, 20],
        "candidates": [candidate("alpha", 1, 0.7), candidate(HOSTILE, 2, 0.5), candidate("broken", None, 0, "no")],
        "recommendation": {"model": "alpha", "text": "alpha: extrapolated 0.7", "sureness": "likely"},
    }


def test_table_shows_ranks_costs_and_failures():
    console = Console(record=True, width=200)
    print_table(console, _payload())
    text = console.export_text()
    assert "9m00s" in text and "3.0 GiB" in text and "90%" in text and "0.60–0.80" in text
    narrow = Console(record=True, width=80)
    print_table(narrow, _payload())
    assert "3.0 GiB" in narrow.export_text()  # every column survives an 80-column terminal
    assert cells(_payload()["candidates"][0])[2] == "135M"
    assert "broken left out: no" in text and "recommended: alpha" in text
    assert "n=10: 0.5000, n=20: 0.6000" in text
    assert cells(_payload()["candidates"][2])[5] == "failed"


def test_page_is_escaped_and_self_contained(tmp_path: Path):
    write_outputs(_payload(), tmp_path)
    html = (tmp_path / "bakeoff.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "data:image/png;base64," in html and "http" not in html.split("Content-Security-Policy")[1][:200]
    assert json.loads((tmp_path / "bakeoff.json").read_text())["name"] == "demo"


def test_best_config_is_the_users_config_with_the_winner(write_config, tmp_path: Path):
    path = write_config(bakeoff={"models": ["a", "b"]})
    config = load_config(path)
    best = write_best_config(config, "alpha-model", _payload(), tmp_path / "best.yaml")
    raw = yaml.safe_load(best.read_text())
    assert raw["model"]["name"] == "alpha-model" and "bakeoff" not in raw
    assert best.read_text().startswith("# Bake-off demo: alpha: extrapolated 0.7")
    reloaded = load_config(best)  # a valid config: `tunewise run best.yaml` works
    assert reloaded.data.train == config.data.train and reloaded.train.lr == config.train.lr
