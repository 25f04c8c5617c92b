"""curate/chain.py: the map stage on one chunk: record steps' verdicts, set steps' features, the spool."""

from __future__ import annotations

import numpy as np
import pytest

from support.curate import ctx, rec
from tunewise.config.curate import CurateConfig
from tunewise.curate.chain import CATEGORIES, PASSED, READ_REJECT, chunked, read_spool_line, spool_line
from tunewise.curate.engine import build_chain, plan_steps
from tunewise.data.records import Reject, RejectCategory
from tunewise.errors import ConfigError


def _chain(*steps: dict):
    return build_chain(plan_steps(CurateConfig(steps=list(steps)).steps), ctx())


def test_record_steps_mark_the_slot_that_dropped_a_row_and_set_steps_get_the_survivors():
    chain = _chain({"step": "quality", "min_words": 2}, {"step": "exact_dedup"}, {"step": "confidence"})
    bad = Reject("in.jsonl", 4, None, "invalid JSON", category=RejectCategory.INVALID_JSON)
    items = [rec("one two three", line=1), rec("no", line=2), rec("four five six", line=3, confidence=0.1), bad]
    out = chain.run(items, 10)
    assert out.status.tolist() == [PASSED, 0, 2, READ_REJECT]
    assert [CATEGORIES[c] if c >= 0 else None for c in out.categories] == [
        None,
        RejectCategory.QUALITY_TOO_SHORT,
        RejectCategory.LOW_CONFIDENCE,
        RejectCategory.INVALID_JSON,
    ]
    assert out.fed[1].tolist() == [10, 12]  # global indices: the chunk starts at row 10; row 11 left at slot 0
    assert out.features[1]["key"].dtype == np.uint64 and len(out.features[1]["key"]) == 2
    assert out.length_in.tolist() == [3, 1, 3, -1]


def test_a_chunk_gives_the_same_bytes_whatever_ran_before_it():
    chain = _chain({"step": "normalize"}, {"step": "near_dedup"}, {"step": "quality"})
    first = [rec("Caf\u00c3\u00a9 is   open today", line=i) for i in range(3)]
    second = [rec("another text that is fine", line=9)]
    alone = chain.run(second, 3)
    chain.run(first, 0)
    again = chain.run(second, 3)
    assert alone.spool == again.spool
    np.testing.assert_array_equal(alone.features[1]["signature"], again.features[1]["signature"])


def test_normalize_changes_are_bits_per_row_and_the_spool_holds_the_repaired_record():
    chain = _chain({"step": "normalize"})
    out = chain.run([rec("Caf\u00c3\u00a9  bar", line=1), rec("plain", line=2)], 0)
    assert out.changes[0].tolist()[1] == 0 and out.changes[0].tolist()[0] != 0
    record, reason = read_spool_line(out.spool[0])
    assert record.text == "Café bar" and reason is None


def test_the_spool_round_trips_records_with_their_drop_reason_and_read_rejects():
    record = rec("some text", line=3, split="val", confidence=0.5, nested={"a": [1, 2]})
    assert read_spool_line(spool_line(record)) == (record, None)
    assert read_spool_line(spool_line(record, "too short")) == (record, "too short")
    reject = Reject("in.jsonl", 2, "text", "empty", raw={"text": ""}, category=RejectCategory.EMPTY_FIELD)
    assert read_spool_line(spool_line(reject)) == (reject, None)


def test_an_error_in_a_record_step_names_the_step_and_its_place():
    chain = _chain({"step": "quality", "languages": ["xx"]})
    with pytest.raises(ConfigError, match=r"^curate step 1 \(quality\): unknown ISO 639-1 language code"):
        chain.run([rec("one two three four", line=1)], 0)


def test_chunked_is_lazy():
    seen = []

    def rows():
        for i in range(10):
            seen.append(i)
            yield i

    chunks = chunked(rows(), 4)
    assert next(chunks) == [0, 1, 2, 3] and len(seen) == 4
