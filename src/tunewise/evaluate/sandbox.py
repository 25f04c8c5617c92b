"""Run generated code: a separate process in a temporary directory, with time, memory, CPU and file-size
limits, no network (a fresh network namespace where the OS allows it, and sockets disabled), and
process spawning, deletion and writes outside the working directory disabled.

This guards against accidents and careless code, not a determined attacker: run untrusted model
output on a machine you can afford to lose, and only with --allow-code-execution.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

GUARD = r"""
import builtins as _b, io as _io, os as _os, shutil as _sh, socket as _so, subprocess as _sp
_cwd = _os.path.realpath(_os.getcwd())
_real_open = _b.open
def _open(file, mode="r", *args, **kwargs):
    if isinstance(file, (str, bytes, _os.PathLike)) and any(c in mode for c in "wax+"):
        path = _os.path.realpath(_os.fsdecode(file))
        if path != _cwd and not path.startswith(_cwd + _os.sep):
            raise PermissionError(f"sandbox: no writing outside the working directory: {path}")
    return _real_open(file, mode, *args, **kwargs)
_b.open = _io.open = _open
def _disabled(*args, **kwargs):
    raise PermissionError("sandbox: disabled")
for _name in ("fork", "forkpty", "system", "popen", "kill", "killpg", "execv", "execve", "execvp", "execvpe",
              "execl", "execle", "execlp", "spawnv", "spawnve", "spawnl", "posix_spawn", "posix_spawnp",
              "remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace", "truncate", "open",
              "chmod", "chown", "putenv", "setuid", "symlink", "link"):
    if hasattr(_os, _name):
        setattr(_os, _name, _disabled)
_sp.Popen = _sp.run = _sp.call = _sp.check_call = _sp.check_output = _disabled
_sh.rmtree = _sh.move = _sh.copy = _sh.copyfile = _disabled
_so.socket = _so.create_connection = _so.socketpair = _disabled
del _name
"""


@dataclass(frozen=True)
class ExecResult:
    status: str  # "passed" | "failed" | "timeout"
    seconds: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.cache
def _network_namespace_available() -> bool:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--net", "--fork", "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


def _limits(timeout: float, memory_mb: int, file_mb: int) -> None:
    cpu = int(timeout) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb << 20, file_mb << 20))
    resource.setrlimit(resource.RLIMIT_NPROC, (64, 64))  # not enforced for root: fork is disabled too
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_program(program: str, timeout: float = 5.0, memory_mb: int = 1024, file_mb: int = 16) -> ExecResult:
    """Run `program` (Python source) with the guard; exit code 0 within the time limit is a pass."""
    with tempfile.TemporaryDirectory(prefix="tunewise-exec-") as workdir:
        script = os.path.join(workdir, "program.py")
        with open(script, "w", encoding="utf-8") as fh:
            fh.write(GUARD + "\n" + program)
        command = [sys.executable, "-I", script]
        if _network_namespace_available():
            command = ["unshare", "--net", "--fork", "--kill-child", *command]
        started = time.monotonic()
        process = subprocess.Popen(
            command,
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "HOME": workdir, "PYTHONHASHSEED": "0"},
            start_new_session=True,
            preexec_fn=lambda: _limits(timeout, memory_mb, file_mb),
        )
        try:
            _, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the whole session: children too
            process.communicate()
            return ExecResult("timeout", time.monotonic() - started, f"killed after {timeout:.1f} s")
        seconds = time.monotonic() - started
        if process.returncode == 0:
            return ExecResult("passed", seconds)
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit code {process.returncode}"]
        return ExecResult("failed", seconds, tail[0][:300])
