"""A measured probe of a LoRA run: a few real optimizer steps on the user's own encoded data, with tunewise's
training path, in a fresh child process, so the peak memory is a training process's own and a crash or an
out-of-memory kill is a reason to report, not the end of the estimate. Also this machine's other figures the
estimate needs: the memory available to a run and a matmul throughput.

The child loads the model as `tunewise run` does, adds LoRA (`add_lora`), takes the collator and loss of
`training_path` (packing, fused LoRA), enables gradient checkpointing when configured, and steps torch's AdamW with
the config's learning rate and weight decay, each step `grad_accum` micro-batches, the gradient clipped to
train.max_grad_norm, as the Trainer does. Step 1 carries the heaviest micro-batch (the peak), with AdamW's state
already allocated so the peak holds everything a later step holds; the later steps time typical batches.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunewise.config import Config

TIMEOUT_S = 1800  # a stuck child (swapping, a hung kernel) must not hold the estimate forever
Batch = list[dict[str, list[int]]]  # one micro-batch: examples with input_ids and labels


@dataclass
class ProbeResult:
    """What the child measured. Bytes are resident memory on a CPU, allocated memory on a GPU."""

    steps: int
    device: str
    peak_bytes: int  # over the training steps (peak_scope), loading excluded when the counter could be reset
    peak_scope: str  # "training steps" or "whole process"
    load_peak_bytes: int  # the child's peak up to the first step: imports, the model load, LoRA, AdamW state
    start_bytes: int | None  # resident after the imports, before the model loads (CPU)
    ready_bytes: int | None  # resident when the first step starts
    step_seconds: list[float]
    step_tokens: list[int]
    eval_seconds: float | None
    eval_tokens: int

    @property
    def train_seconds_per_token(self) -> float | None:
        """Over the steps after the first (the first pays one-off costs and carries the heaviest batch)."""
        tokens = sum(self.step_tokens[1:])
        return sum(self.step_seconds[1:]) / tokens if tokens else None

    @property
    def eval_seconds_per_token(self) -> float | None:
        return self.eval_seconds / self.eval_tokens if self.eval_seconds and self.eval_tokens else None

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "train_seconds_per_token": self.train_seconds_per_token,
            "eval_seconds_per_token": self.eval_seconds_per_token,
        }


@dataclass
class ProbeOutcome:
    """The probe's figures, or why there are none."""

    result: ProbeResult | None = None
    failure: str | None = None
    wall_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "result": self.result.to_json() if self.result else None,
            "failure": self.failure,
            "wall_seconds": round(self.wall_seconds, 2),
        }


def run_probe(
    config: Config, steps: list[list[Batch]], eval_batch: Batch, pad_token_id: int, timeout: float = TIMEOUT_S
) -> ProbeOutcome:
    """Run `steps` (each a list of micro-batches, the first holding the heaviest) and one timed forward of
    `eval_batch` in a child; a failure comes back as `ProbeOutcome.failure`, one line."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tunewise-probe-") as folder:
        request, result = Path(folder) / "request.json", Path(folder) / "result.json"
        payload = {
            "config": _with_absolute_model_path(config).model_dump(mode="json"),
            "steps": steps,
            "eval_batch": eval_batch,
            "pad_token_id": pad_token_id,
        }
        request.write_text(json.dumps(payload), encoding="utf-8")
        # A fresh interpreter running this module, not multiprocessing: fork would share the parent's memory,
        # spawn would re-run the caller's script. -P keeps the working directory off sys.path (a stray
        # `tunewise.py` there is never imported) and keeps the caller's environment (user site, PYTHONPATH,
        # TUNEWISE_CACHE), so the child finds the packages and the caches the caller uses; it runs in the
        # caller's working directory, where the config's relative paths mean what they meant there.
        command = [sys.executable, "-P", "-m", __name__, str(request), str(result)]
        try:
            child = subprocess.run(
                command, capture_output=True, text=True, errors="replace", timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            return ProbeOutcome(failure=f"the probe did not finish within {timeout:.0f} s", wall_seconds=timeout)
        wall = time.perf_counter() - started
        if not result.is_file():
            return ProbeOutcome(failure=_death(child.returncode, child.stderr), wall_seconds=wall)
        try:
            answer = json.loads(result.read_text(encoding="utf-8", errors="replace"))
        except ValueError:  # the child died while writing it
            return ProbeOutcome(failure=_death(child.returncode, child.stderr), wall_seconds=wall)
    if not isinstance(answer, dict) or not (answer.get("failure") or isinstance(answer.get("result"), dict)):
        return ProbeOutcome(failure="the probe wrote an unreadable result", wall_seconds=wall)
    if answer.get("failure"):
        return ProbeOutcome(failure=str(answer["failure"]), wall_seconds=wall)
    return ProbeOutcome(result=ProbeResult(**answer["result"]), wall_seconds=wall)


def _with_absolute_model_path(config: Config) -> Config:
    """model.name as an absolute path when it names a local file or folder, so it cannot turn into a hub id."""
    from tunewise.models.embedded import EMBEDDED

    local = Path(config.model.name).expanduser()
    if config.model.name in EMBEDDED or not local.exists():  # an alias wins over a folder of the same name
        return config
    return config.model_copy(update={"model": config.model.model_copy(update={"name": str(local.resolve())})})


def _death(code: int, stderr: str) -> str:
    if code < 0:
        if -code == signal.SIGKILL:
            return "the probe was killed (SIGKILL), most likely by the out-of-memory killer: the run does not fit"
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the probe crashed ({name})"
    last = next((line for line in reversed(stderr.splitlines()) if line.strip()), "")
    return f"the probe exited with code {code}" + (f": {last.strip()[:300]}" if last else "")


def main(argv: list[str]) -> None:
    """The child: `python -P -m tunewise.train.probe REQUEST RESULT`."""
    from tunewise.train.callbacks import resident_bytes  # the child only: the parent stays light

    request_file, result_file = Path(argv[0]), Path(argv[1])
    start = resident_bytes()
    request = json.loads(request_file.read_text(encoding="utf-8"))
    try:
        result = _probe(Config.model_validate(request["config"]), request, start)
        answer: dict[str, Any] = {"result": asdict(result)}
    except Exception as exc:  # any failure is the probe's finding, reported in one line
        answer = {"failure": _reason(exc)}
    result_file.write_text(json.dumps(answer), encoding="utf-8")


def _reason(exc: BaseException) -> str:
    from tunewise.errors import TunewiseError

    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, MemoryError) or "out of memory" in text.lower() or "can't allocate memory" in text:
        return f"out of memory during the probe ({text[:200]}): the run does not fit"
    return text if isinstance(exc, TunewiseError) else f"the probe failed: {type(exc).__name__}: {text[:300]}"


def _probe(config: Config, request: dict[str, Any], start: int | None) -> ProbeResult:
    import torch

    from tunewise.models import load_model
    from tunewise.train.callbacks import peak_memory_bytes, reset_peak_memory, resident_bytes
    from tunewise.train.trainer import add_lora, precision_flags, training_path

    _quiet()
    device = training_device(config.model.device)
    model = load_model(config.model).model  # on model.device, as the loader places it
    flags = precision_flags(config.train.precision, torch.device(device))
    half = torch.bfloat16 if flags["bf16"] else torch.float16 if flags["fp16"] else None
    peft_model = add_lora(model, config)
    collator, loss_fn = training_path(peft_model, config.train, int(request["pad_token_id"]))
    if config.train.gradient_checkpointing:  # as the Trainer enables it (training_arguments)
        peft_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.train.lr, weight_decay=config.train.weight_decay)
    for parameter in trainable:  # AdamW allocates its state at the first step: before the peak, as in a later step
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    peft_model.train()
    load_peak, ready = peak_memory_bytes(), resident_bytes()
    scope = "training steps" if reset_peak_memory() else "whole process"
    seconds, tokens = [], []
    for step in request["steps"]:
        batches = [collator(micro) for micro in step]
        items = sum(int((b["labels"][..., 1:] != -100).sum()) for b in batches)
        _sync(device)
        began = time.perf_counter()
        for batch in batches:
            with torch.autocast(device, dtype=half or torch.float32, enabled=half is not None):  # as the Trainer's
                loss = _loss(peft_model, batch, loss_fn, items, device)
            loss.backward()
        if config.train.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(trainable, config.train.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        seconds.append(time.perf_counter() - began)
        tokens.append(sum(int(b["input_ids"].numel()) for b in batches))
    peak = peak_memory_bytes()
    eval_seconds, eval_tokens = _time_forward(peft_model, collator, loss_fn, request["eval_batch"], device)
    return ProbeResult(
        len(seconds), device, peak, scope, load_peak, start, ready, seconds, tokens, eval_seconds, eval_tokens
    )


def _loss(model: Any, batch: dict[str, Any], loss_fn: Any, items: int, device: str) -> Any:
    """One micro-batch's loss as the Trainer computes it; the outputs are dropped on return, as in compute_loss."""
    inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
    labels = inputs.pop("labels")
    if loss_fn is None:  # padded batches: the model's own loss over full logits
        return model(**inputs, labels=labels).loss
    return loss_fn(model(**inputs), labels, items)


def _time_forward(model: Any, collator: Any, loss_fn: Any, examples: Batch, device: str) -> tuple[float | None, int]:
    """Seconds of one validation forward (no gradient), after an untimed one."""
    import torch

    if not examples:
        return None, 0
    batch = collator(examples)
    model.eval()
    with torch.no_grad():
        _loss(model, batch, loss_fn, 1, device)
        _sync(device)
        began = time.perf_counter()
        _loss(model, batch, loss_fn, 1, device)
        _sync(device)
    return time.perf_counter() - began, int(batch["input_ids"].numel())


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _quiet() -> None:
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()


def training_device(setting: str = "auto") -> str:
    """Where `tunewise run` trains with `model.device: setting`: cuda, mps or cpu."""
    from tunewise.models.device import resolve_device

    return resolve_device(setting).type


def available_memory_bytes(device: str) -> int | None:
    """Memory a new training process can use: on a GPU the free device memory; on a CPU MemAvailable, or what the
    cgroup's limit leaves when that is lower (a container)."""
    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    available = None
    try:
        meminfo = Path("/proc/meminfo").read_text(encoding="ascii")
        available = (
            int(next(line.split()[1] for line in meminfo.splitlines() if line.startswith("MemAvailable"))) * 1024
        )
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    left = _cgroup_left()
    if left is not None:
        available = left if available is None else min(available, left)
    return available


def _cgroup_left() -> int | None:
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit = Path(limit_file).read_text(encoding="ascii").strip()
            usage = int(Path(usage_file).read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:  # "max" or a huge number: no limit
            return max(int(limit) - usage, 0)
    return None


def matmul_flops_per_second(device: str, dtype: str, rows: int, inner: int, cols: int, budget_s: float = 0.3) -> float:
    """FLOP/s of [rows, inner] @ [inner, cols] matmuls in `dtype` on `device`, timed for about `budget_s` after one
    untimed call: the throughput the rough time divides by."""
    import torch

    kind = getattr(torch, dtype)
    a = torch.randn(rows, inner, dtype=kind, device=device)
    b = torch.randn(inner, cols, dtype=kind, device=device)
    torch.mm(a, b)
    _sync(device)
    calls, began = 0, time.perf_counter()
    while time.perf_counter() - began < budget_s:
        torch.mm(a, b)
        calls += 1
    _sync(device)
    elapsed = time.perf_counter() - began
    return 2 * rows * inner * cols * calls / elapsed if elapsed > 0 else math.inf


if __name__ == "__main__":
    main(sys.argv[1:])
