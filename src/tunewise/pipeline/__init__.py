"""The stages of `tunewise run` (prepare data, evaluate the base model, train, evaluate the fine-tune, write
results) and the jobs composed of them: `run_job`, `train_job`, `eval_job`."""

from tunewise.pipeline.jobs import RunOutcome, eval_job, run_job, train_job

__all__ = ["RunOutcome", "eval_job", "run_job", "train_job"]
