"""The one way tunewise turns a matplotlib figure into a PNG: bytes, a data: URI for an HTML page, or a file.

Figures are drawn with matplotlib's object-oriented `Figure`, whose PNG output goes through the Agg renderer: no
display and no pyplot state are needed. A figure that pyplot made (optuna's plots) works the same, and is closed
here, so a long sweep does not keep every figure it drew in memory.
"""

from __future__ import annotations

import base64
import io
import sys
import warnings
from pathlib import Path
from typing import Any

DPI = 100


def new_figure(width: float, height: float) -> Any:
    """An empty figure of `width` x `height` inches, owned by no pyplot figure manager."""
    from matplotlib.figure import Figure  # imported on use: importing matplotlib costs ~0.3 s

    return Figure(figsize=(width, height))


def literal(text: object) -> str:
    """Text from user data (a label, a run or cell name) as matplotlib shows it literally: with `$` escaped, since
    matplotlib reads $...$ as math, and a label like "$x^$" would fail the whole figure."""
    return str(text).replace("$", r"\$")


def png_bytes(fig: Any, dpi: int = DPI) -> bytes:
    """The figure as PNG (trimmed to what it draws), then closed."""
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():  # labels and run names from user data may lack glyphs in the default font
            warnings.simplefilter("ignore", UserWarning)
            fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        close(fig)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    """PNG bytes as a `data:` URI, the only image source the reports' Content-Security-Policy allows."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def save_png(fig: Any, path: Path | str, dpi: int = DPI) -> Path:
    """The figure written to `path` as PNG, then closed."""
    path = Path(path)
    path.write_bytes(png_bytes(fig, dpi))
    return path


def close(fig: Any) -> None:
    """Release a figure pyplot tracks (a plain `Figure` is garbage once unreferenced). pyplot is not imported
    for it: a process that never imported pyplot has no pyplot figure to close."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)
