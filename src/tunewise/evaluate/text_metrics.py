"""Task metrics for generated text: ROUGE, SQuAD exact match / token F1, chrF and BLEU.

Each returns per-example scores (for paired bootstrap) and the corpus figure reported.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b")


class UnicodeTokenizer:
    """rouge-score's default tokenizer deletes non-ASCII letters (Russian text would score 0); this one
    keeps every script and Porter-stems ASCII words longer than 3 letters, as the default does."""

    def __init__(self) -> None:
        from nltk.stem import porter

        self.stemmer = porter.PorterStemmer()

    def tokenize(self, text: str) -> list[str]:
        tokens = re.findall(r"[^\W_]+", text.lower())
        return [self.stemmer.stem(t) if len(t) > 3 and t.isascii() else t for t in tokens]


def rouge(predictions: list[str], references: list[str]) -> dict[str, Any]:
    """ROUGE-1/2/L F-measure with Porter stemming (rouge-score), averaged over examples."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=UnicodeTokenizer())
    per_example = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    result: dict[str, Any] = {"n": len(per_example)}
    for key in ("rouge1", "rouge2", "rougeL"):
        scores = [s[key].fmeasure for s in per_example]
        result[key] = sum(scores) / max(len(scores), 1)
        result[f"per_example_{key}"] = scores
    lengths = [len(p.split()) for p in predictions]
    result["mean_words"] = sum(lengths) / max(len(lengths), 1)
    result["mean_reference_words"] = sum(len(r.split()) for r in references) / max(len(references), 1)
    return result


def normalize_answer(text: str) -> str:
    """SQuAD normalization: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answers: list[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(a) for a in answers))


def token_f1(prediction: str, answers: list[str]) -> float:
    def f1(gold: str) -> float:
        pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
        if not pred_tokens or not gold_tokens:
            return float(pred_tokens == gold_tokens)
        common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(pred_tokens), common / len(gold_tokens)
        return 2 * precision * recall / (precision + recall)

    return max(f1(a) for a in answers)


def qa_scores(predictions: list[str], answers: list[list[str]]) -> dict[str, Any]:
    em = [exact_match(p, a) for p, a in zip(predictions, answers, strict=True)]
    f1 = [token_f1(p, a) for p, a in zip(predictions, answers, strict=True)]
    n = max(len(em), 1)
    return {
        "n": len(em),
        "exact_match": sum(em) / n,
        "f1": sum(f1) / n,
        "per_example_exact_match": em,
        "per_example_f1": f1,
    }


def chrf_bleu(predictions: list[str], references: list[str]) -> dict[str, Any]:
    """Corpus chrF and BLEU (sacrebleu), and mean sentence chrF: the per-example figure compared with CIs."""
    import sacrebleu

    refs = [references]
    chrf = sacrebleu.corpus_chrf(predictions, refs).score
    bleu = sacrebleu.corpus_bleu(predictions, refs).score
    per_chrf = [sacrebleu.sentence_chrf(p, [r]).score for p, r in zip(predictions, references, strict=True)]
    mean = sum(per_chrf) / max(len(per_chrf), 1)
    return {
        "n": len(predictions),
        "sentence_chrf": mean,
        "chrf": chrf,
        "bleu": bleu,
        "per_example_sentence_chrf": per_chrf,
    }
