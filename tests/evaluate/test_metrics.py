import pytest

from tunewise.core.format import format_p, format_p_value, p_floor, p_floor_note
from tunewise.evaluate.metrics import classification_metrics, perplexity_metrics
from tunewise.evaluate.stats import mean_difference
from tunewise.train.callbacks import diverging


def test_classification_metrics_match_hand_computed_values():
    gold = ["a", "a", "b", "b", "c", "c"]
    pred = ["a", "b", "b", "b", "a", "c"]
    m = classification_metrics(gold, pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    # a: P 1/2 R 1/2 F 1/2; b: P 2/3 R 1 F 0.8; c: P 1 R 1/2 F 2/3
    assert m["per_class"]["b"] == {
        "precision": pytest.approx(2 / 3),
        "recall": 1.0,
        "f1": pytest.approx(0.8),
        "support": 2,
    }
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["confusion_matrix"]["rows_gold_cols_pred"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_a_label_never_predicted_counts_as_zero_f1():
    m = classification_metrics(["a", "b"], ["a", "a"], ["a", "b"])
    assert m["per_class"]["b"]["f1"] == 0.0 and m["macro_f1"] == pytest.approx((2 / 3) / 2)


def test_perplexity_is_exp_mean_nll():
    assert perplexity_metrics(2.0 * 10, 10)["perplexity"] == pytest.approx(7.389056, rel=1e-6)


def test_divergence_needs_val_up_and_train_down_for_the_whole_window():
    rising = [(1, 1.0, 0.50), (2, 0.9, 0.55), (3, 0.8, 0.60), (4, 0.7, 0.65)]
    assert diverging(rising, 3)
    assert not diverging(rising[:3], 3)  # too few evaluations
    both_down = [(1, 1.0, 0.6), (2, 0.9, 0.5), (3, 0.8, 0.4), (4, 0.7, 0.3)]
    assert not diverging(both_down, 3)
    blip = [(1, 1.0, 0.50), (2, 0.9, 0.55), (3, 0.8, 0.52), (4, 0.7, 0.65)]
    assert not diverging(blip, 3)


def test_a_p_at_the_bootstrap_floor_shows_as_at_most_the_floor():
    always_better = mean_difference([0.0] * 50, [1.0] * 50)  # no resample comes near: the smallest p possible
    assert always_better.p_value == p_floor(1000) == 1 / 1001
    assert format_p(always_better.p_value, 1000) == "p ≤ 0.001"  # not "p<0.001" nor "p=0.001"
    assert format_p_value(always_better.p_value, 1000) == "≤ 0.001"
    assert format_p(2 / 1001, 1000) == "p = 0.002"  # one resample above the floor is a plain value
    assert format_p(0.12, 1000) == "p = 0.120"
    # the bound is the floor rounded up, so it stays true; the decimals follow the resample count
    assert format_p(1 / 201, 200) == "p ≤ 0.005"
    assert format_p(1 / 10_001, 10_000) == "p ≤ 0.0001" and format_p(3 / 10_001, 10_000) == "p = 0.0003"
    assert "1/1,001" in p_floor_note(1000) and "p ≤ 0.001" in p_floor_note(1000)
