"""Near-duplicates (MinHash + LSH), semantic duplicates (embeddings) and train/eval decontamination."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunewise.config.curate import DecontaminateStep, NearDedupStep, SemanticDedupStep
from tunewise.curate.base import (
    SPLIT_CODES,
    Context,
    Decisions,
    Rows,
    Verdict,
    cluster_sizes,
    default_key,
    flatten_features,
    verdicts_of,
)
from tunewise.curate.text_steps import key_hashes
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


def signature_array(keys: list[str], kind: str, size: int, num_perm: int) -> np.ndarray:
    """MinHash signatures as a [len(keys), num_perm] uint32 array (datasketch's values are below 2**32)."""
    signatures = minhashes(keys, kind, size, num_perm)
    out = np.empty((len(keys), num_perm), dtype=np.uint32)
    for row, signature in zip(out, signatures, strict=True):
        row[:] = signature.hashvalues
    return out


def lsh_shape(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) that datasketch's MinHashLSH picks for this threshold: the same candidates."""
    from datasketch import MinHashLSH

    index = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return index.b, index.r


def band_hashes(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """[n, bands] uint64: one digest per LSH band; two records are candidates when any band's digest matches."""
    out = np.empty((len(signatures), bands), dtype=np.uint64)
    for k in range(bands):
        block = np.ascontiguousarray(signatures[:, k * rows : (k + 1) * rows])
        digests = [hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in block]
        out[:, k] = np.frombuffer(b"".join(digests), dtype=np.uint64) if digests else []
    return out


def bucket_pairs(bands: np.ndarray) -> np.ndarray:
    """[m, 2] int64, sorted and unique: every (a, b), a < b, of rows that share a band digest. Bucket by
    bucket, so its cost is the number of such pairs: a bucket of k rows gives k*(k-1)/2."""
    found = []
    for k in range(bands.shape[1]):
        order = np.argsort(bands[:, k], kind="stable")
        values = bands[order, k]
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        sizes = np.diff(np.r_[starts, len(values)])
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1], strict=True):
            found.append(pairs_within(order[start : start + size]))
    return unique_pairs(found)


def pairs_within(members: np.ndarray) -> np.ndarray:
    members = np.sort(members)
    a, b = np.triu_indices(len(members), k=1)
    return np.stack([members[a], members[b]], axis=1).astype(np.int64)


def unique_pairs(found: list[np.ndarray]) -> np.ndarray:
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found), axis=0)


def jaccards(signatures: np.ndarray, pairs: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Estimated Jaccard similarity of each pair: the share of equal MinHash values (as datasketch's)."""
    out = np.empty(len(pairs), dtype=np.float64)
    for start in range(0, len(pairs), chunk):
        a, b = pairs[start : start + chunk, 0], pairs[start : start + chunk, 1]
        out[start : start + chunk] = (signatures[a] == signatures[b]).mean(axis=1)
    return out


@dataclass
class NearDedup:
    """Keeps the first record of each near-duplicate cluster: LSH buckets give candidate pairs, MinHash
    confirms them, and each record is dropped when it is similar to an earlier record that was kept."""

    settings: NearDedupStep
    name: str = "near_dedup"

    def features(self, records: list[Record], ctx: Context) -> dict[str, np.ndarray]:
        s = self.settings
        keys = [ctx.key(r) for r in records]
        signatures = signature_array(keys, s.shingle, s.shingle_size, s.num_perm)
        return {
            "key": key_hashes(records, ctx),
            "signature": signatures,
            "bands": band_hashes(signatures, *lsh_shape(s.threshold, s.num_perm)),
        }

    def decide(self, rows: Rows, ctx: Context) -> Decisions:
        keys, bands = rows.features["key"], rows.features["bands"]
        # Copies of one key have one signature: only the first of each takes part in LSH, and the copies
        # follow it (bounding the pairs a bucket of exact copies would give).
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        representative = first[inverse.reshape(-1)]
        firsts = np.sort(first)
        pairs = firsts[(ctx.bucket_pairs or bucket_pairs)(bands[firsts])]
        similar = jaccards(rows.features["signature"], pairs) if len(pairs) else np.zeros(0)
        confirmed = similar >= self.settings.threshold
        match = greedy_matches(pairs[confirmed], similar[confirmed])
        decided, targets = Decisions(), []
        for i in range(len(rows)):
            original = int(representative[i])
            if original != i:  # a copy of an earlier record's key: dropped with what that record matched
                target, similarity = match.get(original, (original, 1.0))
            elif i in match:
                target, similarity = match[i]
            else:
                continue
            targets.append(target)
            reason = f"near-duplicate of {rows.where(target)} (Jaccard ~{similarity:.2f})"
            decided.drops[i] = (RejectCategory.NEAR_DUPLICATE, reason)
        ctx.cluster_sizes[self.name] = cluster_sizes(targets)
        return decided

    def __call__(self, records: list[Record], ctx: Context) -> Iterator[Verdict]:
        return verdicts_of(self, records, ctx)


def greedy_matches(edges: np.ndarray, similarity: np.ndarray) -> dict[int, tuple[int, float]]:
    """For each row dropped, (the kept row it copies, their similarity): rows in order, each dropped when an
    edge joins it to an earlier row that was kept (the most similar such row; the earliest on a tie)."""
    by_later: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for (a, b), sim in zip(edges.tolist(), similarity.tolist(), strict=True):
        by_later[b].append((a, sim))
    match: dict[int, tuple[int, float]] = {}
    for row in sorted(by_later):
        kept = [(a, sim) for a, sim in by_later[row] if a not in match]
        if kept:
            match[row] = min(kept, key=lambda pair: (-pair[1], pair[0]))
    return match


@dataclass
class SemanticDedup:
    """Drops records whose embedding is within `threshold` cosine of an earlier kept record."""

    settings: SemanticDedupStep
    chunk: int = 2048
    name: str = "semantic_dedup"

    def features(self, records: list[Record], ctx: Context) -> dict[str, np.ndarray]:
        return {"embedding": ctx.embed(records)}

    def decide(self, rows: Rows, ctx: Context) -> Decisions:
        vectors = rows.features["embedding"]
        threshold = self.settings.threshold
        decided = Decisions()
        kept_index: list[int] = []
        kept_vectors = np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else 1), dtype=np.float32)
        matches: list[int] = []  # the kept record each drop copies
        for start in range(0, len(rows), self.chunk):
            block = np.asarray(vectors[start : start + self.chunk], dtype=np.float32)
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
                if best >= threshold:
                    matches.append(best_index)
                    reason = f"semantic duplicate of {rows.where(best_index)} (cosine {best:.3f})"
                    decided.drops[start + j] = (RejectCategory.SEMANTIC_DUPLICATE, reason)
                else:
                    block_kept.append(j)
            kept_index += [start + b for b in block_kept]
            kept_vectors = np.concatenate([kept_vectors, block[block_kept]])
        ctx.cluster_sizes[self.name] = cluster_sizes(matches)
        return decided

    def __call__(self, records: list[Record], ctx: Context) -> Iterator[Verdict]:
        return verdicts_of(self, records, ctx)


@dataclass
class Decontaminate:
    """Drops records that share a long word n-gram with, or nearly copy, an evaluation record (test, else
    validation); the evaluation records themselves stay."""

    settings: DecontaminateStep
    num_perm: int = 128
    name: str = "decontaminate"

    def features(self, records: list[Record], ctx: Context) -> dict[str, Any]:
        keys = [ctx.key(r) for r in records]
        signatures = signature_array(keys, "char", 5, self.num_perm)
        return {
            "ngrams": [ngram_hashes(key.split(), self.settings.ngram) for key in keys],
            "signature": signatures,
            "bands": band_hashes(signatures, *lsh_shape(self.settings.near_threshold, self.num_perm)),
        }

    def decide(self, rows: Rows, ctx: Context) -> Decisions:
        s = self.settings
        pool = rows.splits == SPLIT_CODES.index("test")
        if not pool.any():  # no test split: validation is the eval set
            pool = rows.splits == SPLIT_CODES.index("val")
        pool_rows = np.flatnonzero(pool)
        given = flatten_features(self.features(ctx.reference, ctx)) if ctx.reference else None
        where = [r.where for r in ctx.reference] + [rows.where(int(i)) for i in pool_rows]
        ref_ngrams, ref_of_ngram = _reference_ngrams(rows, pool_rows, given)
        ref_signatures = _stack(given, rows, pool_rows, "signature")
        ref_bands = _stack(given, rows, pool_rows, "bands")
        candidates = np.flatnonzero(~pool)
        decided = Decisions()
        shared = _first_shared(rows, candidates, ref_ngrams)
        counts = rows.features["ngrams#count"]
        starts = np.cumsum(counts) - counts
        for i, position in shared.items():
            ref = where[ref_of_ngram[np.searchsorted(ref_ngrams, rows.features["ngrams"][position])]]
            reason = _span_reason(s.ngram, position - int(starts[i]), ref, ctx)
            decided.drops[i] = (RejectCategory.DECONTAM_NGRAM, reason)
        rest = np.setdiff1d(candidates, np.fromiter(shared, dtype=np.int64, count=len(shared)))
        near = _near_references(rows, rest, ref_signatures, ref_bands, s.near_threshold)
        for i, ref in near.items():
            decided.drops[i] = (RejectCategory.DECONTAM_NEAR, f"near-duplicate of eval record {where[ref]}")
        return decided

    def __call__(self, records: list[Record], ctx: Context) -> Iterator[Verdict]:
        return verdicts_of(self, records, ctx)


def ngram_hashes(words: list[str], n: int) -> np.ndarray:
    grams = [" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)]
    return np.frombuffer(b"".join(hashlib.blake2b(g, digest_size=8).digest() for g in grams), dtype=np.uint64).copy()


def _reference_ngrams(
    rows: Rows, pool_rows: np.ndarray, given: dict[str, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray]:
    """The eval records' n-gram digests, sorted and unique, and for each the first eval record that has it."""
    flat, counts = rows.features["ngrams"], rows.features["ngrams#count"]
    ends = np.cumsum(counts)
    parts = [given["ngrams"]] if given else []
    owners = [np.repeat(np.arange(len(given["ngrams#count"])), given["ngrams#count"])] if given else []
    offset = len(given["ngrams#count"]) if given else 0
    for k, i in enumerate(pool_rows):
        parts.append(flat[ends[i] - counts[i] : ends[i]])
        owners.append(np.full(counts[i], offset + k))
    if not parts:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    digests, owner = np.concatenate(parts), np.concatenate(owners)
    unique, first = np.unique(digests, return_index=True)
    return unique, owner[first]


def _first_shared(rows: Rows, candidates: np.ndarray, ref_ngrams: np.ndarray) -> dict[int, int]:
    """For each candidate row sharing an n-gram with an eval record, the flat position of its first such n-gram."""
    flat, counts = rows.features["ngrams"], rows.features["ngrams#count"]
    if not len(ref_ngrams) or not len(flat):
        return {}
    ends = np.cumsum(counts)
    hit = np.isin(flat, ref_ngrams)
    is_candidate = np.zeros(len(counts), dtype=bool)
    is_candidate[candidates] = True
    positions = np.flatnonzero(hit)
    owner = np.searchsorted(ends, positions, side="right")
    keep = is_candidate[owner]
    owner, positions = owner[keep], positions[keep]
    found, first = np.unique(owner, return_index=True)
    return dict(zip(found.tolist(), positions[first].tolist(), strict=True))


def _span_reason(n: int, offset: int, ref: str, ctx: Context) -> Callable[[Record], str]:
    strip = ctx.key_strip  # as it is now: the reason is written later, when it may have changed

    def reason(record: Record) -> str:
        words = default_key(record.text, strip).split()[offset : offset + n]
        return f"shares a {n}-word span with eval record {ref}: '{' '.join(words)}'"

    return reason


def _stack(given: dict[str, np.ndarray] | None, rows: Rows, pool_rows: np.ndarray, name: str) -> np.ndarray:
    parts = ([given[name]] if given else []) + [np.asarray(rows.features[name][pool_rows])]
    return np.concatenate(parts)


def _near_references(
    rows: Rows, candidates: np.ndarray, ref_signatures: np.ndarray, ref_bands: np.ndarray, threshold: float
) -> dict[int, int]:
    """For each candidate row nearly copying an eval record (MinHash over LSH candidates), the first such record."""
    if not len(candidates) or not len(ref_bands):
        return {}
    bands = np.asarray(rows.features["bands"][candidates])
    found = []
    for k in range(bands.shape[1]):
        order = np.argsort(ref_bands[:, k], kind="stable")
        values = ref_bands[order, k]
        lo = np.searchsorted(values, bands[:, k], side="left")
        hi = np.searchsorted(values, bands[:, k], side="right")
        for c in np.flatnonzero(hi > lo):
            refs = order[lo[c] : hi[c]]
            found.append(np.stack([np.full(len(refs), c), refs], axis=1))
    pairs = unique_pairs(found)
    if not len(pairs):
        return {}
    signatures = rows.features["signature"]
    similar = np.array(
        [(signatures[candidates[c]] == ref_signatures[r]).mean() for c, r in pairs.tolist()], dtype=np.float64
    )
    near: dict[int, int] = {}
    for (c, r), sim in zip(pairs.tolist(), similar.tolist(), strict=True):
        if sim >= threshold and int(candidates[c]) not in near:  # pairs are sorted: the first eval record
            near[int(candidates[c])] = r
    return near
