"""The run-report charts (track/charts.py): each a decodable PNG, overfitting spans, labels taken literally."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tunewise.track import charts

TRAIN = [(s, 2.0 - 0.05 * s) for s in range(1, 21)]
VAL = [(4, 1.5), (8, 1.2), (12, 1.3), (16, 1.4), (20, 1.1)]


def pixels(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    image.load()  # a truncated PNG raises here
    assert image.format == "PNG" and image.width > 100 and image.height > 100
    return np.asarray(image.convert("RGB"), dtype=int)


def has_colour(image: np.ndarray, hex_colour: str, alpha: float = 1.0, tolerance: int = 8) -> bool:
    """Whether some pixel shows `hex_colour` drawn at `alpha` over the white background."""
    rgb = alpha * np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]) + (1 - alpha) * 255
    return bool((np.abs(image - rgb).max(axis=2) <= tolerance).sum() > 20)


def test_overfitting_spans_are_merged_when_adjacent():
    assert charts.overfitting_stretches(TRAIN, VAL) == [(8, 16)]  # 8->12 and 12->16 join into one span
    apart = [(4, 1.5), (8, 1.6), (12, 1.0), (16, 1.2)]
    assert charts.overfitting_stretches(TRAIN, apart) == [(4, 8), (12, 16)]


def test_overfitting_compares_the_mean_training_loss_between_evaluations():
    # training loss dips once before the second evaluation but its mean over the window rises: no overfitting
    train = [(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0), (5, 1.4), (6, 1.4), (7, 1.4), (8, 0.9)]
    assert charts.overfitting_stretches(train, [(4, 1.0), (8, 1.2)]) == []
    assert charts.overfitting_stretches([], VAL) == [] and charts.overfitting_stretches(TRAIN, VAL[:1]) == []


def test_the_loss_plot_draws_both_curves_the_marks_and_the_overfitting_band():
    image = pixels(charts.loss_plot(TRAIN, VAL, best_step=8, stop_step=20))
    drawn = {charts.TRAIN_COLOR: 0.9, charts.VAL_COLOR: 1.0, charts.BEST_COLOR: 1.0, charts.STOP_COLOR: 1.0}
    drawn[charts.OVERFIT_COLOR] = 0.4
    for colour, alpha in drawn.items():
        assert has_colour(image, colour, alpha), colour
    plain = pixels(charts.loss_plot(TRAIN, [(4, 1.5), (8, 1.2)]))  # validation only falls: nothing to shade
    assert has_colour(plain, charts.VAL_COLOR)
    for colour, alpha in ((charts.BEST_COLOR, 1.0), (charts.STOP_COLOR, 1.0), (charts.OVERFIT_COLOR, 0.4)):
        assert not has_colour(plain, colour, alpha), colour


def test_a_loss_plot_of_training_loss_alone_renders():
    pixels(charts.loss_plot(TRAIN, []))


def test_metric_confusion_and_overlay_plots_render():
    pixels(charts.metric_plot({"macro_f1": [(4, 0.4), (8, 0.6)], "accuracy": [(4, 0.5), (8, 0.7)]}, 8, None))
    pixels(charts.overlay_plot({"run-a": VAL, "run-b": [(4, 1.4), (8, 1.1)]}))
    small = pixels(charts.confusion_plot(["neg", "pos"], [[8, 2], [3, 7]], "fine-tuned"))
    many = [f"label-{i}" for i in range(30)]
    big = pixels(charts.confusion_plot(many, [[i + j for j in range(30)] for i in range(30)], "many labels"))
    assert big.shape[0] > small.shape[0]  # the figure grows with the labels, up to a cap


def test_an_empty_gold_row_does_not_divide_by_zero():
    pixels(charts.confusion_plot(["a", "b"], [[0, 0], [1, 3]], "a never gold"))


@pytest.mark.parametrize("text", ["$x^$", "cost $5", r"\frac{a}{b}$"])
def test_dollar_signs_in_labels_and_names_are_text_not_math(text: str):
    """matplotlib parses $...$ as math: a label such as "$x^$" would fail the whole report."""
    pixels(charts.confusion_plot([text, "b"], [[1, 2], [3, 4]], f"cell {text}"))
    pixels(charts.overlay_plot({text: VAL}))
    pixels(charts.metric_plot({text: VAL}))
