"""Tasks scored on generated text: each scores the greedy answers against the references with its metric, keeps
the per-example figure for the paired comparison, and adds the references' perplexity when asked."""

from __future__ import annotations

import pytest

from tunewise.config import PromptConfig
from tunewise.data.prompt import PromptRenderer
from tunewise.evaluate.generate import generate_answers
from tunewise.evaluate.tasks.generative import SCORERS, GenerativeTask
from tunewise.evaluate.tasks.perplexity import PerplexityTask
from tunewise.evaluate.text_metrics import chrf_bleu, rouge


@pytest.mark.parametrize(
    ("name", "primary"), [("summarization", "rougeL"), ("qa", "f1"), ("generation", "sentence_chrf")]
)
def test_each_task_reports_its_primary_metric(name: str, primary: str):
    assert GenerativeTask(name, 8, [], 64).primary_metric == primary == SCORERS[name][1]


def test_generation_scores_the_greedy_answers_with_reference_perplexity(tiny_lm, completion_records):
    model, tokenizer = tiny_lm
    records = completion_records(4)
    renderer = PromptRenderer(PromptConfig(chat_template=False), "completion", tokenizer)
    output = GenerativeTask("generation", 6, [], 64).evaluate(model, tokenizer, renderer, records, batch_size=3)

    texts = generate_answers(model, tokenizer, renderer, records, 6, batch_size=4)
    references = [r.fields["completion"] for r in records]
    expected = chrf_bleu(texts, references)
    assert [p["pred"] for p in output.predictions] == texts
    assert [p["reference"] for p in output.predictions] == references
    assert [p["sentence_chrf"] for p in output.predictions] == pytest.approx(expected["per_example_sentence_chrf"])
    for key in ("sentence_chrf", "chrf", "bleu"):
        assert output.metrics[key] == pytest.approx(expected[key])
    assert not [key for key in output.metrics if key.startswith("per_example_")]  # lists stay in predictions
    perplexity = PerplexityTask(64).evaluate(model, tokenizer, renderer, records, batch_size=4).metrics["perplexity"]
    assert output.metrics["reference_perplexity"] == pytest.approx(perplexity, rel=1e-4)


def test_summarization_without_perplexity(tiny_lm, completion_records):
    model, tokenizer = tiny_lm
    records = completion_records(3, seed=1)
    renderer = PromptRenderer(PromptConfig(chat_template=False), "completion", tokenizer)
    task = GenerativeTask("summarization", 5, [], 64, with_perplexity=False)
    output = task.evaluate(model, tokenizer, renderer, records, batch_size=3)
    texts = [p["pred"] for p in output.predictions]
    assert output.metrics["rougeL"] == pytest.approx(rouge(texts, [r.fields["completion"] for r in records])["rougeL"])
    assert "reference_perplexity" not in output.metrics


def test_a_qa_reference_holds_alternatives_separated_by_bars():
    scorer, _ = SCORERS["qa"]
    scores = scorer(["Paris", "the Seine", "Lyon"], ["Paris || City of Light", "river || Seine", "Paris"])
    assert scores["per_example_exact_match"] == [1.0, 1.0, 0.0]  # any alternative counts, articles ignored


def test_compare_is_the_paired_difference_of_the_primary_metric():
    task = GenerativeTask("qa", 8, [], 64)
    a = [{"f1": score} for score in (0.0, 0.5, 0.5, 1.0)]
    b = [{"f1": score} for score in (1.0, 0.5, 1.0, 1.0)]
    diff = task.compare(a, b, seed=1)
    assert list(diff) == ["f1"] and diff["f1"].delta == pytest.approx(0.375) and diff["f1"].n == 4
