"""The shared progress bar: what it shows, and that it pads labels when asked."""

from __future__ import annotations

from rich.console import Console

from tunewise.core.progress import progress_bar


def _render(**options: object) -> str:
    console = Console(record=True, width=100, force_terminal=False)
    with progress_bar(console, transient=False, **options) as progress:
        task = progress.add_task("scoring", total=4)
        progress.advance(task, 3)
    return console.export_text()


def test_the_bar_shows_the_label_and_done_of_total() -> None:
    text = _render()
    assert "scoring" in text and "3/4" in text


def test_a_label_width_pads_the_description() -> None:
    assert "scoring     " in _render(label_width=12)
    assert "scoring     " not in _render()


def test_a_transient_bar_leaves_nothing_behind() -> None:
    console = Console(record=True, width=100, force_terminal=True)
    with progress_bar(console) as progress:
        progress.add_task("scoring", total=1)
    assert "scoring" not in console.export_text().splitlines()[-1:]
