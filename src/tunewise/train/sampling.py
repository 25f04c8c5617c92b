"""The order of training examples in an epoch (`train.sampler`), and a check that batches mix labels.

Every order is a function of (seed, epoch) only, drawn from its own generator: a resumed run replays the
uninterrupted run's order (see resumable.py), whatever the global RNG holds when an epoch's iterator starts.

- random: a seeded permutation.
- stratified: each batch holds the labels in about their training-set proportions (classification).
- length_grouped: transformers' length grouping (batches of similar length: less padding when packing is off).
  When length predicts the label, such batches hold one label, and stretches of the epoch see one class only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices

SAMPLERS = ("random", "stratified", "length_grouped")


def epoch_order(
    kind: str, n: int, batch_size: int, generator: torch.Generator, lengths: Sequence[int], labels: Sequence[str | None]
) -> list[int]:
    if kind == "length_grouped":
        return list(get_length_grouped_indices(list(lengths), batch_size, generator=generator))
    if kind == "stratified":
        return stratified_order(labels, generator)
    return torch.randperm(n, generator=generator).tolist()


def stratified_order(labels: Sequence[str | None], generator: torch.Generator) -> list[int]:
    """Each label's examples shuffled, then dealt out so that every prefix of the order holds each label in
    proportion to its share (the label furthest behind its share goes next): any run of consecutive
    examples, hence every batch, mixes the labels like the whole set does."""
    by_label: dict[str | None, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    groups = [by_label[label] for label in sorted(by_label, key=str)]
    queues = [[group[i] for i in torch.randperm(len(group), generator=generator).tolist()] for group in groups]
    shares = [len(group) / len(labels) for group in groups]
    # A random phase per label, so the labels do not always come in the same sequence within a batch.
    phases = [float(torch.rand(1, generator=generator)) for _ in groups]
    taken = [0] * len(groups)
    order: list[int] = []
    for position in range(1, len(labels) + 1):
        behind = [
            position * share + phase - count if count < len(queue) else -float("inf")
            for share, phase, count, queue in zip(shares, phases, taken, queues, strict=True)
        ]
        pick = max(range(len(groups)), key=behind.__getitem__)
        order.append(queues[pick][taken[pick]])
        taken[pick] += 1
    return order


class EpochSeededSampler(Sampler[int]):
    """`epoch_order` of one kind, reseeded with seed + epoch. `DataLoaderShard.set_epoch` reaches it, also
    through the `SkipBatchSampler` of a resumed epoch; under both that and a multi-process run's shard wrapper it
    does not, and `ResumableTrainer` sets the epoch itself. Every rank draws the same order; accelerate deals its
    batches out to the ranks in turn."""

    def __init__(
        self, kind: str, batch_size: int, lengths: Sequence[int], labels: Sequence[str | None], seed: int
    ) -> None:
        self.kind, self.batch_size, self.seed, self.epoch = kind, batch_size, seed, 0
        self.lengths, self.labels = list(lengths), list(labels)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return epoch_order(self.kind, len(self.lengths), self.batch_size, generator, self.lengths, self.labels)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(self.epoch))


@dataclass
class BatchMix:
    """How much the batches of one epoch's order mix the labels, against random batches of the same data."""

    batches: int
    one_label: float  # share of batches whose examples all have one label
    one_label_random: float  # the same share expected of random batches
    dispersion: float  # variance of the label counts between batches / the variance of random batches (~1)
    tail_label: str | None  # the label of the one-label stretch that ends the epoch
    tail_share: float  # that stretch as a share of the epoch's batches

    def warning(self, sampler: str) -> str | None:
        """A one-line warning when batches mix labels far less than random ones would."""
        tail = self.tail_share >= 0.1 and self.tail_share * self.batches >= 3
        if self.batches < 4 or not (self.dispersion >= SKEWED_DISPERSION or tail):
            return None
        text = (
            f"train.sampler {sampler}: {self.one_label:.0%} of this epoch's {self.batches} batches hold one label "
            f"(random batches: {self.one_label_random:.0%}); label counts vary {self.dispersion:.1f}x as much "
            "between batches as in random ones"
        )
        if tail:
            text += f", and the last {self.tail_share:.0%} of the epoch sees only {self.tail_label!r}"
        return text + (
            ". One-label batches pull the model toward each label in turn and can leave it biased toward the last "
            "one: use train.sampler: random or stratified"
        )


# Random batches give about 1 (at most 1.21 over 200 seeded epochs of a 1,000-example, 3-label set); batches
# sorted by label give about the batch size.
SKEWED_DISPERSION = 2.0


def batch_mix(order: Sequence[int], labels: Sequence[str | None], batch_size: int) -> BatchMix:
    """Label mix of the batches `order` makes. Dispersion is the index of dispersion of each label's count per
    full batch, pooled over labels: observed variance over the binomial variance random batches would have."""
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    counts, n = Counter(labels), len(labels)
    if not batches or not n:
        return BatchMix(0, 0.0, 0.0, 0.0, None, 0.0)
    pure = [len({labels[i] for i in batch}) == 1 for batch in batches]
    full = [Counter(labels[i] for i in batch) for batch in batches if len(batch) == batch_size]
    observed = expected = 0.0
    for label, count in counts.items():
        share = count / n
        observed += sum((c[label] - batch_size * share) ** 2 for c in full) / max(len(full), 1)
        expected += batch_size * share * (1 - share)
    tail, last = 0, labels[batches[-1][0]]
    for batch, is_pure in zip(reversed(batches), reversed(pure), strict=True):
        if not is_pure or labels[batch[0]] != last:
            break
        tail += 1
    return BatchMix(
        batches=len(batches),
        one_label=sum(pure) / len(batches),
        one_label_random=sum((c / n) ** batch_size for c in counts.values()),  # draws with replacement
        dispersion=observed / expected if expected else 0.0,
        tail_label=last,
        tail_share=tail / len(batches),
    )
