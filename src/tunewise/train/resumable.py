"""A transformers `Trainer` whose checkpoints are atomic and whose resume is bit-exact on CPU.

What transformers 5.24 does not do by itself, and what this subclass changes (checked in its `trainer.py`):

- `_save_checkpoint` writes straight into `checkpoint-<step>`: a kill mid-save leaves a directory that
  `get_last_checkpoint` would pick and load half-written. Here transformers writes into a staging directory (its
  `_get_output_dir` is redirected for the duration of the save), then `checkpoint.commit` fsyncs, writes the
  manifest last and renames. Rotation and `best_model_checkpoint` are then applied to the real directory.
- transformers' samplers are built without a generator, so each epoch's order comes from the global torch RNG when
  the epoch's iterator starts. On a mid-epoch resume the iterator is rebuilt *before* the checkpoint's RNG state is
  loaded (`_run_epoch` loads it after the skipped batches), i.e. from a fresh process's RNG: every epoch after the
  first gets another order than the uninterrupted run. `sampling.EpochSeededSampler` (every `train.sampler`) makes
  the order a function of (data_seed, epoch) only.
- The logging accumulators (`_tr_loss`, `_globalstep_last_logged`) restart from zero on resume: when a checkpoint
  falls between two logging steps, the next logged loss would average fewer steps. They go into the checkpoint
  (`tunewise_state.json`) and come back before the first resumed step.
- `CallbackHandler.on_train_begin` clears `should_training_stop`, so a run resumed from the checkpoint written when
  early stopping (or max_steps) ended it would train on. The checkpoint records the flag; the resumed run then goes
  straight to the end of training (best model, final log), as the uninterrupted one did.
- `_load_best_model` loads whatever `checkpoint-<best>` holds; here it is verified against its manifest first.

Several processes (DDP): every rank writes its RNG state (`rng_state_<rank>.pth`) into the one staging directory,
named after rank 0's process; rank 0 writes the rest, then commits once every rank's files are in, and no rank goes
on before the commit. `tunewise_state.json` holds every rank's loss accumulator and the number of processes, which a
resume must match. The sampler's order is the same on every rank; accelerate deals its batches out in turn (rank r
takes batches r, r + n, ...), so one optimizer step sees the batches one process would accumulate over n steps. The
Trainer divides each rank's loss by the token count of the whole global batch (`average_tokens_across_devices`);
validation batches are scored alone, as in one process, rather than over a pair of ranks' tokens (`compute_loss`).

Every `torch.load` the Trainer does on resume (optimizer, scheduler, RNG state) already uses `weights_only=True`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version
from rich.console import Console
from rich.markup import escape
from transformers import Trainer
from transformers import __version__ as installed_transformers
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from tunewise.errors import TunewiseError
from tunewise.train.checkpoint import (
    STAGING_PREFIX,
    STATE_FILE,
    checkpoint_dirs,
    commit,
    describe_failure,
    fsync_path,
    read_state,
    step_of,
    verify_checkpoint,
)
from tunewise.train.distributed import gather, share, together
from tunewise.train.sampling import EpochSeededSampler

# The transformers releases whose private Trainer methods the overrides below were read against and tested with.
VERIFIED_TRANSFORMERS = ">=5.24,<5.25"
_warned_versions: set[str] = set()  # installed versions already warned about: once per process, not per trial


def unverified_transformers(installed: str | None = None) -> str | None:
    """The one-line warning for a transformers outside VERIFIED_TRANSFORMERS (default: the installed one), or None
    inside it."""
    installed = installed or installed_transformers
    try:
        if Version(installed) in SpecifierSet(VERIFIED_TRANSFORMERS, prereleases=True):
            return None
    except InvalidVersion:
        pass  # not a version pip could have installed: unverified too
    return (
        f"transformers {installed} is outside {VERIFIED_TRANSFORMERS}, the versions tunewise's checkpointing was "
        "verified against: exact resume may not hold; install the verified version with "
        "`pip install -c constraints.txt transformers` (in the tunewise repository) or "
        f"`pip install 'transformers{VERIFIED_TRANSFORMERS}'`"
    )


def warn_unverified_transformers(console: Console) -> None:
    """Print `unverified_transformers`' warning on the run's console, the first time only."""
    warning = unverified_transformers()
    if warning is not None and installed_transformers not in _warned_versions:
        _warned_versions.add(installed_transformers)
        console.print(f"[yellow]warning: {escape(warning)}[/]", soft_wrap=True)


class ResumableTrainer(Trainer):
    def __init__(
        self,
        *args: Any,
        metrics_path: Path,
        console: Console,
        sampler: str = "random",
        sampler_labels: list[str | None] | None = None,
        **kwargs: Any,
    ) -> None:
        warn_unverified_transformers(console)  # when a run builds its trainer, not when tunewise is imported
        super().__init__(*args, **kwargs)
        self.metrics_path, self.console = metrics_path, console
        self.sampler_kind, self.sampler_labels = sampler, sampler_labels
        self.best_load_problem: str | None = None  # why the best checkpoint was not loaded, if it was not
        self._staging_root: Path | None = None
        self._staging_pid: int = share(os.getpid())  # rank 0's: the one staging directory every rank writes into
        self._resume_state: dict[str, Any] | None = None
        self._train_sampler: EpochSeededSampler | None = None

    # --- data order --------------------------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        self._train_sampler = self.epoch_sampler(dataset)
        return self._train_sampler

    def epoch_sampler(self, dataset: Any) -> EpochSeededSampler:
        """train.sampler's order; length groups span the examples of one optimizer step, as transformers' own."""
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        lengths = list(dataset["length"])
        labels = self.sampler_labels if self.sampler_labels is not None else [None] * len(lengths)
        # One optimizer step's examples over all processes: the same groups whatever the number of processes.
        group = self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        batch = group if self.sampler_kind == "length_grouped" else self.args.train_batch_size
        return EpochSeededSampler(self.sampler_kind, batch, lengths, labels, seed)

    # --- saving ------------------------------------------------------------------------------------------------
    def _get_output_dir(self, trial: Any) -> str:
        if self._staging_root is not None:  # during _save_checkpoint: transformers writes into the staging dir
            return str(self._staging_root)
        return super()._get_output_dir(trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        root = Path(super()._get_output_dir(trial))
        step = self.state.global_step
        final = root / f"{PREFIX_CHECKPOINT_DIR}-{step}"
        # Hidden and not `checkpoint-*`: transformers' rotation and resume lookup glob `checkpoint-*`.
        staging_root = root / f"{STAGING_PREFIX}{self._staging_pid}"
        staged = staging_root / final.name
        main = self.is_world_process_zero()
        if main:
            shutil.rmtree(staging_root, ignore_errors=True)
        together()  # no rank writes into the staging directory before it is emptied
        self._staging_root = staging_root
        try:
            super()._save_checkpoint(model, trial)  # its rotation runs inside the staging dir: a no-op
            if self.state.best_model_checkpoint == str(staged):  # the best is this one: record its real path
                self.state.best_model_checkpoint = str(final)
                if main:
                    self.state.save_to_json(str(staged / TRAINER_STATE_NAME))
            # A float32 as a Python float: exact, and exact back. Gathering is also the wait until every rank's
            # files (its RNG state) are in the staging directory.
            losses = gather(self._tr_loss.item())
            if main:
                self._write_state(staged, losses)
                commit(staged, final, step, self.args.world_size)
        except Exception as exc:
            raise TunewiseError(self._write_failure(exc, root, final, step)) from exc
        finally:
            self._staging_root = None
            if main:
                shutil.rmtree(staging_root, ignore_errors=True)
        if main:
            # By step number: after a resume every `checkpoint-*` left is older than the new one, so this is also
            # the order of writing (mtime, transformers' default, can tie on coarse clocks).
            rotate_checkpoints(str(root), self.args.save_total_limit, self.state.best_model_checkpoint, use_mtime=False)
        together()  # no rank reads a checkpoint (the best one, at the end) before it is committed

    def _write_state(self, staged: Path, losses: list[float]) -> None:
        """What the Trainer keeps only in memory but a bit-exact resume needs; `losses`: each rank's accumulator."""
        callbacks = {
            type(cb).__name__: cb.export_state()
            for cb in self.callback_handler.callbacks
            if hasattr(cb, "export_state")
        }
        state = {
            "step": self.state.global_step,
            "tr_loss": losses[0],
            "tr_loss_by_rank": losses,
            "world_size": self.args.world_size,
            "globalstep_last_logged": self._globalstep_last_logged,
            "should_training_stop": self.control.should_training_stop,
            "metrics_bytes": self._durable_metrics_size(),
            "callbacks": callbacks,
        }
        (staged / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")

    def _durable_metrics_size(self) -> int:
        """metrics.jsonl up to this step, made durable with the checkpoint; a resume truncates it back to this."""
        if not self.metrics_path.is_file():
            return 0
        fsync_path(self.metrics_path)
        return self.metrics_path.stat().st_size

    def _write_failure(self, exc: BaseException, root: Path, final: Path, step: int) -> str:
        message = f"checkpoint write failed at step {step}: {final}: {describe_failure(exc, root)}. "
        previous = next((p for p in checkpoint_dirs(root) if p != final and verify_checkpoint(p) is None), None)
        if previous is None:
            return message + "There is no earlier checkpoint; --resume starts the training again from step 0"
        return (
            message + f"The previous checkpoint at step {step_of(previous)} ({previous}) is intact: "
            "free some space and run the same command with --resume to continue from it"
        )

    # --- resuming ----------------------------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        if resume_from_checkpoint:
            self._resume_state = read_state(Path(resume_from_checkpoint))
            saved = self._resume_state.get("callbacks", {})
            for cb in self.callback_handler.callbacks:
                if hasattr(cb, "load_state") and type(cb).__name__ in saved:
                    cb.load_state(saved[type(cb).__name__])
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _run_epoch(self, *args: Any, **kwargs: Any) -> None:
        if self._train_sampler is not None:
            # accelerate's `set_epoch` does not reach a sampler under both its shard and its skip wrappers (the
            # resumed epoch of a multi-process run), so the order's epoch is set here, for every epoch.
            self._train_sampler.set_epoch(kwargs["epoch"] if "epoch" in kwargs else args[1])
        state, self._resume_state = self._resume_state, None
        if state is not None:  # the first epoch of a resumed run; see the module docstring for why
            loss = state.get("tr_loss_by_rank", [state["tr_loss"]])[self.args.process_index]
            self._tr_loss = torch.tensor(loss, dtype=self._tr_loss.dtype, device=self._tr_loss.device)
            self._globalstep_last_logged = state["globalstep_last_logged"]
            if state["should_training_stop"]:
                self.control.should_training_stop = True
                return
        super()._run_epoch(*args, **kwargs)

    # --- several processes ---------------------------------------------------------------------------------------
    def compute_loss(
        self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if not model.training and self.args.world_size > 1:
            # Validation: each batch's own mean, as one process computes it. With the token count gathered over
            # the ranks (what training needs), a batch's loss would be weighted by another rank's batch.
            num_items_in_batch = None
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def _load_best_model(self) -> None:
        best = Path(self.state.best_model_checkpoint or "")
        problem = verify_checkpoint(best)
        if problem is not None:
            self.best_load_problem = f"{best}: {problem}"
            self.console.print(
                f"[yellow]warning: the best checkpoint {escape(str(best))} is not loaded: {escape(problem)}; "
                "the adapter is the last step's[/]"
            )
            return
        super()._load_best_model()
