"""Classification: the label with the most likely answer wins, a free answer is parsed for the label it names
first, and two systems are compared on the same examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from support.tiny import WORDS
from tunewise.config import PromptConfig
from tunewise.data.encode import encode_prompts
from tunewise.data.prompt import PromptRenderer
from tunewise.evaluate.generate import generate_answers
from tunewise.evaluate.metrics import classification_metrics
from tunewise.evaluate.tasks.classification import UNPARSED, ClassificationTask, parse_label

LABELS = sorted(WORDS)


@torch.no_grad()
def _answer_logprob(model, prompt: list[int], answer: list[int]) -> float:
    """log p(answer | prompt) from one plain forward pass: no cache, no batching, no shared prefix."""
    logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + answer])).logits[0].float(), dim=-1)
    return sum(float(logp[len(prompt) - 1 + j, token]) for j, token in enumerate(answer))


def test_likelihood_mode_predicts_the_label_whose_answer_is_most_likely(tiny_lm, classification_records):
    model, tokenizer = tiny_lm
    records = classification_records(6)
    renderer = PromptRenderer(PromptConfig(), "classification", tokenizer, LABELS)
    output = ClassificationTask(LABELS).evaluate(model, tokenizer, renderer, records, batch_size=4)

    prompts = encode_prompts(tokenizer, renderer, records)
    answers = [tokenizer(renderer.answer(label), add_special_tokens=False)["input_ids"] for label in LABELS]
    expected = np.array([[_answer_logprob(model, p, a) for a in answers] for p in prompts])
    stored = np.array([[p["logprobs"][label] for label in LABELS] for p in output.predictions])
    assert np.allclose(stored, expected, atol=1e-3)
    assert [p["pred"] for p in output.predictions] == [LABELS[i] for i in expected.argmax(axis=1)]
    assert [p["source"] for p in output.predictions] == [r.where for r in records]

    gold = [r.fields["label"] for r in records]
    assert output.metrics == classification_metrics(gold, [p["pred"] for p in output.predictions], LABELS)


def test_generate_mode_parses_the_answer_and_counts_what_names_no_label(tiny_lm, classification_records):
    model, tokenizer = tiny_lm
    records = classification_records(4)
    renderer = PromptRenderer(PromptConfig(), "classification", tokenizer, LABELS)
    task = ClassificationTask(LABELS, mode="generate", max_new_tokens=6)
    output = task.evaluate(model, tokenizer, renderer, records, batch_size=2)

    texts = generate_answers(model, tokenizer, renderer, records, 6, batch_size=4)
    assert [p["output"] for p in output.predictions] == texts  # greedy: the batch size changes nothing
    predicted = [parse_label(text, LABELS) or UNPARSED for text in texts]
    assert [p["pred"] for p in output.predictions] == predicted
    assert output.metrics["unparsed"] == predicted.count(UNPARSED)
    gold = [r.fields["label"] for r in records]
    assert output.metrics["macro_f1"] == classification_metrics(gold, predicted, LABELS)["macro_f1"]
    assert "logprobs" not in output.predictions[0]


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Positive, clearly.", "positive"),
        ("not negative but positive", "negative"),  # the first named, not the last
        ("it is very good", "very good"),  # the longer label where two start together
        ("goodness me", None),  # whole words only
        ("", None),
        ("I'd say C++ here", "c++"),  # a label with regex characters is matched literally
    ],
)
def test_parse_label_finds_the_first_label_named(text: str, label: str | None):
    assert parse_label(text, ["negative", "positive", "good", "very good", "c++"]) == label


def _predictions(gold: list[str], pred: list[str]) -> list[dict]:
    return [{"gold": g, "pred": p} for g, p in zip(gold, pred, strict=True)]


def test_compare_is_the_paired_difference_of_macro_f1_and_accuracy():
    gold = ["negative", "neutral", "positive"] * 6
    pred_a = ["negative"] * 18
    pred_b = [*gold[:12], *[UNPARSED] * 6]  # unparsed answers are wrong and get no F1 of their own
    diff = ClassificationTask(LABELS).compare(_predictions(gold, pred_a), _predictions(gold, pred_b), seed=3)

    def f1(pred: list[str]) -> float:
        return f1_score(gold, pred, labels=LABELS, average="macro", zero_division=0)

    assert diff["macro_f1"].delta == pytest.approx(f1(pred_b) - f1(pred_a))
    accuracy = [np.mean([p == g for p, g in zip(pred, gold, strict=True)]) for pred in (pred_a, pred_b)]
    assert diff["accuracy"].delta == pytest.approx(accuracy[1] - accuracy[0])
    assert diff["accuracy"].n == 18 and diff["accuracy"].low <= diff["accuracy"].delta <= diff["accuracy"].high
    again = ClassificationTask(LABELS).compare(_predictions(gold, pred_a), _predictions(gold, pred_b), seed=3)
    assert again == diff  # seeded resampling
