"""The one progress bar of long work (scoring, generation, curation steps): description, bar, done/total, time."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def progress_bar(console: Console, *, transient: bool = True, label_width: int | None = None) -> Progress:
    """A rich Progress on `console`; `transient` bars vanish when done, `label_width` pads descriptions so the
    bars of several tasks line up."""
    description = "{task.description}" if label_width is None else f"{{task.description:<{label_width}}}"
    columns = (TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=console, transient=transient)
