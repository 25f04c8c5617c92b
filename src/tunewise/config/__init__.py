"""Typed run configuration: YAML file + dotted CLI overrides, unknown keys are errors (described by
tunewise.config.error_messages).

The models live by concern (inputs: model/data/prompt, training: lora/train, evaluation: eval/output/track,
studies: sweep/ablate, schema: the root `Config`), the task and metric-direction rules in tasks, reading and
writing in load; every public name is importable from here."""

from __future__ import annotations

from tunewise.config.evaluation import TRACKERS, EvalConfig, OutputConfig, TrackConfig
from tunewise.config.exporting import ExportConfig
from tunewise.config.inputs import DataConfig, ModelConfig, PromptConfig, PromptSettings, RecordKind
from tunewise.config.load import (
    MAX_CONFIG_BYTES,
    apply_override,
    config_from_mapping,
    dump_config,
    load_config,
    validate_config,
)
from tunewise.config.schema import Config
from tunewise.config.section import Section
from tunewise.config.studies import AblateConfig, BakeoffConfig, SweepConfig, SweepParam
from tunewise.config.tasks import LOWER_IS_BETTER, TASK_METRICS, TRAINING_METRICS, greater_is_better, resolve_task
from tunewise.config.training import LoraSettings, TrainConfig

__all__ = [
    "LOWER_IS_BETTER",
    "MAX_CONFIG_BYTES",
    "TASK_METRICS",
    "TRACKERS",
    "TRAINING_METRICS",
    "AblateConfig",
    "BakeoffConfig",
    "Config",
    "DataConfig",
    "EvalConfig",
    "ExportConfig",
    "LoraSettings",
    "ModelConfig",
    "OutputConfig",
    "PromptConfig",
    "PromptSettings",
    "RecordKind",
    "Section",
    "SweepConfig",
    "SweepParam",
    "TrackConfig",
    "TrainConfig",
    "apply_override",
    "config_from_mapping",
    "dump_config",
    "greater_is_better",
    "load_config",
    "resolve_task",
    "validate_config",
]
