"""train.distributed: ranks from the launcher's environment, what rank 0 shares (a no-op alone), the configs that
cannot train in several processes, and a lost rank told in one line. Real processes: tests/system/test_ddp.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import tunewise.train.distributed as distributed
from tunewise.config import Config
from tunewise.errors import ConfigError
from tunewise.train.distributed import (
    Ranks,
    check_parallel,
    gather,
    launched_ranks,
    lost_process,
    scored_on_rank_zero,
    share,
    start,
    together,
    world_size,
)


def _config(tmp_path: Path, **sections: dict) -> Config:
    return Config(data={"train": str(tmp_path / "train.jsonl")}, **sections)


def test_the_launchers_environment_names_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert launched_ranks() is None and start(60, torch.device("cpu")) is None
    monkeypatch.setenv("WORLD_SIZE", "1")  # `torchrun --nproc-per-node 1`: one process, no group
    assert launched_ranks() is None
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launched_ranks() == Ranks(3, 4, 1) and not Ranks(3, 4, 1).leader and Ranks(0, 4, 0).leader
    with pytest.raises(ConfigError, match="model.device: mps cannot train in several processes"):
        start(60, torch.device("mps"))


def test_alone_a_process_shares_with_itself() -> None:
    assert world_size() == 1 and distributed.is_main_process()
    assert share({"a": 1}) == {"a": 1} and gather(2.5) == [2.5]
    together()
    assert scored_on_rank_zero(lambda model: {"macro_f1": model})(0.5) == {"macro_f1": 0.5}


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"train": {"fsdp": True, "deepspeed": "ds.json"}}, "train.fsdp and train.deepspeed both shard"),
        ({"train": {"deepspeed": "missing.json"}}, r"train.deepspeed: .*missing.json is not a file"),
        ({"train": {"deepspeed": "broken.json"}}, r"broken.json is not readable JSON"),
        ({"train": {"fsdp": True}, "model": {"quantize": "4bit"}}, "train.fsdp with model.quantize: 4bit is not"),
        ({"train": {"fsdp": True}, "model": {"device": "cpu"}}, "train.fsdp shards the model over CUDA GPUs"),
    ],
)
def test_what_sharded_training_cannot_be_combined_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sections: dict, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.json").write_text("{zero: 2")
    (tmp_path / "ds.json").write_text("{}")
    with pytest.raises(ConfigError, match=message):
        check_parallel(_config(tmp_path, **sections), 2)


def test_deepspeed_needs_its_package_and_a_task_metric_needs_unsharded_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    cfg = _config(tmp_path, train={"deepspeed": str(config)})
    if distributed.importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(ConfigError, match="pip install deepspeed"):
            check_parallel(cfg, 2)
    monkeypatch.setattr(distributed, "resolve_device", lambda setting: torch.device("cuda"))  # as on a GPU host
    sharded = _config(tmp_path, train={"fsdp": True, "metric": "macro_f1"})
    with pytest.raises(ConfigError, match="train.metric: macro_f1 is scored by rank 0 alone"):
        check_parallel(sharded, 2)
    check_parallel(sharded, 1)  # one process scores its own full weights
    check_parallel(_config(tmp_path, train={"metric": "macro_f1"}), 2)  # plain DDP: rank 0 holds all weights


def test_a_failed_collective_call_is_one_line_naming_the_lost_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    def collective_failure() -> RuntimeError:
        try:  # raised from torch.distributed's module, as gloo's "Connection reset by peer" is
            exec(
                compile(
                    "raise RuntimeError('[gloo] Read error: Connection reset by peer')", "distributed_c10d.py", "exec"
                )
            )
        except RuntimeError as exc:
            return exc
        raise AssertionError("not raised")

    assert lost_process(collective_failure()) is None  # alone, there is nobody to lose
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    lost = lost_process(collective_failure())
    assert lost is not None
    assert str(lost).startswith("lost the other training processes ([gloo] Read error: Connection reset by peer)")
    assert "--resume" in str(lost)
    assert lost_process(RuntimeError("CUDA out of memory")) is None  # not from a collective call: left as it is
    assert lost_process(ValueError("x")) is None
