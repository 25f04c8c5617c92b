"""Command line: a thin layer over the Python API (`tunewise.api`); a user error is one red line and exit code 2."""

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
NprocOpt = Annotated[
    int,
    typer.Option(
        "--nproc",
        min=1,
        help="training processes on this machine (data parallel: one per GPU, or CPU processes over gloo); the "
        "command runs in each under torch.distributed, as `torchrun --nproc-per-node N -m tunewise.cli ...` would",
    ),
]


@app.command()
def run(
    config: ConfigArg,
    overrides: OverridesArg = None,
    allow_code_execution: AllowCode = False,
    allow_unconfined_code: AllowUnconfined = False,
    resume: ResumeOpt = False,
    fresh: FreshOpt = False,
    nproc: NprocOpt = 1,
) -> None:
    """(Curate if configured,) evaluate the base model, fine-tune with LoRA, evaluate it, compare."""
    with _user_errors():
        from tunewise import api

        given = overrides or []
        overrides, request = _resume_choice(given, resume, fresh)
        config_obj = api.load_config(config, overrides)
        flags = {
            "--resume": resume,
            "--fresh": fresh,
            "--allow-code-execution": allow_code_execution,
            "--allow-unconfined-code": allow_unconfined_code,
        }
        if _launched(nproc, config_obj, ["run", str(config), *given], flags):
            return
        api.run(
            config_obj,
            resume=request,
            allow_code_execution=allow_code_execution,
            allow_unconfined_code=allow_unconfined_code,
            console=console,
            config_path=config,
        )


@app.command()
def train(
    config: ConfigArg,
    overrides: OverridesArg = None,
    resume: ResumeOpt = False,
    fresh: FreshOpt = False,
    nproc: NprocOpt = 1,
) -> None:
    """Fine-tune only: writes the run directory with the best adapter and metrics.jsonl."""
    with _user_errors():
        from tunewise import api

        given = overrides or []
        overrides, request = _resume_choice(given, resume, fresh)
        config_obj = api.load_config(config, overrides)
        if _launched(nproc, config_obj, ["train", str(config), *given], {"--resume": resume, "--fresh": fresh}):
            return
        api.train(config_obj, resume=request, console=console, config_path=config)


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
    with _user_errors():
        from tunewise import api

        api.evaluate(
            api.load_config(config, overrides),
            adapter or [],
            allow_code_execution=allow_code_execution,
            allow_unconfined_code=allow_unconfined_code,
            console=console,
            config_path=config,
        )


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
        from tunewise import api

        api.predict(api.load_config(config, overrides), input, adapter=adapter, output=output, console=console)


@app.command("export")
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="a finished run directory (runs/<time>-<name>)", show_default=False)],
    format: Annotated[
        list[str] | None,
        typer.Option(
            "--format",
            help="merged (safetensors), gguf (with an Ollama Modelfile), adapter; repeat for several "
            "(default: the run's export: section, else merged and gguf)",
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="export directory (default: RUN_DIR/export)")] = None,
    dtype: Annotated[str | None, typer.Option(help="merged weights: float32 (default), bfloat16, float16")] = None,
    quant: Annotated[str | None, typer.Option(help="GGUF weight type: f16 (default), bf16, q8_0, f32")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing export directory")] = False,
) -> None:
    """Ship a run as the model that was evaluated: merged safetensors, GGUF + Ollama Modelfile, model card, and
    each artifact's fidelity (logits and the task score against base + adapter) in export.json."""
    with _user_errors():
        from tunewise import api

        api.export(run_dir, formats=format, out=out, dtype=dtype, gguf_type=quant, overwrite=overwrite, console=console)


@app.command("curate")
def curate_command(
    config: ConfigArg,
    overrides: OverridesArg = None,
    engine: Annotated[
        str | None, typer.Option("--engine", help="local or ray (default: curate.engine); same decisions")
    ] = None,
    address: Annotated[
        str | None, typer.Option("--address", help="Ray cluster to join, e.g. auto or ray://head:10001")
    ] = None,
) -> None:
    """Curate the training data: validate, dedup, filter, balance, decontaminate, split; write a report."""
    with _user_errors():
        from tunewise import api

        api.curate(api.load_config(config, overrides), console=console, engine=engine, address=address)


@app.command("sweep")
def sweep_command(
    config: ConfigArg,
    overrides: OverridesArg = None,
    n_trials: Annotated[int | None, typer.Option("--n-trials", help="total trials, counting finished ones")] = None,
    allow_code_execution: AllowCode = False,
    allow_unconfined_code: AllowUnconfined = False,
) -> None:
    """Optuna sweep over sweep.params: one fine-tune per trial, median-pruned, resumable; writes best.yaml."""
    with _user_errors():
        from tunewise import api

        api.sweep(
            api.load_config(config, overrides),
            n_trials=n_trials,
            allow_code_execution=allow_code_execution,
            allow_unconfined_code=allow_unconfined_code,
            console=console,
            config_path=config,
        )


@app.command("ablate")
def ablate_command(
    config: ConfigArg,
    overrides: OverridesArg = None,
    allow_code_execution: AllowCode = False,
    allow_unconfined_code: AllowUnconfined = False,
) -> None:
    """Learning curve over data fractions and curated vs raw at equal budget, on the same test split."""
    with _user_errors():
        from tunewise import api

        api.ablate(
            api.load_config(config, overrides),
            allow_code_execution=allow_code_execution,
            allow_unconfined_code=allow_unconfined_code,
            console=console,
            config_path=config,
        )


@app.command("bakeoff")
def bakeoff_command(
    config: ConfigArg,
    overrides: OverridesArg = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="a candidate base model (repeat); replaces bakeoff.models", show_default=False),
    ] = None,
    allow_code_execution: AllowCode = False,
    allow_unconfined_code: AllowUnconfined = False,
) -> None:
    """Compare base models on this task: estimate, prompted base and extrapolated learning curve on validation."""
    with _user_errors():
        from tunewise import api

        api.bakeoff(
            api.load_config(config, overrides),
            model or (),
            allow_code_execution=allow_code_execution,
            allow_unconfined_code=allow_unconfined_code,
            console=console,
            config_path=config,
        )


@app.command("estimate")
def estimate_command(
    config: ConfigArg,
    overrides: OverridesArg = None,
    probe_steps: Annotated[
        int,
        typer.Option(
            "--probe-steps",
            min=0,
            help="real training steps measured in a child process to check the arithmetic; 0: none",
        ),
    ] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="print every figure as JSON instead of the table")] = False,
) -> None:
    """Size a run without training: model size, peak memory by component, time, and whether it fits here (exit
    code 1 when it does not)."""
    with _user_errors():
        import json

        from tunewise import api

        quiet = Console(quiet=True)
        result = api.estimate(
            api.load_config(config, overrides), probe_steps=probe_steps, console=quiet if as_json else console
        )
        if as_json:
            sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    if not result.fits:  # a script can gate a launch on it
        raise typer.Exit(1)


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


def _resume_choice(overrides: list[str], resume: bool, fresh: bool) -> tuple[list[str], str | Path]:
    """(overrides, the API's `resume`). `--resume RUN_DIR`: overrides always contain '=', a path does not."""
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
    if resume and paths:
        run_dir = Path(paths[0])
        if not run_dir.is_dir():
            raise TunewiseError(f"--resume {run_dir}: no such run directory")
        return rest, run_dir
    if resume:
        return rest, "newest"
    return rest, "fresh" if fresh else "auto"


def _launched(nproc: int, config: object, command: list[str], flags: dict[str, bool]) -> bool:
    """--nproc N > 1: the command runs in N processes (each without --nproc); True once they finished."""
    if nproc == 1 or int(os.environ.get("WORLD_SIZE", "1") or 1) == nproc:  # 1, or already one of the N
        return False
    from tunewise import api

    code = api.launch([*command, *(flag for flag, given in flags.items() if given)], nproc, config)  # type: ignore[arg-type]
    if code:
        raise typer.Exit(code)
    return True


@contextmanager
def _user_errors() -> Iterator[None]:
    """A TunewiseError is the user's to fix: one red line and exit code 2, no traceback. In a process of a
    multi-process run other than rank 0, the line names the rank, and an error rank 0 reports itself is not
    repeated."""
    _quiet_libraries()
    try:
        yield
    except TunewiseError as exc:
        rank = os.environ.get("RANK", "0") if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 else "0"
        if not getattr(exc, "quiet", False):
            where = f"(training process {rank}) " if rank != "0" else ""
            err_console.print(f"[bold red]error:[/] {where}{escape(str(exc))}", highlight=False, soft_wrap=True)
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
