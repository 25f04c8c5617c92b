"""Evaluation tasks: the records to score plus how to ask the model and how to score its answers."""

from __future__ import annotations

from tunewise.config import EvalConfig, resolve_task
from tunewise.errors import ConfigError
from tunewise.evaluate.code_permission import current_grant
from tunewise.evaluate.tasks.base import EvalOutput, EvalTask
from tunewise.evaluate.tasks.classification import ClassificationTask, parse_label
from tunewise.evaluate.tasks.perplexity import PerplexityTask

__all__ = ["ClassificationTask", "EvalOutput", "EvalTask", "PerplexityTask", "parse_label", "task_for"]


def task_for(kind: str, labels: list[str], cfg: EvalConfig, max_length: int) -> EvalTask:
    """The task `cfg.task` names for records of `kind` (`auto`: as `tunewise.config.resolve_task` decides)."""
    from tunewise.evaluate.tasks.generative import GenerativeTask

    name = resolve_task(cfg.task, kind)
    if name == "classification":
        if kind != "classification":
            raise ConfigError(f"eval.task: classification needs data.kind: classification (got {kind})")
        return ClassificationTask(labels, cfg.label_mode, cfg.max_new_tokens)
    if name == "perplexity":
        return PerplexityTask(max_length)
    if name == "code":
        from tunewise.evaluate.tasks.code import CodeTask

        if max(cfg.k) > cfg.samples:
            raise ConfigError(f"eval.k: pass@{max(cfg.k)} needs eval.samples >= {max(cfg.k)}")
        return CodeTask(cfg.max_new_tokens, list(cfg.stop), current_grant(), cfg.samples, cfg.k, cfg.timeout)
    return GenerativeTask(name, cfg.max_new_tokens, list(cfg.stop), max_length, cfg.perplexity)
