"""Command line: thin wrappers that load the config and call the pipeline."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from tunewise import __version__
from tunewise.errors import TunewiseError

app = typer.Typer(
    help="Data-centric fine-tuning: LoRA fine-tune an open LLM and measure it against the prompted base.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True)  # log lines stay whole when piped; tables still fit
err_console = Console(stderr=True, soft_wrap=True)

ConfigArg = Annotated[Path, typer.Argument(help="YAML config file", show_default=False)]
OverridesArg = Annotated[
    list[str] | None, typer.Argument(help="dotted overrides, e.g. train.lr=1e-4 data.max_train_examples=200")
]


def _version(value: bool) -> None:
    if value:
        console.print(f"tunewise {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="show version")] = False,
) -> None:
    """tunewise: curate, fine-tune, evaluate."""


AllowCode = Annotated[
    bool,
    typer.Option(
        "--allow-code-execution",
        help="let the code task run model-written programs, each in an OS sandbox (bubblewrap); no config, "
        "override or sweep can allow it",
    ),
]
AllowUnconfined = Annotated[
    bool,
    typer.Option(
        "--allow-unconfined-code",
        help="with --allow-code-execution: run the programs even where no OS sandbox is available (only "
        "resource limits then; on a machine you can afford to lose)",
    ),
]


ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="continue an unfinished run from its newest valid checkpoint: the newest of this config, or "
        "RUN_DIR given after the config (`--resume runs/<run>`). Unfinished runs of the same config and data "
        "are continued without it too",
    ),
]
FreshOpt = Annotated[bool, typer.Option("--fresh", help="start a new run even if an unfinished one can be resumed")]


@app.command()
def run(
    config: ConfigArg,
    overrides: OverridesArg = None,
    allow_code_execution: AllowCode = False,
    allow_unconfined_code: AllowUnconfined = False,
    resume: ResumeOpt = False,
    fresh: FreshOpt = False,
) -> None:
    """(Curate if configured,) evaluate the base model, fine-tune with LoRA, evaluate it, compare."""
    code = (allow_code_execution, allow_unconfined_code)
    _pipeline(config, overrides, code, do_train=True, do_eval=True, resume_flags=(resume, fresh))


@app.command()
def train(
    config: ConfigArg, overrides: OverridesArg = None, resume: ResumeOpt = False, fresh: FreshOpt = False
) -> None:
    """Fine-tune only: writes the run directory with the best adapter and metrics.jsonl."""
    _pipeline(config, overrides, (False, False), do_train=True, do_eval=False, resume_flags=(resume, fresh))


@app.command("eval")
def evaluate(
    config: ConfigArg,
    overrides: OverridesArg = None,
    adapter: Annotated[
        list[Path] | None, typer.Option(help="LoRA adapter directory (a run's adapter/); repeat to compare several")
    ] = None,
    allow_code_execution: AllowCode = False,
    allow_unconfined_code: AllowUnconfined = False,
) -> None:
    """Evaluate the base model and each --adapter on the same split, under every prompt variant."""
    code = (allow_code_execution, allow_unconfined_code)
    _pipeline(config, overrides, code, do_train=False, do_eval=True, adapters=adapter or [])


@app.command("predict")
def predict_command(
    config: ConfigArg,
    input: Annotated[Path, typer.Option("--input", help="JSONL/CSV/Parquet rows of data.kind; answers may be absent")],
    overrides: OverridesArg = None,
    adapter: Annotated[Path | None, typer.Option(help="LoRA adapter directory; the base model without it")] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            help="JSONL to write (default: <input stem>.predictions.jsonl beside the input, e.g. "
            "new.jsonl -> new.predictions.jsonl); rejected rows go to <output stem>.rejects.jsonl"
        ),
    ] = None,
) -> None:
    """Write each input row with the model's prediction as JSONL, in the field `pred`: a label (with every
    label's log-probability in `logprobs`) or the generated text."""
    with _user_errors():
        from tunewise.config import load_config
        from tunewise.evaluate.predict import predict

        predict(load_config(config, overrides), input, output, adapter, console)


@app.command("curate")
def curate_command(config: ConfigArg, overrides: OverridesArg = None) -> None:
    """Curate the training data: validate, dedup, filter, balance, decontaminate, split; write a report."""
    with _user_errors():
        from tunewise.config import load_config
        from tunewise.curate.stage import curate

        curate(load_config(config, overrides), console)


@app.command("sweep")
def sweep_command(
    config: ConfigArg,
    overrides: OverridesArg = None,
    n_trials: Annotated[int | None, typer.Option("--n-trials", help="total trials, counting finished ones")] = None,
    allow_code_execution: AllowCode = False,
    allow_unconfined_code: AllowUnconfined = False,
) -> None:
    """Optuna sweep over sweep.params: one fine-tune per trial, median-pruned, resumable; writes best.yaml."""
    with _user_errors((allow_code_execution, allow_unconfined_code)):
        from tunewise.config import load_config
        from tunewise.experiments.sweep import sweep

        sweep(load_config(config, overrides), config, console, n_trials)


@app.command("ablate")
def ablate_command(
    config: ConfigArg,
    overrides: OverridesArg = None,
    allow_code_execution: AllowCode = False,
    allow_unconfined_code: AllowUnconfined = False,
) -> None:
    """Learning curve over data fractions and curated vs raw at equal budget, on the same test split."""
    with _user_errors((allow_code_execution, allow_unconfined_code)):
        from tunewise.config import load_config
        from tunewise.experiments.ablate import ablate

        ablate(load_config(config, overrides), config, console)


@app.command("report")
def report_command(
    targets: Annotated[list[Path], typer.Argument(help="a run dir, a sweep dir, or several run dirs to compare")],
    out: Annotated[Path | None, typer.Option(help="HTML file to write (default: report.html in the dir)")] = None,
) -> None:
    """A self-contained HTML report (plots embedded; PNGs also in plots/): a run, a sweep or a comparison."""
    with _user_errors():
        from tunewise.track.run_report import render_report

        console.print(f"report: {escape(str(render_report(list(targets), out)))}")


runs_app = typer.Typer(help="List, inspect, compare and remove runs.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
WorkspaceOpt = Annotated[Path, typer.Option("--dir", help="the workspace: output.dir of your configs")]


@runs_app.command("list")
def runs_list(workspace: WorkspaceOpt = Path("runs")) -> None:
    """Every run in the workspace: name, task, status, best metric, duration (indexed in runs.db)."""
    with _user_errors():
        from tunewise.track.views import list_runs

        list_runs(console, workspace)


@runs_app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(help="run directory or (part of) its name")],
    workspace: WorkspaceOpt = Path("runs"),
) -> None:
    """One run: status, evaluation with CIs, training summary, environment and data hashes."""
    with _user_errors():
        from tunewise.track.store import find_run
        from tunewise.track.views import show_run

        show_run(console, find_run(workspace, run))


@runs_app.command("compare")
def runs_compare(
    runs: Annotated[list[str], typer.Argument(help="two or more runs")], workspace: WorkspaceOpt = Path("runs")
) -> None:
    """Metrics side by side and the config keys that differ."""
    with _user_errors():
        from tunewise.track.store import find_run
        from tunewise.track.views import compare_runs

        if len(runs) < 2:
            raise TunewiseError("runs compare needs at least two runs")
        compare_runs(console, [find_run(workspace, r) for r in runs])


@runs_app.command("rm")
def runs_rm(
    runs: Annotated[list[str], typer.Argument(help="runs to delete")],
    workspace: WorkspaceOpt = Path("runs"),
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
) -> None:
    """Delete run directories and their index entries."""
    with _user_errors():
        from tunewise.track.store import find_run, remove_run

        paths = [find_run(workspace, r, exact=True) for r in runs]  # deleting: no guessing from a fragment
        if not yes and not typer.confirm(f"delete {', '.join(p.name for p in paths)}?"):
            raise typer.Exit(1)
        for path in paths:
            remove_run(workspace, path)
            console.print(f"removed {escape(str(path))}")


def _pipeline(
    config_path: Path,
    overrides: list[str] | None,
    code: tuple[bool, bool],
    resume_flags: tuple[bool, bool] | None = None,
    **kwargs: object,
) -> None:
    with _user_errors(code):
        from tunewise.config import load_config
        from tunewise.pipeline.stages import run as run_pipeline

        overrides, request = _resume_request(overrides or [], resume_flags)
        config = load_config(config_path, overrides)
        run_pipeline(config, config_path, console, resume=request, **kwargs)  # type: ignore[arg-type]


def _resume_request(overrides: list[str], flags: tuple[bool, bool] | None) -> tuple[list[str], object]:
    """(overrides, ResumeRequest or None). `--resume RUN_DIR`: overrides always contain '=', a path does not."""
    if flags is None:
        return overrides, None
    from tunewise.track.resume_target import ResumeRequest

    resume, fresh = flags
    paths = [o for o in overrides if "=" not in o]
    if resume and fresh:
        raise TunewiseError("--resume and --fresh contradict each other; give one")
    if paths and not resume:
        raise TunewiseError(
            f"override '{paths[0]}': expected KEY=VALUE, e.g. train.lr=1e-4 (a run to resume goes after --resume)"
        )
    if len(paths) > 1:
        raise TunewiseError(f"--resume takes one run directory, got {len(paths)}: {', '.join(paths)}")
    rest = [o for o in overrides if "=" in o]
    if resume:
        run_dir = Path(paths[0]) if paths else None
        if run_dir is not None and not run_dir.is_dir():
            raise TunewiseError(f"--resume {run_dir}: no such run directory")
        return rest, ResumeRequest("resume", run_dir)
    return rest, ResumeRequest("fresh" if fresh else "auto")


@contextmanager
def _user_errors(code: tuple[bool, bool] = (False, False)) -> Iterator[None]:
    """A TunewiseError is the user's to fix: one red line and exit code 2, no traceback.

    `code` is (--allow-code-execution, --allow-unconfined-code): the only way generated code may run.
    """
    from tunewise.evaluate.code_permission import code_execution_allowed

    _quiet_libraries()
    allow, unconfined = code
    try:
        if unconfined and not allow:
            raise TunewiseError("--allow-unconfined-code only widens --allow-code-execution; pass both")
        with code_execution_allowed(allow, unconfined):
            yield
    except TunewiseError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130) from None


def _quiet_libraries() -> None:
    """Library warnings drown the output that matters; errors still show."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


if __name__ == "__main__":
    sys.exit(app())
