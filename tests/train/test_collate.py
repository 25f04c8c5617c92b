"""train.collate: the padding collator right-pads every example to the longest, with ignored labels and no
attention on the padding, and keeps each example's tokens and labels as they were."""

from __future__ import annotations

import torch

from support.features import make_features
from tunewise.data.encode import IGNORE_INDEX
from tunewise.train.collate import PaddingCollator

PAD = 0


def test_examples_are_right_padded_to_the_longest() -> None:
    features = make_features(5, vocab=300, seed=4)
    batch = PaddingCollator(PAD)(features)
    width = max(len(f["input_ids"]) for f in features)
    assert set(batch) == {"input_ids", "labels", "attention_mask"}
    for name in batch:
        assert batch[name].shape == (5, width) and batch[name].dtype == torch.long
    for row, feature in enumerate(features):
        n = len(feature["input_ids"])
        assert batch["input_ids"][row, :n].tolist() == feature["input_ids"]
        assert batch["labels"][row, :n].tolist() == feature["labels"]
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert batch["input_ids"][row, n:].eq(PAD).all()
        assert batch["labels"][row, n:].eq(IGNORE_INDEX).all()  # padding is never trained


def test_the_trained_tokens_are_exactly_the_examples_own() -> None:
    features = make_features(7, vocab=300, seed=5)
    batch = PaddingCollator(PAD)(features)
    trained = sum(sum(label != IGNORE_INDEX for label in f["labels"]) for f in features)
    assert batch["labels"].ne(IGNORE_INDEX).sum().item() == trained


def test_a_batch_of_equal_lengths_has_no_padding() -> None:
    features = [
        {"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 6, 7]},
        {"input_ids": [8, 9, 10], "labels": [8, 9, 10]},
    ]
    batch = PaddingCollator(pad_token_id=99)(features)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 10]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, 9, 10]]
    assert batch["attention_mask"].eq(1).all()


def test_the_pad_token_is_the_one_given() -> None:
    features = [{"input_ids": [5], "labels": [5]}, {"input_ids": [6, 7], "labels": [6, 7]}]
    batch = PaddingCollator(pad_token_id=42)(features)
    assert batch["input_ids"].tolist() == [[5, 42], [6, 7]]
