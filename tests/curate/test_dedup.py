"""curate/dedup.py: near-duplicates (MinHash + LSH), semantic duplicates (embeddings) and train/eval
decontamination, on small inline data; the cluster sizes both dedup steps record."""

from __future__ import annotations

import pytest

from support.curate import ctx, dropped, rec
from tunewise.config.curate import DecontaminateStep, NearDedupStep, SemanticDedupStep
from tunewise.curate import dedup
from tunewise.curate.dedup import Decontaminate, NearDedup, SemanticDedup, minhashes, shingles


def test_shingles_by_word_and_by_character():
    assert shingles("a b c d", "word", 2) == {"a b", "b c", "c d"}
    assert shingles("a b", "word", 3) == {"a b"}  # shorter than one shingle: the whole key
    assert shingles("abcd", "char", 3) == {"abc", "bcd"}
    assert shingles("ab", "char", 5) == {"ab"}


def test_minhashes_in_batches_equal_one_pass(monkeypatch: pytest.MonkeyPatch):
    keys = ["the quick brown fox jumps over the lazy dog " * 3, "a completely different sentence here"]
    whole = minhashes(keys, "char", 3, 64)
    monkeypatch.setattr(dedup, "SHINGLE_BATCH", 5)
    batched = minhashes(keys, "char", 3, 64)
    assert [list(m.hashvalues) for m in whole] == [list(m.hashvalues) for m in batched]
    assert whole[0].jaccard(whole[0]) == 1.0 and whole[0].jaccard(whole[1]) < 0.3


def test_near_dedup_catches_small_edits_but_not_different_texts():
    base = "self driving cars will never be safe enough for my family to ride in"
    records = [
        rec(base, line=1),
        rec(base + "!!", line=2),
        rec(base.replace("never", "nevr"), line=3),
        rec("i love the new electric bus line downtown, it is quick and quiet", line=4),
    ]
    out = dropped(NearDedup(NearDedupStep(step="near_dedup", threshold=0.7)), records)
    assert out == {2: "dedup:near", 3: "dedup:near"}


def test_near_dedup_names_the_kept_record_and_records_cluster_sizes():
    base = "self driving cars will never be safe enough for my family to ride in"
    other = "i love the new electric bus line downtown, it is quick and quiet"
    records = [rec(base, line=1), rec(other, line=2), rec(base + "!", line=3), rec(base + "?", line=4)]
    records.append(rec(other + ".", line=5))
    context = ctx()
    out = list(NearDedup(NearDedupStep(step="near_dedup", threshold=0.7))(records, context))
    assert out[2].drop.startswith("near-duplicate of in.jsonl:1 (Jaccard ~")
    assert out[4].drop.startswith("near-duplicate of in.jsonl:2 ")
    assert context.cluster_sizes["near_dedup"] == [3, 2]


def test_semantic_dedup_uses_cosine_threshold():
    records = [
        rec("cars drive themselves now", line=1),
        rec("now cars drive themselves", line=2),
        rec("bananas are yellow fruit", line=3),
    ]
    assert dropped(SemanticDedup(SemanticDedupStep(step="semantic_dedup", threshold=0.99)), records) == {
        2: "dedup:semantic"
    }


@pytest.mark.parametrize("chunk", [1, 2, 2048])
def test_semantic_dedup_finds_copies_across_chunks_and_records_cluster_sizes(chunk: int):
    texts = ["cars drive themselves", "bananas are yellow", "themselves drive cars", "yellow are bananas"]
    texts += ["drive cars themselves", "a different thing entirely"]
    context = ctx()
    step = SemanticDedup(SemanticDedupStep(step="semantic_dedup", threshold=0.99), chunk=chunk)
    out = list(step([rec(t, line=i + 1) for i, t in enumerate(texts)], context))
    assert [v.record.line for v in out if v.drop] == [3, 4, 5]
    assert out[2].drop.startswith("semantic duplicate of in.jsonl:1 (cosine 1.000")
    assert context.cluster_sizes["semantic_dedup"] == [3, 2]


def test_decontamination_catches_a_test_item_changed_only_in_case_and_spacing():
    test_item = rec("Google's self-driving car hit a bus in Mountain View today, nobody hurt", split="test", line=1)
    copy = rec("GOOGLE'S  self-driving car   hit a bus in mountain view today,  nobody hurt", line=2)
    span = rec("breaking: self-driving car hit a bus in mountain view today, nobody hurt says the city", line=3)
    clean = rec("I would ride in an autonomous taxi if the price were right", line=4)
    step = Decontaminate(DecontaminateStep(step="decontaminate", ngram=8))
    assert dropped(step, [test_item, copy, span, clean]) == {2: "decontam:ngram", 3: "decontam:ngram"}
    short = Decontaminate(DecontaminateStep(step="decontaminate", ngram=8, near_threshold=0.7))
    near = dropped(short, [rec("cars are bad", split="test", line=1), rec("Cars are bad!", line=2)])
    assert near == {2: "decontam:near"}


def test_decontamination_checks_against_given_eval_files_and_else_validation():
    span = "the new electric bus line downtown is quick and quiet"
    step = Decontaminate(DecontaminateStep(step="decontaminate", ngram=5))
    given = ctx(reference=[rec(span, line=9, split="test")])
    out = list(step([rec(f"yes {span} indeed", line=1), rec("nothing alike at all here", line=2)], given))
    assert [v.category for v in out] == ["decontam:ngram", None]
    assert "eval record in.jsonl:9" in out[0].drop and f"'{' '.join(span.split()[:5])}'" in out[0].drop
    # no test split: the validation records are the eval set, and are themselves kept
    records = [rec(span, line=1, split="val"), rec(f"so {span}", line=2), rec("unrelated words only", line=3)]
    assert dropped(step, records) == {2: "decontam:ngram"}
