"""Curation's map stage on Ray Data, and LSH bucketing as a Ray Data groupby.

The training file is read by a Ray task in the chunks the local engine uses (so every chunk holds the same
rows, and embeddings are batched alike); actors run each chunk through the record steps and the set steps'
features, on every CPU of the cluster; the outputs come back in input order to the driver, which decides
over the keyed arrays as the local engine does. The decisions are therefore the same, record for record.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from tunewise import errors
from tunewise.config import DataConfig
from tunewise.curate.base import fixed_threads
from tunewise.curate.chain import Chain, ChunkOutput, chunked, read_spool_line, spool_line
from tunewise.curate.dedup import pairs_within, unique_pairs
from tunewise.curate.engine import MapStage
from tunewise.curate.table import Table
from tunewise.data.splits import iter_file
from tunewise.errors import TunewiseError

INSTALL = "pip install 'tunewise[ray]'"
NO_RAY = f"curate.engine ray needs Ray Data, which is not installed: {INSTALL} (or use --engine local)"


def require_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise TunewiseError(NO_RAY) from None
    return ray


def ray_map(data: DataConfig, address: str | None = None) -> MapStage:
    ray = require_ray()

    def run(chain: Chain, table: Table, progress: Any, slots: set[int], rows: np.ndarray | None) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        start_ray(ray, address)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # chunks come back in input order
        context.enable_progress_bars = False  # tunewise shows its own
        chain.ctx.bucket_pairs = ray_bucket_pairs
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        task = progress.add_task(f"pass {table.passes} (ray)", total=None if rows is None else len(rows))
        # Reading is one task, on this machine (where the input and the spools are), cutting the chunks the
        # local engine cuts; it is mostly I/O.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        source = read_input(data) if rows is None else read_spool(table, rows)
        chunks = ray.data.from_items([{"pass": table.passes}]).flat_map(
            source, num_cpus=0, ray_remote_args_fn=lambda: {"scheduling_strategy": here}
        )
        outputs = chunks.map_batches(
            chain_worker(chain, slots),
            batch_size=1,
            batch_format="numpy",
            num_cpus=1,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers),
        )
        with surfacing_errors():
            for row in outputs.iter_rows():
                out = decode_output(row["output"])
                table.add(out)
                progress.advance(task, len(out.rows))

    return run


def start_ray(ray: Any, address: str | None) -> None:
    """Join the cluster at `address`, or start a local Ray with this machine's CPUs (once per process)."""
    if ray.is_initialized():
        return
    logging.getLogger("ray").setLevel(logging.WARNING)  # Ray's INFO lines would bury tunewise's output
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise TunewiseError(f"cannot start {where}: {exc}; check curate.ray_address / --address") from None


def read_input(data: DataConfig) -> Any:
    """A Ray Data flat_map: the training file as rows of one serialized chunk each."""

    def read(_: dict[str, Any]) -> Iterator[dict[str, Any]]:
        start = 0
        for chunk in chunked(iter_file(data.train, data)):
            yield {"chunk": encode_chunk(np.arange(start, start + len(chunk)), chunk, {})}
            start += len(chunk)

    return read


def read_spool(table: Table, rows: np.ndarray) -> Any:
    """A Ray Data flat_map: the spooled `rows` of a later pass, as rows of one serialized chunk each."""

    def read(_: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for chunk_rows, records, embeddings in table.chunks(rows):
            yield {"chunk": encode_chunk(chunk_rows, records, embeddings)}

    return read


def encode_chunk(rows: np.ndarray, items: list[Any], embeddings: dict[str, np.ndarray]) -> bytes:
    texts = list(embeddings)
    arrays = {
        "rows": rows,
        "items": np.frombuffer(json.dumps([spool_line(item) for item in items]).encode(), dtype=np.uint8),
        "texts": np.frombuffer(json.dumps(texts).encode(), dtype=np.uint8),
        "vectors": np.stack([embeddings[t] for t in texts]) if texts else np.zeros((0, 1), dtype=np.float32),
    }
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def decode_chunk(blob: bytes) -> tuple[np.ndarray, list[Any], dict[str, np.ndarray]]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        rows, vectors = npz["rows"], npz["vectors"]
        items = [read_spool_line(line)[0] for line in json.loads(npz["items"].tobytes())]
        texts = json.loads(npz["texts"].tobytes())
    return rows, items, dict(zip(texts, vectors, strict=True))


def chain_worker(chain: Chain, slots: set[int]) -> type:
    """A Ray Data actor class: chunks through the chain's steps of `slots` (its embedding model and tokenizer
    load once per actor). The chain travels with the class, not as constructor arguments a restarted actor
    could lose."""

    class ChainWorker:
        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            outputs = []
            for blob in batch["chunk"]:
                rows, items, embeddings = decode_chunk(blob)
                try:
                    with fixed_threads():
                        outputs.append(encode_output(chain.run(items, rows, slots, embeddings)))
                except TunewiseError as exc:  # the user's to fix: sent back as data, raised again there
                    outputs.append(encode_error(exc))
            return {"output": np.array(outputs, dtype=object)}

    return ChainWorker


def encode_output(out: ChunkOutput) -> bytes:
    """A chunk's output as an .npz (no pickles): its arrays, and its lists as JSON."""
    arrays: dict[str, np.ndarray] = {
        name: getattr(out, name) for name in ("lines", "splits", "status", "categories", "length_in", "length_out")
    }
    for slot, mask in out.changes.items():
        arrays[f"changes/{slot}"] = mask
    for slot, fed in out.fed.items():
        arrays[f"fed/{slot}"] = fed  # a set step may have no features (split, balance)
        for name, values in out.features[slot].items():
            arrays[f"feature/{slot}/{name}"] = values
    arrays["rows"] = out.rows
    meta = {"spool": out.spool, "sources": out.sources, "labels": out.labels}
    meta["seconds"] = {str(k): v for k, v in out.seconds.items()}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def encode_error(exc: TunewiseError) -> bytes:
    error = {"error": type(exc).__name__, "message": str(exc)}
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, meta=np.frombuffer(json.dumps(error).encode(), dtype=np.uint8))
    return buffer.getvalue()


def decode_output(blob: bytes) -> ChunkOutput:
    """A chunk's output, or the TunewiseError its worker raised, raised here with the same class and message."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    if "error" in meta:
        kind = getattr(errors, meta["error"], TunewiseError)
        kind = kind if isinstance(kind, type) and issubclass(kind, TunewiseError) else TunewiseError
        exc = kind.__new__(kind)
        Exception.__init__(exc, meta["message"])
        raise exc
    out = ChunkOutput(
        rows=arrays.pop("rows"),
        spool=meta["spool"],
        sources=meta["sources"],
        labels=meta["labels"],
        **{name: arrays.pop(name) for name in ("lines", "splits", "status", "categories", "length_in", "length_out")},
    )
    out.seconds = {int(k): v for k, v in meta["seconds"].items()}
    for key, values in arrays.items():
        kind, slot, *name = key.split("/")
        if kind == "changes":
            out.changes[int(slot)] = values
        elif kind == "fed":
            out.fed[int(slot)] = values
            out.features.setdefault(int(slot), {})
        else:
            out.features.setdefault(int(slot), {})["/".join(name)] = values
    return out


def ray_bucket_pairs(bands: np.ndarray) -> np.ndarray:
    """dedup.bucket_pairs as a Ray Data groupby on (band, digest): the same pairs, found across the cluster."""
    import pyarrow as pa
    import ray

    n, count = bands.shape
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    table = pa.table(
        {
            "band": np.repeat(np.arange(count, dtype=np.int32), n),
            "digest": np.ascontiguousarray(bands.T).reshape(-1),
            "row": np.tile(np.arange(n, dtype=np.int64), count),
        }
    )
    grouped = ray.data.from_arrow(table).groupby(["band", "digest"]).map_groups(_group_pairs, batch_format="numpy")
    with surfacing_errors():
        found = [np.stack([b["a"], b["b"]], axis=1) for b in grouped.iter_batches(batch_format="numpy") if len(b["a"])]
    return unique_pairs(found)


def _group_pairs(group: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    pairs = pairs_within(group["row"]) if len(group["row"]) > 1 else np.zeros((0, 2), dtype=np.int64)
    return {"a": pairs[:, 0], "b": pairs[:, 1]}


@contextmanager
def surfacing_errors() -> Iterator[None]:
    """Our own errors raised in a Ray worker arrive wrapped (with Ray's traceback): unwrap them, so the user
    gets the one-line message, as from the local engine."""
    try:
        yield
    except Exception as exc:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, TunewiseError):
            cause = getattr(cause, "cause", None) or cause.__cause__
        if cause is None or cause is exc:
            raise
        raise cause.with_traceback(None) from None
