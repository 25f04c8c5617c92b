"""Fork server for the crash loop: imports tunewise's training stack once, then forks one child per attempt.

Each child is a separate process running `tunewise <args>` exactly as the console script does; the test kills it
with SIGKILL. Forking skips the ~7 s of imports per attempt, which is what makes 20+ kills fit in minutes (the
uninterrupted reference run is a real `tunewise` subprocess, so forking itself is also checked).

Protocol (JSON lines on stdin/stdout):
  {"cmd": "run", "args": [...], "log": path, "pause": {"phase": ..., "at": n, "marker": path} | null} -> {"pid": n}
  {"cmd": "wait", "pid": n} -> {"status": exit code or -signal}
A pause makes the child stop for a long time inside the n-th checkpoint write of the given phase (after touching
`marker`), so the test can kill it exactly there.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # no thread pools before fork
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import Trainer

import tunewise.core.safeio as safeio
import tunewise.pipeline  # noqa: F401  (the imports a child would otherwise pay for)
import tunewise.train.checkpoint as checkpoint
import tunewise.train.resumable as resumable
import tunewise.train.trainer as trainer_module
from tunewise.cli import app

PHASES = ("transformers-write", "before-manifest", "before-rename", "after-rename", "adapter-write")


def _pause_in(phase: str, at: int, marker: str) -> None:
    """Wrap the function where `phase` happens: on its `at`-th call, touch `marker` and sleep (to be killed)."""
    calls = {"n": 0}

    def hold(match: bool = True) -> None:
        if not match:
            return
        calls["n"] += 1
        if calls["n"] == at:
            Path(marker).write_text(phase)
            time.sleep(600)

    if phase == "transformers-write":  # the adapter is in the staging dir, the optimizer not yet
        original = Trainer._save_optimizer_and_scheduler

        def patched(self: Any, output_dir: str) -> None:
            hold()
            original(self, output_dir)

        Trainer._save_optimizer_and_scheduler = patched
    elif phase == "before-manifest":
        original_manifest = checkpoint.write_manifest

        def manifest(staged: Path, step: int) -> None:
            hold()
            original_manifest(staged, step)

        checkpoint.write_manifest = manifest
    elif phase == "before-rename":  # a checkpoint staged, not yet renamed into place
        original_publish = checkpoint.publish

        def publish(staged: Path, final: Path) -> None:
            hold(final.name != "adapter")
            original_publish(staged, final)

        checkpoint.publish = publish
    elif phase == "adapter-write":  # the final adapter staged, not yet swapped in (core.safeio's directory save)
        original_publish_dir = safeio.publish_dir

        def publish_dir(staged: Path, final: Path) -> None:
            hold(final.name == "adapter")
            original_publish_dir(staged, final)

        safeio.publish_dir = publish_dir
    elif phase == "after-rename":  # published, older ones not yet rotated away
        original_rotate = resumable.rotate_checkpoints

        def rotate(*args: Any, **kwargs: Any) -> None:
            hold()
            original_rotate(*args, **kwargs)

        resumable.rotate_checkpoints = rotate
    else:
        raise ValueError(phase)


def _child(args: list[str], log: str, pause: dict[str, Any] | None) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdin.close()
    code = 0
    try:
        if pause:
            _pause_in(pause["phase"], int(pause["at"]), pause["marker"])
        app(args=args, prog_name="tunewise")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    assert trainer_module is not None
    out = sys.stdout
    print(json.dumps({"ready": True}), file=out, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["cmd"] == "run":
            pid = os.fork()
            if pid == 0:
                _child(request["args"], request["log"], request.get("pause"))
            reply: dict[str, Any] = {"pid": pid}
        elif request["cmd"] == "wait":
            _, status = os.waitpid(int(request["pid"]), 0)
            reply = {"status": os.waitstatus_to_exitcode(status)}
        else:
            reply = {"error": f"unknown command {request['cmd']}"}
        print(json.dumps(reply), file=out, flush=True)


if __name__ == "__main__":
    main()
