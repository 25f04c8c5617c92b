"""The one matplotlib helper (core/plots.py): figure -> PNG bytes, data: URI or file, and the figure closed."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

from PIL import Image

from tunewise.core import plots


def _figure(title: str = "curve"):
    fig = plots.new_figure(4, 2)
    ax = fig.subplots()
    ax.plot([0, 1, 2], [1.0, 0.5, 0.8])
    ax.set_title(title)
    return fig


def _decoded(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()  # a truncated PNG raises here
    return image


def test_png_bytes_is_a_whole_png_at_the_asked_resolution():
    small, large = _decoded(plots.png_bytes(_figure())), _decoded(plots.png_bytes(_figure(), dpi=200))
    assert small.format == "PNG" and small.width > 100 and small.height > 50
    assert large.width > 1.8 * small.width  # bbox "tight" trims margins, so not exactly twice


def test_a_data_uri_decodes_to_the_same_png():
    png = plots.png_bytes(_figure())
    uri = plots.data_uri(png)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == png


def test_save_png_writes_the_file(tmp_path: Path):
    path = plots.save_png(_figure(), tmp_path / "curve.png")
    assert path == tmp_path / "curve.png" and _decoded(path.read_bytes()).format == "PNG"
    assert plots.save_png(_figure(), str(tmp_path / "as-text.png")).is_file()  # a str path as optuna code passes


def test_pyplot_figures_are_closed_once_rendered(tmp_path: Path):
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    fig, ax = plt.subplots()
    ax.plot([1, 2])
    assert plt.fignum_exists(fig.number)
    plots.save_png(fig, tmp_path / "pyplot.png")
    assert not plt.fignum_exists(fig.number) and set(plt.get_fignums()) == before


def test_missing_glyphs_in_user_labels_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        plots.png_bytes(_figure("\U0001f680 label \u4e2d\u6587"))


def test_rendering_needs_no_display_and_imports_no_pyplot():
    """A headless machine draws the report figures; pyplot (and a GUI backend) is never imported for it."""
    code = (
        "import sys; from tunewise.core import plots; f = plots.new_figure(2, 2); f.subplots().plot([1, 2]); "
        "png = plots.png_bytes(f); assert png[:8] == b'\\x89PNG\\r\\n\\x1a\\n'; "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
