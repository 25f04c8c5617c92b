"""Run generated code confined by the operating system (bubblewrap), not by Python-level guards.

Each program runs in fresh user, PID, network, IPC, UTS and cgroup namespaces (bwrap), as a non-root host user
with no capabilities, no_new_privs and no further user namespaces. Its filesystem is a read-only root holding only
/usr, the /bin and /lib links, /etc/ld.so.cache and the Python installation; /work (the working folder), /tmp and
/dev/shm are private size-capped tmpfs, so nothing it writes reaches the host and no host file outside those
read-only paths (home folders, the project, /etc, /root) exists for it. /proc shows only its own processes. Limits:
CPU, address space, file size, process count, no core dumps; at the wall-clock timeout the whole PID namespace is
killed, and when the program exits, anything it left running dies with it.

Not enforced: total memory across its processes (each process is capped, their number too), CPU share, and kernel
attack surface (no seccomp filter). Without a working bwrap code is refused unless `allow_unconfined=True`, which
keeps only the limits and a process-group kill: no isolation at all.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from tunewise.errors import ConfigError

NOBODY = 65534  # the kernel's overflow uid/gid: owns nothing on the host
TMPFS_BYTES = 64 << 20  # each of /work, /tmp, /dev/shm: tmpfs lives in RAM, so cap it
MAX_PROCESSES = 32  # per sandbox (RLIMIT_NPROC counts per user namespace, so other processes don't eat into it)
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}

# Sets the limits inside the sandbox, then runs the program as __main__. RLIMIT_NPROC is set here, after the
# user namespace exists, so that it counts only this sandbox's processes.
BOOT = r"""
import resource, runpy, sys
cpu, memory, size, processes = map(int, sys.argv[1:5])
limits = {resource.RLIMIT_CPU: cpu, resource.RLIMIT_AS: memory, resource.RLIMIT_FSIZE: size, resource.RLIMIT_CORE: 0}
if processes:
    limits[resource.RLIMIT_NPROC] = processes
for which, value in limits.items():
    resource.setrlimit(which, (value, value))
sys.argv = sys.argv[5:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

# Root only: bind the Python installation onto host-visible empty folders in a private mount namespace (the
# installation may sit under /root, which the unprivileged sandbox user cannot traverse), then become nobody
# and exec bwrap. bwrap run by root would map the sandbox onto host uid 0: still root for uid-based checks
# such as /proc/sys writes and exempt from RLIMIT_NPROC.
AS_NOBODY = (
    'while [ "$1" != -- ]; do mount --bind -o ro "$1" "$2" || exit 125; shift 2; done; shift; '
    f'exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups "$@"'
)
# Unconfined programs die with tunewise where setpriv exists (bwrap's --die-with-parent does this when confined).
DIE_WITH_US = ["setpriv", "--pdeathsig", "SIGKILL"]

UNAVAILABLE = (
    "generated code must run confined by bubblewrap, which {why}: install it (apt-get install bubblewrap) "
    "or pass --allow-unconfined-code to run model-written code without any isolation"
)


@dataclass(frozen=True)
class ExecResult:
    status: str  # "passed" | "failed" | "timeout"
    seconds: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _python() -> tuple[str, list[str]]:
    """The base interpreter (not the venv's, whose pyvenv.cfg and site-packages stay outside) and its folders."""
    interpreter = os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable)
    found = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix, os.path.dirname(interpreter))}
    found = {p for p in found if p != "/usr" and not p.startswith("/usr/")}  # /usr is bound whole
    return interpreter, sorted(p for p in found if not any(p.startswith(o + "/") for o in found))


def _bwrap_command(bwrap: str, binds: list[tuple[str, str]], program_fd: int, info_fd: int) -> list[str]:
    command = [
        bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
        "--clearenv", "--cap-drop", "ALL", "--info-fd", str(info_fd), "--ro-bind", "/usr", "/usr",
    ]  # fmt: skip
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):  # merged-/usr links or real folders
        if os.path.islink(name):
            command += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            command += ["--ro-bind", name, name]
    command += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for source, target in binds:
        command += ["--ro-bind", source, target]
    command += ["--dev", "/dev", "--proc", "/proc"]
    for folder in ("/dev/shm", "/tmp", "/work"):
        command += ["--size", str(TMPFS_BYTES), "--tmpfs", folder]
    command += ["--remount-ro", "/dev"]  # bwrap's /dev is an uncapped tmpfs: files there would fill host memory
    command += ["--ro-bind-data", str(program_fd), "/work/program.py", "--chdir", "/work"]
    for key, value in {**ENV, "HOME": "/work"}.items():
        command += ["--setenv", key, value]
    return [*command, "--remount-ro", "/"]


def _execute(program: str, timeout: float, memory_mb: int, file_mb: int, confined: bool) -> ExecResult:
    interpreter, roots = _python()
    limits = [str(int(timeout) + 1), str(memory_mb << 20), str(file_mb << 20), str(MAX_PROCESSES if confined else 0)]
    with tempfile.TemporaryDirectory(prefix="tunewise-exec-") as folder, tempfile.TemporaryFile() as stderr:
        script = os.path.join(folder, "program.py")
        with open(script, "w", encoding="utf-8") as fh:
            fh.write(program)
        info_read, info_write = os.pipe()
        program_fd = os.open(script, os.O_RDONLY)
        if confined:
            bwrap = shutil.which("bwrap") or "bwrap"
            binds = [(root, root) for root in roots]
            prefix: list[str] = []
            if os.geteuid() == 0:
                mounts = []
                for i, root in enumerate(roots):
                    os.mkdir(empty := os.path.join(folder, str(i)))
                    mounts += [root, empty]
                    binds[i] = (empty, root)
                os.chmod(folder, 0o755)  # so that nobody can reach the mount points
                prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c", AS_NOBODY, "sh", *mounts, "--"]
            argv = [*prefix, *_bwrap_command(bwrap, binds, program_fd, info_write), interpreter, "-I", "-c", BOOT]
            argv += [*limits, "/work/program.py"]
        else:
            argv = [*(DIE_WITH_US if shutil.which("setpriv") else []), interpreter, "-I", "-c", BOOT, *limits, script]
        started = time.monotonic()
        try:
            process = subprocess.Popen(
                argv,
                cwd="/" if confined else folder,  # "/": the shell of the root path would export PWD=folder
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # unused, and a pipe would let a chatty program fill our memory
                stderr=stderr,  # a file: RLIMIT_FSIZE caps it
                env=dict(ENV),  # bwrap's own environment is readable in the sandbox as /proc/1/environ
                start_new_session=True,
                pass_fds=(program_fd, info_write) if confined else (),
            )
        except BaseException:
            os.close(info_read)
            raise
        finally:
            os.close(program_fd)
            os.close(info_write)
        try:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill(process, info_read)
                return ExecResult("timeout", time.monotonic() - started, f"killed after {timeout:.1f} s")
        finally:
            os.close(info_read)
        seconds = time.monotonic() - started
        if process.returncode == 0:
            return ExecResult("passed", seconds)
        stderr.seek(max(0, os.fstat(stderr.fileno()).st_size - 4096))
        lines = stderr.read().decode("utf-8", "replace").strip().splitlines()
        return ExecResult("failed", seconds, (lines[-1] if lines else f"exit code {process.returncode}")[:300])


def _kill(process: subprocess.Popen, info_read: int) -> None:
    """SIGKILL the sandbox's PID 1, which takes its whole PID namespace down before bwrap exits; then the group."""
    os.set_blocking(info_read, False)
    # no info (unconfined, or bwrap not that far yet): the process group below
    with contextlib.suppress(OSError, ValueError, KeyError, subprocess.TimeoutExpired):
        os.kill(int(json.loads(os.read(info_read, 4096))["child-pid"]), signal.SIGKILL)
        process.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@functools.cache
def confinement_problem() -> str | None:
    """Why code cannot run confined here (None: it can), found once by running a trivial program in the sandbox."""
    if sys.platform != "linux":
        return UNAVAILABLE.format(why="needs Linux")
    if shutil.which("bwrap") is None:
        return UNAVAILABLE.format(why="is not installed")
    tools = ("setpriv", "unshare", "mount") if os.geteuid() == 0 else ()
    if missing := [tool for tool in tools if shutil.which(tool) is None]:
        return UNAVAILABLE.format(why=f"needs {', '.join(missing)} (util-linux) beside it when run as root")
    probe = _execute("import sys\nassert sys.flags.isolated\n", 20.0, 256, 1, confined=True)
    if not probe.passed:
        why = f"cannot create a sandbox here ({probe.detail}; it needs unprivileged user namespaces)"
        return UNAVAILABLE.format(why=why)
    return None


def run_program(
    program: str, timeout: float = 5.0, memory_mb: int = 1024, file_mb: int = 16, *, allow_unconfined: bool = False
) -> ExecResult:
    """Run `program` (Python source) confined; exit code 0 within the time limit is a pass.

    Without a working bubblewrap this raises ConfigError, unless `allow_unconfined` is set, in which case the program
    runs with resource limits only.
    """
    problem = confinement_problem()
    if problem is not None and not allow_unconfined:
        raise ConfigError(problem)
    return _execute(program, timeout, memory_mb, file_mb, confined=problem is None)
