"""Generated code is confined by the OS: every escape below fails, and the harmless ones are shown to succeed
when the same program runs unconfined (so each test program really is an escape, not a typo that fails)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tunewise.errors import ConfigError
from tunewise.evaluate import sandbox
from tunewise.evaluate.code_permission import CodeGrant
from tunewise.evaluate.sandbox import ExecResult, confinement_problem, run_program
from tunewise.evaluate.tasks.code import CodeTask

TIMEOUT = 3.0
PROJECT = Path(__file__).resolve().parents[2]
confined = pytest.mark.skipif(
    confinement_problem() is not None, reason=f"no working bubblewrap here: {confinement_problem()}"
)


def run_unconfined(program: str, **kwargs) -> ExecResult:
    """The control: the same program with no sandbox (only for escapes that are harmless on the host)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sandbox, "confinement_problem", lambda: "disabled for this control run")
        return run_program(program, allow_unconfined=True, **kwargs)


def host_processes_with(token: str, grace: float = 2.0) -> list[int]:
    """Host PIDs whose command line holds `token`, after up to `grace` seconds for them to go."""
    deadline = time.monotonic() + grace
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@confined
@pytest.mark.parametrize(
    ("name", "program"),
    [
        ("fork bomb", "import os\nwhile True:\n    os.fork()\n"),
        ("fork bomb via subprocess", "import subprocess, sys\nwhile True:\n    subprocess.Popen([sys.executable])\n"),
        ("infinite loop", "while True:\n    pass\n"),
        ("sleep forever", "import time\ntime.sleep(3600)\n"),
        ("network connect", "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)\n"),
        ("memory hog", "x = bytearray(8 * 1024 ** 3)\n"),
    ],
)
def test_hostile_programs_fail_or_time_out_quickly(name, program):
    start = time.monotonic()
    result = run_program(program, timeout=TIMEOUT)
    assert not result.passed, name
    assert time.monotonic() - start < TIMEOUT + 1, name


@confined
def test_a_correct_program_passes_and_a_wrong_one_fails():
    assert run_program("def add(a, b):\n    return a + b\nassert add(2, 3) == 5\n").passed
    failed = run_program("def add(a, b):\n    return a - b\nassert add(2, 3) == 5, 'wrong sum'\n")
    assert failed.status == "failed" and "wrong sum" in failed.detail
    inside = run_program("open('scratch.txt', 'w').write('fine')\nassert open('scratch.txt').read() == 'fine'\n")
    assert inside.passed  # its own folder (and /tmp) stay writable


@confined
def test_timeout_and_memory_limit():
    timed_out = run_program("while True:\n    pass\n", timeout=1.0)
    assert timed_out.status == "timeout" and timed_out.seconds < 2.0
    hog = run_program("x = bytearray(4 * 1024 ** 3)\n", memory_mb=512)
    assert hog.status == "failed" and hog.detail == "MemoryError"
    big_file = run_program("open('big', 'wb').write(bytes(8 << 20))\n", file_mb=1)
    assert big_file.status == "failed" and "File too large" in big_file.detail


FORK_EXEC = """import _posixsubprocess, os, subprocess
calls = []
real = subprocess._fork_exec
subprocess._fork_exec = lambda *a: calls.append(a) or real(*a)
subprocess.run(['true'])  # only to learn this Python's argument list for fork_exec
args = list(calls[0])
args[0], args[1] = [b'touch', {t!r}.encode()], [b'/usr/bin/touch']
args[12:14] = os.pipe()
os.waitpid(_posixsubprocess.fork_exec(*args), 0)
"""
WRITES = {
    "open": "open({t!r}, 'w').write('x')",
    "io.FileIO": "import io\nio.FileIO({t!r}, 'w').write(b'x')",
    "posix.open": "import posix\nposix.write(posix.open({t!r}, posix.O_WRONLY | posix.O_CREAT), b'x')",
    "os.makedirs": "import os\nos.makedirs({t!r} + '/a/b')",
    "posix.system": "import posix\nassert posix.system('touch ' + {t!r}) == 0",
    "ctypes system": "import ctypes\nassert ctypes.CDLL(None).system(('touch ' + {t!r}).encode()) == 0",
    "_posixsubprocess.fork_exec": FORK_EXEC,
    "posix.execv": "import posix\nposix.execv('/bin/sh', ['sh', '-c', 'touch ' + {t!r}])",
    "subprocess": "import subprocess\nsubprocess.run(['touch', {t!r}], check=True)",
}


@confined
@pytest.mark.parametrize("method", list(WRITES))
def test_writes_never_reach_the_host(method: str, tmp_path: Path):
    token = uuid.uuid4().hex
    targets = [
        tmp_path / "escaped",  # outside the working folder
        Path("/dev/shm") / f"tunewise-escape-{token}",
        Path("/tmp") / f"tunewise-escape-{token}",
        PROJECT / f".tunewise-escape-{token}",
    ]
    try:
        for target in targets:
            run_program(WRITES[method].format(t=str(target)), timeout=TIMEOUT)
            assert not os.path.lexists(target), f"{method} wrote {target} on the host"
    finally:
        for target in targets:  # only if the assertion above failed
            subprocess.run(["rm", "-rf", str(target)], check=False)
    control = tmp_path / "control"
    assert run_unconfined(WRITES[method].format(t=str(control))).passed
    assert control.exists(), f"the {method} program does not write even unconfined"


@confined
def test_deleting_host_files_fails(tmp_path: Path):
    keep = tmp_path / "keep" / "file.txt"
    keep.parent.mkdir()
    keep.write_text("x")
    for program in (f"import shutil\nshutil.rmtree({str(keep.parent)!r})", f"import os\nos.unlink({str(keep)!r})"):
        assert not run_program(program).passed
    assert keep.read_text() == "x"


READS = """import os, sys
readable = []
for path in {paths!r}:
    try:
        isdir = os.path.isdir(path)
        seen = [n for n in os.listdir(path) if n not in {skeleton!r}] if isdir else open(path, 'rb').read()
    except OSError:
        continue
    readable += [(path, seen[:80])] if seen else []
sys.exit(f'READ {{readable}}' if readable else 'BLOCKED')
"""


@confined
def test_host_files_are_invisible(tmp_path: Path):
    token = uuid.uuid4().hex
    secret = tmp_path / "secret.txt"
    secret.write_text(token)
    paths = [str(secret), "/etc/shadow", "/etc/passwd", "/root", "/home", str(Path.home()), str(PROJECT)]
    paths += [str(PROJECT / "pyproject.toml"), "/proc/1/root/etc/shadow"]
    # folders above the Python installation exist in the sandbox as empty mount points, e.g. /root/.pyenv
    skeleton = {part for root in sandbox._python()[1] for part in Path(root).parts}
    result = run_program(READS.format(paths=paths, skeleton=skeleton))
    assert result.detail == "BLOCKED" and token not in result.detail
    linked = f"import os\nos.symlink({str(secret)!r}, 'link')\nprint(open('link').read())\n"  # via its own folder
    assert run_program(linked).status == "failed"
    control = run_unconfined(READS.format(paths=[str(secret)], skeleton=set()))
    assert token in control.detail


@confined
def test_parent_environment_secrets_are_invisible(monkeypatch: pytest.MonkeyPatch):
    token = uuid.uuid4().hex
    monkeypatch.setenv("TUNEWISE_TEST_SECRET", token)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env={**os.environ})
    program = f"""import glob, os, sys
found = [k for k, v in os.environ.items() if {token!r} in v]
for path in glob.glob('/proc/*/environ'):
    try:
        found += [path] if {token!r}.encode() in open(path, 'rb').read() else []
    except OSError:
        pass
sys.exit(f'FOUND {{found}}' if found else 'BLOCKED')
"""
    try:
        assert run_program(program).detail == "BLOCKED"
        assert run_unconfined(program).detail.startswith("FOUND")  # the holder's /proc/PID/environ, on the host
    finally:
        holder.kill()
        holder.wait()


@confined
def test_network_is_unreachable():
    token = uuid.uuid4().hex
    with socket.socket() as server, socket.socket(socket.AF_UNIX) as local:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        local.bind(f"\0tunewise-test-{token}")  # abstract unix sockets: no file to hide, only the net namespace
        local.listen()
        local.setblocking(False)
        port = server.getsockname()[1]
        tcp = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).close()\n"
        unix = f"import socket\nsocket.socket(socket.AF_UNIX).connect('\\0tunewise-test-{token}')\n"
        outside = "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2).close()\n"
        for program in (tcp, unix, outside):
            assert run_program(program, timeout=TIMEOUT).status == "failed"
        for listener in (server, local):
            with pytest.raises(BlockingIOError):
                listener.accept()
        assert run_unconfined(tcp).passed and run_unconfined(unix).passed


@confined
def test_spawning_is_capped_and_everything_dies_with_the_program():
    token = uuid.uuid4().hex
    program = f"""import subprocess, sys
children = []
try:
    for _ in range(200):
        children.append(subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)  # {token}']))
except OSError as exc:
    sys.exit(f'spawned {{len(children)}} ({{exc}})')
"""
    result = run_program(program, timeout=10)
    assert result.status == "failed" and result.detail.startswith("spawned"), result
    assert int(result.detail.split()[1]) < sandbox.MAX_PROCESSES
    assert host_processes_with(token) == []


SURVIVOR = """import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)  # {token}'])
    os._exit(0)
os.wait()
time.sleep(0.5)
assert any({token!r}.encode() in open(f'/proc/{{p}}/cmdline', 'rb').read() for p in os.listdir('/proc') if p.isdigit())
"""


@confined
@pytest.mark.parametrize("ending", ["exits", "times out"])
def test_detached_background_processes_are_killed(ending: str):
    token = uuid.uuid4().hex
    program = SURVIVOR.format(token=token) + ("while True:\n    pass\n" if ending == "times out" else "")
    result = run_program(program, timeout=TIMEOUT)
    assert result.status == ("passed" if ending == "exits" else "timeout"), result  # the survivor did start
    assert host_processes_with(token) == [], "a detached process outlived the sandbox"


@confined
def test_the_sandbox_dies_with_tunewise():
    token = uuid.uuid4().hex
    program = SURVIVOR.format(token=token) + "import time\ntime.sleep(60)\n"
    runner = f"from tunewise.evaluate.sandbox import run_program\nrun_program({program!r}, timeout=60)"
    parent = subprocess.Popen([sys.executable, "-c", runner])
    try:
        deadline = time.monotonic() + 60
        while not host_processes_with(token, grace=0) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert host_processes_with(token, grace=0), "the program never started"
    finally:
        parent.kill()  # SIGKILL: no cleanup code of ours runs
        parent.wait()
    assert host_processes_with(token, grace=5.0) == [], "the sandbox outlived the process that started it"


@confined
def test_host_processes_cannot_be_signalled_traced_or_seen():
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: received.append(1))
    program = f"""import ctypes, os, signal, sys
hits = []
try:
    os.kill({os.getpid()}, signal.SIGUSR1)
    hits.append('kill')
except OSError:
    pass
if ctypes.CDLL(None).ptrace(0x4206, {os.getpid()}, 0, 0) == 0:  # PTRACE_SEIZE: would not stop the target
    hits.append('ptrace')
pids = [p for p in os.listdir('/proc') if p.isdigit()]
hits += ['sees ' + p for p in pids if b'pytest' in open(f'/proc/{{p}}/cmdline', 'rb').read()]
sys.exit(f'HIT {{hits}}' if hits else 'BLOCKED')
"""
    try:
        assert run_program(program).detail == "BLOCKED"
        time.sleep(0.1)
        assert received == []
    finally:
        signal.signal(signal.SIGUSR1, previous)


NOT_ROOT = """import ctypes, os, sys
hits = []
try:
    os.close(os.open('/proc/sys/kernel/randomize_va_space', os.O_WRONLY))  # opened for writing, never written
    hits.append('global sysctl writable')
except OSError:
    pass
caps = [line.split()[1] for line in open('/proc/self/status') if line.startswith('CapEff')][0]
hits += ['capabilities ' + caps] if int(caps, 16) else []
hits += ['new user namespace'] if ctypes.CDLL(None).unshare(0x10000000) == 0 else []
sys.exit(f'HIT {hits}' if hits else 'BLOCKED')
"""


@confined
def test_the_program_is_not_root_on_the_host():
    assert run_program(NOT_ROOT).detail == "BLOCKED"
    if os.geteuid() == 0:
        assert "global sysctl writable" in run_unconfined(NOT_ROOT).detail


@confined
def test_dev_is_read_only_but_its_devices_and_the_capped_folders_work():
    """bwrap's own /dev is a tmpfs without a size cap: files written there would fill host memory."""
    program = """import sys
try:
    open('/dev/filler', 'wb').write(b'x' * 4096)
    sys.exit('ESCAPED: wrote a file in /dev')
except OSError:
    pass
open('/dev/null', 'w').write('fine')
assert len(open('/dev/urandom', 'rb').read(8)) == 8
for folder in ('/dev/shm', '/tmp', '/work'):
    open(folder + '/x', 'w').write('fine')
sys.exit('BLOCKED')
"""
    assert run_program(program).detail == "BLOCKED"


@confined
def test_no_host_file_descriptors_leak_in():
    program = """import os, sys
fds = os.listdir('/proc/self/fd')
assert {'0', '1', '2'} <= set(fds)
extra = []
for f in fds:
    try:
        extra += [(f, os.readlink(f'/proc/self/fd/{f}'))] if int(f) > 2 else []
    except OSError:
        pass  # listdir's own descriptor, closed by now
sys.exit(f'LEAKED {extra}' if extra else 'BLOCKED')
"""
    assert run_program(program).detail == "BLOCKED"


@pytest.fixture
def fresh_probe():
    confinement_problem.cache_clear()
    yield
    confinement_problem.cache_clear()


def test_without_bubblewrap_code_is_refused_unless_unconfined_is_allowed(monkeypatch, tmp_path, fresh_probe):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    problem = confinement_problem()
    assert problem is not None and "apt-get install bubblewrap" in problem and "\n" not in problem
    with pytest.raises(ConfigError, match="apt-get install bubblewrap"):
        run_program("pass")
    with pytest.raises(ConfigError, match="apt-get install bubblewrap"):  # before any generation
        CodeTask(8, [], CodeGrant(unconfined=False)).evaluate(None, None, None, [], 1)
    assert run_program("assert 1 + 1 == 2", allow_unconfined=True).passed
    assert run_program("while True:\n    pass\n", timeout=1.0, allow_unconfined=True).status == "timeout"


def test_a_bubblewrap_that_cannot_sandbox_is_refused(monkeypatch, tmp_path, fresh_probe):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    problem = confinement_problem()
    assert problem is not None and "cannot create a sandbox here" in problem
    with pytest.raises(ConfigError, match="cannot create a sandbox here"):
        run_program("pass")
