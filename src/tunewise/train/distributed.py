"""Several training processes (torch.distributed): which one this is, the process group, what rank 0 shares.

A multi-process run is started by a launcher (`tunewise run|train --nproc N`, `torchrun`, `accelerate launch`), which
sets RANK, WORLD_SIZE and LOCAL_RANK in each process. Rank 0 curates, evaluates and writes the run directory; every
rank trains its shard of each global batch through the Trainer (DDP over gloo on CPUs, NCCL on CUDA GPUs).

The process group is started here, before the Trainer's accelerate state would start it, so its timeout is
`train.ddp_timeout` from the first moment: ranks > 0 wait in it while rank 0 curates and scores the base model.
Objects rank 0 hands to the others travel over a gloo group (the default group on CPU, a second one beside NCCL), so
a long wait and a large pickle cost no GPU memory and never meet NCCL's watchdog.
"""

from __future__ import annotations

import importlib.util
import json
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from tunewise.config import Config
from tunewise.errors import ConfigError, TunewiseError
from tunewise.models.device import resolve_device

_control: Any = None  # the gloo group objects travel over; None: the default group (already gloo)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""

    rank: int
    world: int
    local_rank: int

    @property
    def leader(self) -> bool:
        """Rank 0: the process that curates, evaluates and writes the run."""
        return self.rank == 0


def launched_ranks() -> Ranks | None:
    """This process's ranks as the launcher set them; None outside a launch, or in a launch of one process."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    return Ranks(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def start(timeout_s: int, device: torch.device) -> Ranks | None:
    """Join the launch's process group (gloo on CPU, NCCL on CUDA) with `timeout_s` for every wait; None when this
    process trains alone."""
    global _control
    ranks = launched_ranks()
    if ranks is None:
        return None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(
            f"model.device: {device.type} cannot train in several processes; use CUDA GPUs or model.device: cpu"
        )
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(ranks.local_rank)  # "cuda" then means this rank's GPU, for every later .to()
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s))
    if dist.get_backend() != "gloo":
        _control = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
    return ranks


def stop() -> None:
    """Leave the process group (after this rank's last collective call)."""
    global _control
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _control = None


def world_size() -> int:
    """How many processes train together: 1 without a process group."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    """True in rank 0, and in a process that trains alone: the one that writes files and prints."""
    return rank() == 0


def share(value: Any) -> Any:
    """Rank 0's `value`, on every rank (each rank calls this at the same point; the others pass anything)."""
    if world_size() == 1:
        return value
    box = [value if is_main_process() else None]
    dist.broadcast_object_list(box, src=0, group=_control)
    return box[0]


def gather(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if world_size() == 1:
        return [value]
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value, group=_control)
    return values


def together() -> None:
    """Wait until every rank reaches this point."""
    if world_size() > 1:
        dist.barrier(group=_control)


def lost_process(exc: BaseException) -> TunewiseError | None:
    """The one-line error for a failure of a call the ranks make together (another rank died or stopped: gloo's
    "Connection reset by peer", NCCL's errors), else None."""
    if world_size() == 1 or not isinstance(exc, RuntimeError | dist.DistError):
        return None
    frames = traceback.extract_tb(exc.__traceback__)
    if not any(Path(frame.filename).name == "distributed_c10d.py" for frame in frames):
        return None
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return TunewiseError(
        f"lost the other training processes ({detail[:200]}): one of them stopped or was killed; the run keeps its "
        "checkpoints: run the same command with --resume to continue it"
    )


def scored_on_rank_zero(score: Callable[[Any], dict[str, float]] | None) -> Callable[[Any], dict[str, float]]:
    """A task metric computed by rank 0 alone and handed to every rank, so early stopping and the best checkpoint
    decide the same everywhere (ranks > 0 pass None: they only receive)."""

    def shared(model: Any) -> dict[str, float]:
        if is_main_process():
            if score is None:
                raise ValueError("rank 0 needs the task metric's scorer")
            return share(score(model))
        return share(None)

    return shared


def check_parallel(cfg: Config, world: int) -> None:
    """What train.fsdp and train.deepspeed cannot be combined with, as one-line errors before any work starts."""
    t = cfg.train
    if t.fsdp and t.deepspeed is not None:
        raise ConfigError("train.fsdp and train.deepspeed both shard the model over the processes; set one of them")
    if t.deepspeed is not None:
        _check_deepspeed_config(t.deepspeed)
    sharding = "train.fsdp" if t.fsdp else "train.deepspeed" if t.deepspeed is not None else None
    if sharding is None:
        return
    if cfg.model.quantize != "none":
        raise ConfigError(
            f"{sharding} with model.quantize: {cfg.model.quantize} is not supported: a quantized base trains in plain "
            "data parallel (--nproc N without train.fsdp or train.deepspeed)"
        )
    if resolve_device(cfg.model.device).type != "cuda":
        raise ConfigError(
            f"{sharding} shards the model over CUDA GPUs; on {cfg.model.device} devices train in plain data parallel "
            f"(drop {sharding})"
        )
    if world > 1 and t.metric != "eval_loss":
        raise ConfigError(
            f"train.metric: {t.metric.removeprefix('eval_')} is scored by rank 0 alone, which {sharding}'s sharded "
            "weights do not allow; use train.metric: loss"
        )


def _check_deepspeed_config(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"train.deepspeed: {path} is not a file; point it at a DeepSpeed JSON config")
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"train.deepspeed: {path} is not readable JSON ({exc})") from None
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("train.deepspeed needs the deepspeed package: pip install deepspeed")
