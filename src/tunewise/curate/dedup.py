"""Near-duplicates (MinHash + LSH), semantic duplicates (embeddings) and train/eval decontamination."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tunewise.config.curate import DecontaminateStep, NearDedupStep, SemanticDedupStep
from tunewise.curate.base import Context, Verdict, cluster_sizes, drop, keep
from tunewise.data.records import Record, RejectCategory

EVAL_SPLITS = ("val", "test")


def shingles(key: str, kind: str, size: int) -> set[str]:
    if kind == "word":
        words = key.split()
        return {" ".join(words[i : i + size]) for i in range(max(1, len(words) - size + 1))}
    return {key[i : i + size] for i in range(max(1, len(key) - size + 1))}


# datasketch hashes a batch as one [batch, num_perm] uint64 array: a 1 MB record in one batch took ~1.1 GB
# (5 MB: ~5.5 GB). Batches of this many shingles bound that to ~8 MB; the signature (a running minimum) is
# the same.
SHINGLE_BATCH = 8192


def minhashes(keys: list[str], kind: str, size: int, num_perm: int) -> list:
    from datasketch import MinHash

    base = MinHash(num_perm=num_perm)  # its permutations are drawn once and copied, as MinHash.bulk does
    signatures = []
    for key in keys:
        signature = base.copy()
        values = [s.encode() for s in shingles(key, kind, size)]
        for start in range(0, len(values), SHINGLE_BATCH):
            signature.update_batch(values[start : start + SHINGLE_BATCH])
        signatures.append(signature)
    return signatures


@dataclass
class NearDedup:
    """Keeps the first record of each near-duplicate cluster; LSH finds candidates, MinHash confirms."""

    settings: NearDedupStep
    name: str = "near_dedup"

    def __call__(self, records: list[Record], ctx: Context) -> Iterator[Verdict]:
        from datasketch import MinHashLSH

        s = self.settings
        hashes = minhashes([ctx.key(r) for r in records], s.shingle, s.shingle_size, s.num_perm)
        index = MinHashLSH(threshold=s.threshold, num_perm=s.num_perm)
        matches: list[int] = []  # the kept record each drop copies
        for i, (record, signature) in enumerate(zip(records, hashes, strict=True)):
            match = next((j for j in index.query(signature) if signature.jaccard(hashes[j]) >= s.threshold), None)
            if match is None:
                index.insert(i, signature)
                yield keep(record)
            else:
                matches.append(match)
                similarity = signature.jaccard(hashes[match])
                yield drop(
                    record,
                    RejectCategory.NEAR_DUPLICATE,
                    f"near-duplicate of {records[match].where} (Jaccard ~{similarity:.2f})",
                )
        ctx.cluster_sizes[self.name] = cluster_sizes(matches)


@dataclass
class SemanticDedup:
    """Drops records whose embedding is within `threshold` cosine of an earlier kept record."""

    settings: SemanticDedupStep
    chunk: int = 2048
    name: str = "semantic_dedup"

    def __call__(self, records: list[Record], ctx: Context) -> Iterator[Verdict]:
        vectors = ctx.embed(records)
        threshold = self.settings.threshold
        kept_index: list[int] = []
        kept_vectors = np.zeros((0, vectors.shape[1]), dtype=np.float32)
        matches: list[int] = []  # the kept record each drop copies
        for start in range(0, len(records), self.chunk):
            block = vectors[start : start + self.chunk]
            before = block @ kept_vectors.T if len(kept_index) else np.zeros((len(block), 0), dtype=np.float32)
            within = block @ block.T
            block_kept: list[int] = []
            for j in range(len(block)):
                best, best_index = -1.0, -1
                if before.shape[1]:
                    k = int(before[j].argmax())
                    best, best_index = float(before[j, k]), kept_index[k]
                for b in block_kept:
                    if within[j, b] > best:
                        best, best_index = float(within[j, b]), start + b
                record = records[start + j]
                if best >= threshold:
                    matches.append(best_index)
                    yield drop(
                        record,
                        RejectCategory.SEMANTIC_DUPLICATE,
                        f"semantic duplicate of {records[best_index].where} (cosine {best:.3f})",
                    )
                else:
                    block_kept.append(j)
                    yield keep(record)
            kept_index += [start + b for b in block_kept]
            kept_vectors = np.concatenate([kept_vectors, block[block_kept]])
        ctx.cluster_sizes[self.name] = cluster_sizes(matches)


@dataclass
class Decontaminate:
    """Drops training (and validation) records that share a long n-gram with, or nearly copy, an eval record."""

    settings: DecontaminateStep
    num_perm: int = 128
    name: str = "decontaminate"

    def __call__(self, records: list[Record], ctx: Context) -> Iterator[Verdict]:
        from datasketch import MinHashLSH

        s = self.settings
        references = ctx.reference + [r for r in records if r.split == "test"]
        if not any(r.split == "test" for r in records):  # no test split: validation is the eval set
            references += [r for r in records if r.split == "val"]
        ref_keys = [ctx.key(r) for r in references]
        ngrams: dict[tuple[str, ...], int] = {}
        for i, key in enumerate(ref_keys):
            for gram in _ngrams(key.split(), s.ngram):
                ngrams.setdefault(gram, i)
        ref_hashes = minhashes(ref_keys, "char", 5, self.num_perm)
        index = MinHashLSH(threshold=s.near_threshold, num_perm=self.num_perm)
        for i, signature in enumerate(ref_hashes):
            index.insert(i, signature)
        reference_ids = {id(r) for r in references}
        candidates = [r for r in records if id(r) not in reference_ids]
        signatures = iter(minhashes([ctx.key(r) for r in candidates], "char", 5, self.num_perm))
        for record in records:
            if id(record) in reference_ids:
                yield keep(record)
                continue
            words = ctx.key(record).split()
            signature = next(signatures)
            shared = next((g for g in _ngrams(words, s.ngram) if g in ngrams), None)
            if shared is not None:
                source = references[ngrams[shared]]
                yield drop(
                    record,
                    RejectCategory.DECONTAM_NGRAM,
                    f"shares a {s.ngram}-word span with eval record {source.where}: '{' '.join(shared)}'",
                )
                continue
            near = next(
                (j for j in index.query(signature) if signature.jaccard(ref_hashes[j]) >= s.near_threshold),
                None,
            )
            if near is not None:
                reason = f"near-duplicate of eval record {references[near].where}"
                yield drop(record, RejectCategory.DECONTAM_NEAR, reason)
            else:
                yield keep(record)


def _ngrams(words: list[str], n: int) -> Iterator[tuple[str, ...]]:
    for i in range(len(words) - n + 1):
        yield tuple(words[i : i + n])
