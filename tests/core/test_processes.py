"""core.processes: a pid names a live process only while it runs; gone, zombie and impossible pids are not alive."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tunewise.core.processes import process_alive


def test_this_process_and_init_are_alive() -> None:
    assert process_alive(os.getpid())
    assert process_alive(1)  # another user's process (PermissionError for non-root) still counts as alive


@pytest.mark.parametrize("pid", [0, -1, -os.getpid(), 2**40, 2**31 - 1])
def test_numbers_that_name_no_process_are_not_alive(pid: int) -> None:
    assert not process_alive(pid)  # 0 and negative pids would address process groups: never "alive"


def test_a_running_child_is_alive_and_an_exited_one_is_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert process_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="zombies are told apart through /proc")
def test_a_killed_child_not_yet_reaped_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    child.kill()  # a zombie until waited for: os.kill(pid, 0) still succeeds on it
    try:
        deadline = time.time() + 10
        while process_alive(child.pid) and time.time() < deadline:
            time.sleep(0.01)
        with open(f"/proc/{child.pid}/stat", encoding="ascii") as fh:
            assert fh.read().rsplit(")", 1)[-1].split()[0] == "Z"  # really a zombie, not already gone
        assert not process_alive(child.pid)
    finally:
        child.wait()
