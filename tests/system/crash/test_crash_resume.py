"""Crash loop: SIGKILL a tiny-model `tunewise train` at 40+ seeded random moments, many inside checkpoint writes,
resume each time (the plain command resumes an unfinished run of the same config), and compare the final adapter
and every logged step with an uninterrupted run. `make test-slow` (pytest -m slow); add -s for the figures."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from support.resume import write_train_config
from support.tiny import make_classification_rows, write_jsonl
from tunewise.core.processes import process_alive

pytestmark = pytest.mark.slow

SEED = 20240607
MIN_KILLS = 40
MAX_ATTEMPTS = 150
ZYGOTE = Path(__file__).with_name("zygote.py")
PHASES = ("transformers-write", "before-manifest", "before-rename", "after-rename", "adapter-write")
TIMING_KEYS = ("time", "train_loss")  # train_loss: transformers' mean over the steps of the last train() call


@dataclass
class Attempt:
    round: int
    mode: str  # "time" (killed after a random delay) or a checkpoint-write phase it was held in
    delay: float | None
    at: int | None
    killed: bool
    mid_write: bool  # a staging directory existed when the process died
    step_at_kill: int | None
    resumed_from: str | None  # what this attempt's log says it continued from


class Zygote:
    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ZYGOTE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert self._read().get("ready")

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        assert line, "the fork server died"
        return json.loads(line)

    def ask(self, **request: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(timeout=30)


def _config(directory: Path, model: Path, data: dict[str, Path]) -> Path:
    # 36 optimizer steps over 3 epochs, a checkpoint every 3, the loss logged every 2 (so checkpoints fall between
    # logging steps), gradient accumulation, LoRA dropout 0.1: every piece of state matters.
    output = {"dir": str(directory / "runs"), "name": "crash"}
    return write_train_config(directory, model, data, eval_steps=3, logging_steps=2, sections={"output": output})


def _completed(runs: Path) -> list[Path]:
    if not runs.is_dir():
        return []
    found = []
    for path in runs.iterdir():
        try:
            if json.loads((path / "run.json").read_text())["status"] == "completed":
                found.append(path)
        except (OSError, ValueError, KeyError):
            continue
    return found


def _has_completed(runs: Path) -> bool:
    return bool(_completed(runs))


def _completed_run(runs: Path) -> Path:
    done = _completed(runs)
    assert len(done) == 1, [p.name for p in runs.iterdir()]
    return done[0]


def _outcome(run: Path) -> tuple[str, list[dict[str, Any]]]:
    rows = []
    for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("event") == "resume":
            continue
        rows.append({k: v for k, v in row.items() if k not in TIMING_KEYS and not k.endswith(("runtime", "_second"))})
    digest = hashlib.sha256((run / "adapter" / "adapter_model.safetensors").read_bytes()).hexdigest()
    return digest, rows


def _staging(runs: Path) -> list[Path]:
    return [p for p in runs.rglob(".tmp-*")]


def _last_step(runs: Path) -> int | None:
    steps = []
    for metrics in runs.glob("*/metrics.jsonl"):
        for line in metrics.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                steps.append(int(json.loads(line).get("step", 0)))
            except (ValueError, TypeError, AttributeError):
                continue
    return max(steps, default=None)


def _resumed_from(log: Path) -> str | None:
    text = log.read_text(encoding="utf-8", errors="replace")
    if "resuming training from" in text:
        return text.split("resuming training from", 1)[1].split("(step", 1)[1].split(")", 1)[0].strip()
    if "training starts again at step 0" in text:
        return "0 (no checkpoint yet)"
    return None


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = make_classification_rows(150, seed=1)
    data = {
        "train": write_jsonl(tmp_path / "data" / "train.jsonl", rows[:96]),
        "val": write_jsonl(tmp_path / "data" / "val.jsonl", rows[96:120]),
        "test": write_jsonl(tmp_path / "data" / "test.jsonl", rows[120:]),
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    started = time.time()

    # The reference: one uninterrupted run, a real `tunewise` process.
    ref_config = _config(tmp_path / "reference", tiny_model_dir, data)
    done = subprocess.run(
        [sys.executable, "-m", "tunewise.cli", "train", str(ref_config)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reference = _outcome(_completed_run(tmp_path / "reference" / "runs"))

    zygote = Zygote(env)
    try:
        # An uninterrupted forked run: equal to the reference (forking changes nothing), and its duration.
        timing_config = _config(tmp_path / "timing", tiny_model_dir, data)
        t0 = time.time()
        pid = zygote.ask(cmd="run", args=["train", str(timing_config)], log=str(tmp_path / "timing.log"))["pid"]
        assert zygote.ask(cmd="wait", pid=pid)["status"] == 0, (tmp_path / "timing.log").read_text()[-3000:]
        duration = time.time() - t0
        assert _outcome(_completed_run(tmp_path / "timing" / "runs")) == reference

        rng = random.Random(SEED)
        attempts: list[Attempt] = []
        rounds: list[dict[str, Any]] = []
        round_no = 0
        while sum(a.killed for a in attempts) < MIN_KILLS and len(attempts) < MAX_ATTEMPTS:
            round_no += 1
            directory = tmp_path / f"round-{round_no}"
            config = _config(directory, tiny_model_dir, data)
            runs = directory / "runs"
            while len(attempts) < MAX_ATTEMPTS:
                n = len(attempts)
                log = directory / f"attempt-{n}.log"
                pause = None
                delay: float | None = None
                if n % 3 == 1:  # every third attempt is held inside a checkpoint write, the phases in turn
                    phase = PHASES[(n // 3) % len(PHASES)]
                    at = 1 if phase == "adapter-write" else rng.randint(1, 2)
                    pause = {"phase": phase, "at": at, "marker": str(directory / f"held-{n}")}
                else:
                    delay = rng.uniform(0.0, duration)
                pid = zygote.ask(cmd="run", args=["train", str(config)], log=str(log), pause=pause)["pid"]
                deadline = time.time() + (delay if delay is not None else duration * 3 + 30)
                while time.time() < deadline and process_alive(pid):
                    if pause and Path(pause["marker"]).exists():
                        break
                    time.sleep(0.005)
                killed = process_alive(pid)
                if killed:
                    os.kill(pid, signal.SIGKILL)
                status = zygote.ask(cmd="wait", pid=pid)["status"]
                assert status in (0, -signal.SIGKILL), log.read_text()[-3000:]
                killed = status == -signal.SIGKILL
                attempts.append(
                    Attempt(
                        round_no,
                        pause["phase"] if pause else "time",
                        round(delay, 3) if delay is not None else None,
                        pause["at"] if pause else None,
                        killed,
                        killed and bool(_staging(runs)) if runs.is_dir() else False,
                        _last_step(runs) if runs.is_dir() else None,
                        _resumed_from(log),
                    )
                )
                if not killed or _has_completed(runs):  # killed after run.json said completed: done too
                    break
            if not runs.is_dir() or not any(p.is_dir() for p in runs.iterdir()):
                continue
            run = _completed_run(runs)
            outcome = _outcome(run)
            leftovers = _staging(runs)
            rounds.append(
                {
                    "round": round_no,
                    "kills": sum(a.killed for a in attempts if a.round == round_no),
                    "match": outcome == reference,
                    "adapter_match": outcome[0] == reference[0],
                    "staging_left": [str(p) for p in leftovers],
                }
            )
    finally:
        zygote.close()

    kills = [a for a in attempts if a.killed]
    figures = {
        "kill_points": len(kills),
        "killed_mid_checkpoint_write": sum(a.mid_write for a in kills),
        "held_in_phase": {p: sum(a.mode == p for a in kills) for p in PHASES},
        "resumes": sum(a.resumed_from is not None for a in attempts),
        "resumed_from_a_checkpoint": sum(
            a.resumed_from is not None and "no checkpoint" not in a.resumed_from for a in attempts
        ),
        "rounds": len(rounds),
        "mismatches": sum(not r["match"] for r in rounds),
        "seconds": round(time.time() - started, 1),
        "reference_run_seconds_forked": round(duration, 2),
    }
    print("\ncrash loop:", json.dumps(figures, indent=1))
    for attempt in attempts:
        print(json.dumps(asdict(attempt)))
    report = os.environ.get("TUNEWISE_CRASH_REPORT")
    if report:
        Path(report).write_text(
            json.dumps({"figures": figures, "attempts": [asdict(a) for a in attempts], "rounds": rounds}, indent=1)
        )
    assert len(kills) >= MIN_KILLS
    assert figures["killed_mid_checkpoint_write"] >= 5
    assert figures["mismatches"] == 0, rounds
    assert all(not r["staging_left"] for r in rounds), rounds
    assert rounds and all(r["match"] for r in rounds)
