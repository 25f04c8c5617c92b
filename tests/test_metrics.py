import pytest

from tunewise.evaluate.metrics import classification_metrics, perplexity_metrics
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
