"""`track.report_to`: send a run's params, metrics and artifacts to MLflow, TensorBoard, W&B or Trackio.

Each tracker is driven through its own library. Training metrics arrive through a TrainerCallback as
they are logged; test metrics and the run's files are sent when the run ends.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Protocol

from transformers import TrainerCallback

from tunewise.config import Config
from tunewise.errors import ConfigError
from tunewise.track.store import flatten

INSTALL_HINTS = {
    "mlflow": "pip install 'tunewise[mlflow]'  (or: pip install mlflow-skinny)",
    "tensorboard": "pip install 'tunewise[tensorboard]'  (or: pip install tensorboard)",
    "wandb": "pip install 'tunewise[wandb]'  (or: pip install wandb)",
    "trackio": "pip install 'tunewise[trackio]'  (or: pip install trackio)",
}
ARTIFACTS = ("config.yaml", "env.json", "run.json", "metrics.jsonl", "eval.json", "eval_matrix.json", "report.html")


class Tracker(Protocol):
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_artifacts(self, paths: list[Path]) -> None: ...
    def close(self, status: str) -> None: ...


class MLflowTracker:
    def __init__(self, config: Config, run_dir: Path, experiment: str) -> None:
        import mlflow

        uri = config.track.mlflow_uri or f"sqlite:///{(config.output.dir / 'mlflow.db').resolve()}"
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        # artifacts beside the store, not in ./mlruns of whatever directory the user ran from
        artifacts = (config.output.dir / "mlartifacts").resolve().as_uri()
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment, artifacts)
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        # MLflow caps a param value at 6000 characters; long prompts are in the config.yaml artifact anyway
        items = [Param(_mlflow_key(k), str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(1000 * time.time())
        batch = [Metric(_mlflow_key(k), v, now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_artifacts(self, paths: list[Path]) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path))

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if status == "completed" else "FAILED")


class TensorBoardTracker:
    def __init__(self, config: Config, run_dir: Path, experiment: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log_params(self, params: dict[str, Any]) -> None:
        table = "\n".join(f"| {k} | {str(v).replace('|', '/')} |" for k, v in params.items())
        self.writer.add_text("config", "| key | value |\n|---|---|\n" + table)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def log_artifacts(self, paths: list[Path]) -> None:
        self.writer.flush()  # the files already sit in the run directory beside the event file

    def close(self, status: str) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, config: Config, run_dir: Path, experiment: str) -> None:
        import wandb

        # offline unless the user is logged in: nothing leaves the machine by surprise
        mode = os.environ.get("WANDB_MODE") or ("online" if _wandb_logged_in() else "offline")
        self.run = wandb.init(project=experiment, name=run_dir.name, dir=str(run_dir), mode=mode, reinit=True)

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_artifacts(self, paths: list[Path]) -> None:
        for path in paths:
            self.run.save(str(path), base_path=str(path.parent), policy="now")

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "completed" else 1)


class TrackioTracker:
    def __init__(self, config: Config, run_dir: Path, experiment: str) -> None:
        import trackio

        self.trackio = trackio
        self.run = trackio.init(project=experiment, name=run_dir.name)

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.trackio.log(metrics, step=step)

    def log_artifacts(self, paths: list[Path]) -> None:
        pass  # Trackio logs metrics only; the files stay in the run directory

    def close(self, status: str) -> None:
        self.trackio.finish()


TRACKERS: dict[str, type] = {
    "mlflow": MLflowTracker,
    "tensorboard": TensorBoardTracker,
    "wandb": WandbTracker,
    "trackio": TrackioTracker,
}


MODULES = {"mlflow": "mlflow", "tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}


def check_installed(config: Config) -> None:
    """Fail before any work when a configured tracker's library is missing."""
    import importlib

    for name in config.track.report_to:
        try:
            importlib.import_module(MODULES[name])
        except ImportError:
            raise ConfigError(f"track.report_to: {name} is not installed; {INSTALL_HINTS[name]}") from None


class Trackers:
    """All configured trackers behind one object; with none configured every call is a no-op."""

    def __init__(self, config: Config | None, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.active: list[Tracker] = []
        if config is None:  # none configured (yet): every call is a no-op
            return
        experiment = config.track.experiment or config.output.name or run_dir.name.split("-", 2)[-1]
        for name in config.track.report_to:
            try:
                self.active.append(TRACKERS[name](config, run_dir, experiment))
            except ImportError:
                self._close_all("failed")  # the ones already started must not stay open
                raise ConfigError(f"track.report_to: {name} is not installed; {INSTALL_HINTS[name]}") from None
            except BaseException:
                self._close_all("failed")
                raise

    def log_params(self, params: dict[str, Any]) -> None:
        for tracker in self.active:
            tracker.log_params(params)

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        numbers = {k: float(v) for k, v in metrics.items() if _is_number(v)}
        for tracker in self.active if numbers else ():
            tracker.log_metrics(numbers, step)

    def finish(self, status: str, final_metrics: dict[str, Any], step: int) -> None:
        """Send the final figures and files, and close every tracker even when one of them fails."""
        files = [self.run_dir / name for name in ARTIFACTS if (self.run_dir / name).is_file()]
        try:
            self.log_metrics(final_metrics, step)
            for tracker in self.active:
                tracker.log_artifacts(files)
        finally:
            self._close_all(status)

    def _close_all(self, status: str) -> None:
        errors = []
        for tracker in self.active:
            try:
                tracker.close(status)
            except Exception as exc:
                errors.append(exc)
        self.active = []
        if errors:
            raise errors[0]

    def callback(self) -> TrainerCallback:
        return _ForwardLogs(self)


class _ForwardLogs(TrainerCallback):
    def __init__(self, trackers: Trackers) -> None:
        self.trackers = trackers

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if logs:
            self.trackers.log_metrics({_train_key(k): v for k, v in logs.items()}, state.global_step)


def eval_metrics(results: dict[str, dict[str, Any]], split: str) -> dict[str, float]:
    """eval.json's per-cell metrics as flat tracker keys: test/<cell>/<metric>."""
    flat = {}
    for cell, metrics in results.items():
        for key, value in flatten(metrics).items():
            if _is_number(value) and "confusion_matrix" not in key:
                flat[f"{split}/{cell.replace(' · ', '/')}/{key}"] = float(value)
    return flat


def _wandb_logged_in() -> bool:
    """`wandb login` stores the key in ~/.netrc (or WANDB_API_KEY is set)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _train_key(key: str) -> str:
    return f"val/{key.removeprefix('eval_')}" if key.startswith("eval_") else f"train/{key}"


def _mlflow_key(key: str) -> str:
    # MLflow keys allow alphanumerics, _ - . space / only
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in key)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
