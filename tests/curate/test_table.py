"""curate/table.py: per-row arrays and features appended chunk by chunk to files, read back by row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from support.curate import ctx, rec
from tunewise.config.curate import CurateConfig
from tunewise.curate.engine import build_chain, plan_steps
from tunewise.curate.table import Column, Table


def test_a_column_skips_empty_chunks_and_keeps_the_trailing_shape(tmp_path: Path):
    column = Column(tmp_path / "c.bin")
    column.append(np.zeros((0, 1), dtype=np.float32))  # an empty chunk's placeholder shape must not stick
    column.append(np.ones((2, 3), dtype=np.float32))
    column.append(np.full((1, 3), 2, dtype=np.float32))
    values = column.read()
    assert values.shape == (3, 3) and values[2].tolist() == [2, 2, 2]
    assert Column(tmp_path / "none.bin").read().shape == (0,)


def _table(tmp_path: Path, chunks: list[list], steps: list[dict]) -> Table:
    chain = build_chain(plan_steps(CurateConfig(steps=steps).steps), ctx())
    table = Table(tmp_path / "table")
    table.start_pass()
    for chunk in chunks:
        table.add(chain.run(chunk, table.rows))
    return table


def test_features_of_chosen_rows_come_back_aligned_ragged_ones_too(tmp_path: Path):
    texts = ["a b c d e f g h", "one two three four five six seven", "x y z", "p q r s t u v w x y"]
    chunks = [[rec(t, line=i) for i, t in enumerate(texts[:2])], [rec(t, line=i + 2) for i, t in enumerate(texts[2:])]]
    table = _table(tmp_path, chunks, [{"step": "decontaminate", "ngram": 3}])
    chosen = np.array([1, 3])
    features = table.features(0, chosen)
    assert features["ngrams#count"].tolist() == [5, 8]
    whole = table.features(0, np.arange(4))
    assert features["ngrams"].tolist() == whole["ngrams"][6:11].tolist() + whole["ngrams"][12:].tolist()
    assert features["signature"].shape == (2, 128)


def test_chunks_must_come_in_order_and_change_masks_become_per_row_arrays(tmp_path: Path):
    chain = build_chain(plan_steps(CurateConfig(steps=[{"step": "normalize"}]).steps), ctx())
    table = Table(tmp_path / "t")
    table.start_pass()
    table.add(chain.run([rec("plain", line=1)], 0))
    table.add(chain.run([rec("two  spaces", line=2)], 1))
    with pytest.raises(AssertionError, match="out of order"):
        table.add(chain.run([rec("late", line=9)], 0))
    table.finish_first_pass()
    assert table.changes_of(0).tolist() == [0, 4]  # whitespace is bit 2; the first row changed nothing
    assert table.labels == ["a"] and table.sources == ["in.jsonl"]
    assert [line.count("plain") for line in table.spool(0).read_text().splitlines()] == [1, 0]


def test_a_later_pass_updates_its_rows_and_their_latest_line_comes_from_its_spool(tmp_path: Path):
    steps = [{"step": "exact_dedup"}, {"step": "normalize"}, {"step": "near_dedup"}, {"step": "quality"}]
    chain = build_chain(plan_steps(CurateConfig(steps=steps).steps), ctx())
    table = Table(tmp_path / "t")
    table.start_pass()
    records = [rec("one  two three four", line=1), rec("x", line=2), rec("five six seven eight", line=3)]
    table.add(chain.run(records, 0, {0, 1}))
    table.start_pass()
    for rows, chunk, _ in table.chunks(np.array([0, 1])):
        table.add(chain.run(chunk, rows, {2, 3}))
    table.finish_first_pass()
    assert table.read("status").tolist() == [-1, 3, -1]  # row 1 too short for quality (slot 3), in pass 2
    latest = dict(table.latest_rows(np.arange(3)))
    assert '"one two three four"' in latest[0] and '"five six seven eight"' in latest[2]
    assert table.read("fed-2").tolist() == [0, 1]
