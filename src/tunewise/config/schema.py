"""The root config model: a config file's sections, and the checks that span more than one of them."""

from __future__ import annotations

from pydantic import Field, model_validator

from tunewise.config.curate import CurateConfig
from tunewise.config.error_messages import CODE_FLAG_ONLY, is_config_key
from tunewise.config.evaluation import EvalConfig, OutputConfig, TrackConfig
from tunewise.config.exporting import ExportConfig
from tunewise.config.inputs import DataConfig, ModelConfig, PromptConfig
from tunewise.config.section import Section
from tunewise.config.studies import AblateConfig, BakeoffConfig, SweepConfig
from tunewise.config.tasks import TASK_METRICS, TRAINING_METRICS, resolve_task
from tunewise.config.training import LoraSettings, TrainConfig


class Config(Section):
    """A config file: YAML with these sections, of which only `data` is required."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="the base model")
    data: DataConfig = Field(description="the data files and how their records are read")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="how a record becomes the prompt")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="the LoRA adapter")
    train: TrainConfig = Field(default_factory=TrainConfig, description="fine-tuning")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="evaluation of base and fine-tuned model")
    output: OutputConfig = Field(default_factory=OutputConfig, description="where runs are written")
    curate: CurateConfig | None = Field(
        None, description="curation steps run before training (`tunewise curate`, first stage of `tunewise run`)"
    )
    track: TrackConfig = Field(default_factory=TrackConfig, description="experiment trackers")
    sweep: SweepConfig | None = Field(None, description="the hyperparameter search of `tunewise sweep`")
    ablate: AblateConfig | None = Field(None, description="the data ablations of `tunewise ablate`")
    bakeoff: BakeoffConfig | None = Field(None, description="the base-model comparison of `tunewise bakeoff`")
    export: ExportConfig | None = Field(
        None, description="artifacts `tunewise run` exports at the end of a run (defaults of `tunewise export`)"
    )

    @model_validator(mode="after")
    def _check_sweep_keys(self) -> Config:
        for key in self.sweep.params if self.sweep else ():
            if key == "prompt.variant":
                unknown = [
                    c for c in self.sweep.params[key].choices or [] if c not in {"default", *self.prompt.variants}
                ]
                if unknown:
                    raise ValueError(f"sweep.params.prompt.variant: {unknown} not in prompt.variants")
                continue
            if key == "eval.allow_code_execution":
                raise ValueError(f"sweep.params: {CODE_FLAG_ONLY}")
            if not is_config_key(type(self), key):
                raise ValueError(f"sweep.params: '{key}' is not a config key (use dotted paths like train.lr)")
        return self

    @model_validator(mode="after")
    def _check_metric(self) -> Config:
        if not self.train.metric.startswith("eval_"):
            self.train.metric = f"eval_{self.train.metric}"
        if self.train.metric not in TRAINING_METRICS:
            raise ValueError(
                f"train.metric '{self.train.metric}' is not computed during training; "
                f"use one of: {', '.join(TRAINING_METRICS)}"
            )
        name = self.train.metric.removeprefix("eval_")
        if name != "loss" and name not in TASK_METRICS[self.eval_task]:
            raise ValueError(
                f"train.metric '{name}' is not a metric of the {self.eval_task} task; "
                f"use loss or one of: {', '.join(TASK_METRICS[self.eval_task])}"
            )
        return self

    @model_validator(mode="after")
    def _check_calibrate(self) -> Config:
        if self.eval.calibrate and self.eval_task != "classification":
            raise ValueError(
                f"eval.calibrate: true is for classification, and this config evaluates the {self.eval_task} task; "
                "set eval.calibrate: false"
            )
        if self.eval.calibrate and self.eval.label_mode == "generate":
            raise ValueError(
                "eval.calibrate: true calibrates label scores, which eval.label_mode: generate does not give; "
                "set eval.label_mode: likelihood or eval.calibrate: false"
            )
        if self.eval.calibrate and self.eval.split == "val":
            raise ValueError(
                "eval.calibrate: true fits its offsets on the validation split, so the evaluated split must be "
                "test; set eval.split: test"
            )
        return self

    @model_validator(mode="after")
    def _check_sampler(self) -> Config:
        if self.train.sampler == "stratified" and self.data.kind != "classification":
            raise ValueError(
                f"train.sampler: stratified batches need class labels, and data.kind: {self.data.kind} records "
                "have none; set train.sampler: random"
            )
        return self

    @property
    def eval_task(self) -> str:
        """The evaluation task `eval.task: auto` stands for with this data."""
        return resolve_task(self.eval.task, self.data.kind)
