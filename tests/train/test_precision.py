"""train.trainer: `train.precision` reaches the Trainer as its own mixed-precision switches, and `model.device`
decides whether the Trainer stays on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tunewise.train.trainer as trainer_module
from tunewise.config import Config
from tunewise.errors import ConfigError
from tunewise.train.trainer import precision_flags, training_arguments

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_is_fp32_on_cpu_and_bf16_on_a_cuda_device_that_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert precision_flags("auto", CPU) == {"bf16": False, "fp16": False}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision_flags("auto", CUDA) == {"bf16": True, "fp16": False}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # pre-Ampere
    assert precision_flags("auto", CUDA) == {"bf16": False, "fp16": True}


def test_explicit_settings_are_kept_and_fp16_on_cpu_is_refused() -> None:
    assert precision_flags("bf16", CPU) == {"bf16": True, "fp16": False}
    assert precision_flags("fp32", CUDA) == {"bf16": False, "fp16": False}
    assert precision_flags("fp16", CUDA) == {"bf16": False, "fp16": True}
    with pytest.raises(ConfigError, match="train.precision: fp16"):
        precision_flags("fp16", CPU)


def test_the_trainer_gets_the_precision_and_the_distributed_settings(tmp_path: Path) -> None:
    cfg = Config(
        data={"train": str(tmp_path / "train.jsonl")},
        train={"precision": "bf16", "ddp_timeout": 600, "fsdp": True, "fsdp_config": {"cpu_offload": True}},
    )
    args = training_arguments(cfg, tmp_path / "checkpoints", total_steps=10)
    assert args.bf16 and not args.fp16
    assert args.use_cpu  # no accelerator on the test machine, model.device: auto
    assert args.average_tokens_across_devices and args.ddp_timeout == 600
    assert args.fsdp and args.fsdp_plugin_args["cpu_offload"] and args.fsdp_plugin_args["fsdp_version"] == 2


def test_the_trainer_leaves_the_cpu_when_the_model_device_is_an_accelerator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trainer_module, "resolve_device", lambda setting: CUDA)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cfg = Config(data={"train": str(tmp_path / "train.jsonl")})
    flags = {"use_cpu": None, "bf16": None}
    real = trainer_module.TrainingArguments

    def record(**kwargs: object) -> object:
        flags.update({key: kwargs[key] for key in flags})
        return real(**{**kwargs, "use_cpu": True, "bf16": False})  # this machine cannot build CUDA arguments

    monkeypatch.setattr(trainer_module, "TrainingArguments", record)
    training_arguments(cfg, tmp_path / "checkpoints", total_steps=10)
    assert flags == {"use_cpu": False, "bf16": True}
