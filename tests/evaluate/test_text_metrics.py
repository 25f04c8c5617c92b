import numpy as np
import pytest
from sklearn.metrics import f1_score

from tunewise.evaluate.stats import macro_f1_difference, macro_f1_from_indices, mean_difference
from tunewise.evaluate.text_metrics import chrf_bleu, exact_match, normalize_answer, qa_scores, rouge, token_f1


def test_rouge_matches_hand_counts():
    # pred "the cat sat", ref "the cat sat down": unigram P=3/3, R=3/4 -> F=6/7; bigrams 2/2, 2/3 -> 0.8
    result = rouge(["the cat sat"], ["the cat sat down"])
    assert result["rouge1"] == pytest.approx(6 / 7)
    assert result["rouge2"] == pytest.approx(0.8)
    assert result["rougeL"] == pytest.approx(6 / 7)
    assert rouge(["running dogs"], ["run dog"])["rouge1"] == 1.0  # Porter stemming
    assert result["mean_words"] == 3 and result["mean_reference_words"] == 4


def test_squad_normalization_exact_match_and_f1():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert exact_match("the eiffel tower", ["Eiffel Tower."]) == 1.0
    assert exact_match("tower", ["Eiffel Tower"]) == 0.0
    # pred {eiffel, tower, paris} vs gold {eiffel, tower}: P=2/3 R=1 F=0.8; best over answers
    assert token_f1("Eiffel tower, Paris", ["Eiffel Tower", "Louvre"]) == pytest.approx(0.8)
    assert token_f1("", [""]) == 1.0 and token_f1("x", [""]) == 0.0
    scores = qa_scores(["Paris", "Rome"], [["paris"], ["Milan"]])
    assert scores["exact_match"] == 0.5 and scores["per_example_f1"] == [1.0, 0.0]


def test_chrf_and_bleu_are_100_for_identical_text_and_lower_otherwise():
    same = chrf_bleu(["the quick brown fox jumps"], ["the quick brown fox jumps"])
    assert same["chrf"] == pytest.approx(100.0) and same["bleu"] == pytest.approx(100.0)
    worse = chrf_bleu(["a slow red fox sleeps"], ["the quick brown fox jumps"])
    assert worse["chrf"] < 50 and worse["bleu"] < same["bleu"]


def test_macro_f1_from_indices_equals_sklearn():
    rng = np.random.default_rng(0)
    gold, pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    pred[pred == 3] = 2  # a label never predicted
    expected = f1_score(gold, pred, labels=[0, 1, 2, 3], average="macro", zero_division=0)
    assert macro_f1_from_indices(gold, pred, 4) == pytest.approx(expected)


def test_bootstrap_finds_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(1)
    base = rng.normal(0.5, 0.1, 400)
    better = base + 0.05 + rng.normal(0, 0.05, 400)  # known true difference 0.05
    diff = mean_difference(base.tolist(), better.tolist(), resamples=2000, seed=2)
    assert diff.low < 0.05 < diff.high and diff.significant and diff.p_value < 0.01
    same = base + rng.normal(0, 0.05, 400)  # no true difference
    null = mean_difference(base.tolist(), same.tolist(), resamples=2000, seed=2)
    assert null.low < 0 < null.high and not null.significant and null.p_value > 0.05


def test_macro_f1_difference_is_paired_on_examples():
    gold = ["a", "b", "c"] * 60
    base = ["a"] * 180  # always "a"
    tuned = [g if i % 5 else "a" for i, g in enumerate(gold)]  # mostly right
    diff = macro_f1_difference(gold, base, tuned, ["a", "b", "c"], resamples=500)
    assert diff.delta > 0.5 and diff.significant and diff.to_json()["significant"] is True


def test_rouge_scores_non_latin_scripts():
    assert rouge(["привет мир"], ["привет мир"])["rouge1"] == 1.0
    assert rouge(["привет мир"], ["пока мир"])["rouge1"] == pytest.approx(0.5)


def test_label_parsing_from_free_text():
    from tunewise.evaluate.tasks import parse_label

    labels = ["negative", "neutral", "positive", "very positive"]
    assert parse_label("The sentiment is Positive.", labels) == "positive"
    assert parse_label("Neutral, maybe negative", labels) == "neutral"  # the first one named
    assert parse_label("very positive indeed", labels) == "very positive"  # longer label at the same place
    assert parse_label("nonnegative numbers", labels) is None  # whole words only
    assert parse_label("I cannot tell", labels) is None


def test_unparsed_answers_count_as_errors_in_macro_f1():
    gold = ["a", "b", "a", "b"]
    pred = ["a", "(unparsed)", "a", "b"]
    expected = f1_score(gold, pred, labels=["a", "b"], average="macro", zero_division=0)
    diff = macro_f1_difference(gold, gold, pred, ["a", "b"], resamples=50)
    assert diff.delta == pytest.approx(expected - 1.0)
