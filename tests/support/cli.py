"""Invoking the `tunewise` command in-process and finding the run it wrote."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tunewise.cli import app

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def only_run(runs: Path) -> Path:
    (run,) = [d for d in runs.iterdir() if d.is_dir()]  # beside runs.db, the index
    return run
