"""pipeline.handoff: rank 0 hands the training stage to the other ranks once, or tells them to stop when it fails
before training; they wait for it. The protocol is checked here with `share` recorded; with real processes in
tests/system/test_ddp.py (and a failure before training there too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tunewise.pipeline.handoff as handoff_module
from tunewise.config import Config
from tunewise.data.encode import Encoded
from tunewise.errors import ConfigError, DataError, TunewiseError
from tunewise.pipeline.handoff import LeaderStopped, Stop, Training, leading, receive, training_processes
from tunewise.train.distributed import Ranks

LEADER = Ranks(0, 2, 0)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    messages: list[Any] = []
    monkeypatch.setattr(handoff_module, "share", lambda value: messages.append(value) or value)
    return messages


def _config(tmp_path: Path, **train: Any) -> Config:
    return Config(data={"train": str(tmp_path / "train.jsonl")}, train=train)


def _training(tmp_path: Path) -> Training:
    item = Encoded([1, 2, 3], [-100, 2, 3], False)
    return Training(tmp_path, [item], [item], False, "classification", "macro_f1")


def test_the_training_stage_is_handed_over_once(tmp_path: Path, sent: list[Any]) -> None:
    with leading(_config(tmp_path), LEADER) as handoff:
        handoff.send(_training(tmp_path))
        handoff.send(_training(tmp_path))
    assert sent == [_training(tmp_path)]


def test_a_failure_before_training_tells_the_others_to_stop(tmp_path: Path, sent: list[Any]) -> None:
    with pytest.raises(DataError), leading(_config(tmp_path), LEADER):
        raise DataError("train.jsonl", 3, "label", "empty")
    assert sent == [Stop("DataError: train.jsonl:3: field 'label': empty")]
    sent.clear()
    with leading(_config(tmp_path), LEADER):
        pass  # ended without a training stage: the others must not wait for one
    assert sent == [Stop("rank 0 ended without training")]


def test_a_config_several_processes_cannot_train_stops_them_before_anything_runs(
    tmp_path: Path, sent: list[Any]
) -> None:
    ran = []
    with (
        pytest.raises(ConfigError, match="train.fsdp and train.deepspeed"),
        leading(_config(tmp_path, fsdp=True, deepspeed=str(tmp_path / "ds.json")), LEADER),
    ):
        ran.append(True)
    assert not ran and isinstance(sent[0], Stop)


def test_alone_nothing_is_sent(tmp_path: Path, sent: list[Any]) -> None:
    with pytest.raises(KeyError), leading(_config(tmp_path), None) as handoff:
        handoff.send(_training(tmp_path))
        raise KeyError("x")
    assert sent == []
    with training_processes(_config(tmp_path)) as ranks:
        assert ranks is None


def test_the_other_ranks_train_on_what_rank_0_sent_or_stop_without_a_word(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, ddp_timeout=60)
    monkeypatch.setattr(handoff_module, "share", lambda value: _training(tmp_path))
    assert receive(config) == _training(tmp_path)
    monkeypatch.setattr(handoff_module, "share", lambda value: Stop("DataError: bad line"))
    with pytest.raises(LeaderStopped, match="rank 0 stopped before training: DataError: bad line") as stopped:
        receive(config)
    assert stopped.value.quiet  # rank 0 prints the error; the CLI of the others does not repeat it

    def timed_out(value: Any) -> Any:
        raise RuntimeError("[gloo] Timed out waiting 60000ms for recv operation to complete\nmore detail")

    monkeypatch.setattr(handoff_module, "share", timed_out)
    with pytest.raises(TunewiseError, match=r"\(\[gloo\] Timed out waiting 60000ms .*\): .*train.ddp_timeout \(60 s\)"):
        receive(config)
