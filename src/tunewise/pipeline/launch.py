"""`--nproc N`: the same command in N training processes on this machine, started by torch.distributed's elastic
agent as `torchrun --standalone --nproc-per-node N -m tunewise.cli ...` starts them; a failed process told in one line.

Each process runs the command; rank 0 runs the run and the others join its training stage (pipeline/handoff.py).
When one process dies the agent stops the others (SIGTERM, then SIGKILL), and the launch reports the first failure.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import uuid
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

from tunewise.config import Config
from tunewise.errors import ConfigError, TunewiseError
from tunewise.models.device import resolve_device
from tunewise.train.distributed import check_parallel, launched_ranks

# What the agent installs its own handlers for; they are put back after the launch.
AGENT_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
USER_ERROR, INTERRUPTED = 2, 130  # the exit codes of a process that said why it stopped (cli.py)
RESUME_HINT = "the run keeps its checkpoints: run the same command with --resume to continue it"


def check_launch(config: Config, nproc: int) -> None:
    """What makes a launch of `nproc` processes on this machine impossible, before any process starts."""
    ranks = launched_ranks()
    if ranks is not None:
        raise ConfigError(
            f"--nproc {nproc} inside a launch of {ranks.world} processes (torchrun or accelerate launch): leave "
            "--nproc out when a launcher starts the processes"
        )
    check_parallel(config, nproc)
    device = resolve_device(config.model.device)
    if device.type == "mps":
        raise ConfigError("--nproc: several training processes need CUDA GPUs or model.device: cpu, not MPS")
    if device.type == "cuda":
        import torch

        gpus = torch.cuda.device_count()
        if nproc > gpus:
            raise ConfigError(
                f"--nproc {nproc}: this machine has {gpus} CUDA device{'s' if gpus != 1 else ''}, and each process "
                f"trains on its own; use --nproc {gpus} or fewer (or model.device: cpu)"
            )


def launch(command: Sequence[str], nproc: int, config: Config) -> int:
    """Run `tunewise COMMAND` in `nproc` processes; 0 when all succeed. A process that stopped with a user error or
    an interruption has said so itself: its exit code comes back. A process that died otherwise is a TunewiseError
    naming it."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    check_launch(config, nproc)
    settings = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",  # `torchrun --standalone`: a local store on a free port
        rdzv_endpoint="localhost:0",
        max_restarts=0,  # a failed run is resumed by the user (--resume), never restarted from scratch
    )
    try:
        with _launching(nproc):
            elastic_launch(settings, sys.executable)("-m", "tunewise.cli", *command)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        return failure_code(rank, failure.exitcode, failure.signal_name(), nproc)
    except SignalException:  # this process was interrupted; the agent has stopped the others
        raise KeyboardInterrupt from None
    return 0


def failure_code(rank: int, exitcode: int, signal_name: str, nproc: int) -> int:
    """The launch's exit code for its first failed process, or the one-line error when that process could not say
    why it stopped."""
    if exitcode in (USER_ERROR, INTERRUPTED):
        return exitcode
    where = f"training process {rank} of {nproc}"
    if exitcode < 0:
        cause = " (out of memory?)" if signal_name == "SIGKILL" else ""
        raise TunewiseError(f"{where} was killed by {signal_name}{cause}; the others were stopped; {RESUME_HINT}")
    raise TunewiseError(
        f"{where} failed (exit code {exitcode}, its error is above); the others were stopped; {RESUME_HINT}"
    )


@contextmanager
def _launching(nproc: int) -> Any:
    """The processes' threads (OMP_NUM_THREADS: this machine's cores shared out, where torchrun would give each 1,
    unless it is set), the agent's log lines (rendezvous, stopping workers) off, and the signal handlers it installs
    put back afterwards."""
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads is None:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    handlers = {name: signal.getsignal(getattr(signal, name)) for name in AGENT_SIGNALS if hasattr(signal, name)}
    # Each of the agent's modules sets its own logger's level (LOGLEVEL or WARNING), so each is quieted.
    loggers = [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name.startswith(("torch.distributed.elastic", "torch.distributed.launcher"))
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        if threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        for name, handler in handlers.items():
            if handler is not None:
                signal.signal(getattr(signal, name), handler)
