"""A GGUF run through llama.cpp in a child process: what it computes on the export's probe and task inputs comes
back as arrays, and a crash of the native runtime (a segfault, an illegal instruction on a CPU it was not built
for) becomes a one-line reason for the export to report, not the end of the export."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tunewise.errors import ExportError

TIMEOUT_S = 1800  # a 135M model's probe takes seconds; a runtime that hangs must not hold the export forever


@dataclass
class ProbeRequest:
    """Token ids to run: logits at every position of `sequences`, greedy continuations of `prompts`, llama.cpp's
    own tokenization of `texts`; for the task, label log-likelihoods (`choices` set) or greedy answers."""

    sequences: list[list[int]]
    prompts: list[list[int]]
    greedy_tokens: int
    stops: list[int]
    texts: list[str]
    task_prompts: list[list[int]]
    choices: list[list[int]] | None = None
    task_max_new_tokens: int = 0
    task_stops: list[int] | None = None  # where task answers stop, as tunewise's generation stops (its EOS)
    n_ctx: int = 2048


@dataclass
class ProbeResult:
    logits: list[np.ndarray]
    greedy: list[list[int]]
    tokenized: list[list[int]]
    choice_scores: np.ndarray | None
    task_generations: list[list[int]] | None


def run_probe(gguf_file: Path, request: ProbeRequest, workdir: Path, timeout: float = TIMEOUT_S) -> ProbeResult:
    """Run `request` on `gguf_file` in a spawned child; `ExportError` says why when the child fails or dies."""
    request_file, result_file = workdir / "probe-request.json", workdir / "probe-result.npz"
    request_file.write_text(json.dumps(asdict(request)), encoding="utf-8")
    # A fresh interpreter running this module, not multiprocessing: spawn would re-import the caller's own
    # script in the child (running whatever it does at top level), and fork a process holding torch's threads.
    # -I: the child imports nothing from the current folder or PYTHON* variables, only the installed packages.
    files = [str(Path(f).resolve()) for f in (gguf_file, request_file, result_file)]
    command = [sys.executable, "-I", "-m", __name__, *files]
    try:
        child = subprocess.run(command, capture_output=True, timeout=timeout, check=False, cwd=workdir)
    except subprocess.TimeoutExpired:
        raise ExportError(f"llama.cpp did not finish the GGUF check within {timeout:.0f} s") from None
    try:
        if child.returncode != 0 or not result_file.is_file():
            raise ExportError(f"llama.cpp {_death(child.returncode, workdir)} while running the GGUF")
        return _read_result(result_file)
    finally:
        request_file.unlink(missing_ok=True)
        result_file.unlink(missing_ok=True)
        (workdir / "probe-error.txt").unlink(missing_ok=True)


def _death(exitcode: int | None, workdir: Path) -> str:
    error = workdir / "probe-error.txt"
    if error.is_file():
        return "failed: " + error.read_text(encoding="utf-8").strip()[:300]
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"crashed ({name}; a build of llama-cpp-python for this CPU may fix it)"
    return f"exited with code {exitcode}"


def main(argv: list[str]) -> None:
    """The child's entry point: `python -m tunewise.export.gguf_probe GGUF REQUEST RESULT`."""
    gguf_file, request_file, result_file = argv
    _child(gguf_file, request_file, result_file)


def _child(gguf_file: str, request_file: str, result_file: str) -> None:
    from tunewise.export.llama_runtime import GgufRuntime

    request = ProbeRequest(**json.loads(Path(request_file).read_text(encoding="utf-8")))
    try:
        with GgufRuntime(Path(gguf_file), n_ctx=request.n_ctx) as runtime:
            arrays = {f"logits_{i}": runtime.logits(ids) for i, ids in enumerate(request.sequences)}
            stops = set(request.stops)
            lists = {
                "greedy": [runtime.greedy(p, request.greedy_tokens, stops) for p in request.prompts],
                "tokenized": [runtime.tokenize(t) for t in request.texts],
                "task_generations": None,
            }
            if request.choices is not None:
                arrays["choice_scores"] = runtime.choice_logprobs(request.task_prompts, request.choices)
            elif request.task_max_new_tokens:
                task_stops = set(request.task_stops if request.task_stops is not None else request.stops)
                lists["task_generations"] = [
                    runtime.greedy(p, request.task_max_new_tokens, task_stops) for p in request.task_prompts
                ]
    except ExportError as exc:
        (Path(result_file).parent / "probe-error.txt").write_text(str(exc), encoding="utf-8")
        raise SystemExit(3) from None
    # np.savez appends .npz to a name without it; the name has it, so the file is exactly result_file.
    np.savez(result_file, lists=np.array(json.dumps(lists)), **arrays)


def _read_result(result_file: Path) -> ProbeResult:
    with np.load(result_file, allow_pickle=False) as data:  # written by our child; still never unpickled
        lists = json.loads(str(data["lists"]))
        logits = [data[f"logits_{i}"] for i in range(sum(k.startswith("logits_") for k in data.files))]
        scores = data["choice_scores"] if "choice_scores" in data.files else None
    return ProbeResult(logits, lists["greedy"], lists["tokenized"], scores, lists["task_generations"])


if __name__ == "__main__":
    main(sys.argv[1:])
