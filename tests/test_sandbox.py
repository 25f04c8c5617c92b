"""Generated code is contained: each hostile program below fails or times out within timeout + 1 s."""

import time
from pathlib import Path

import pytest

from tunewise.evaluate.sandbox import run_program

TIMEOUT = 3.0


@pytest.mark.parametrize(
    ("name", "program"),
    [
        ("fork bomb", "import os\nwhile True:\n    os.fork()\n"),
        ("fork bomb via subprocess", "import subprocess, sys\nwhile True:\n    subprocess.Popen([sys.executable])\n"),
        ("infinite loop", "while True:\n    pass\n"),
        ("sleep forever", "import time\ntime.sleep(3600)\n"),
        ("network connect", "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)\n"),
        ("memory hog", "x = bytearray(8 * 1024 ** 3)\n"),
        ("delete files", "import shutil\nshutil.rmtree('/tmp')\n"),
    ],
)
def test_hostile_programs_fail_or_time_out_quickly(name, program):
    start = time.monotonic()
    result = run_program(program, timeout=TIMEOUT)
    assert not result.passed, name
    assert time.monotonic() - start < TIMEOUT + 1, name


def test_writing_outside_the_working_directory_fails(tmp_path: Path):
    target = tmp_path / "escaped.txt"
    result = run_program(f"open({str(target)!r}, 'w').write('x')\n", timeout=TIMEOUT)
    assert result.status == "failed" and "outside the working directory" in result.detail
    assert not target.exists()
    inside = run_program("open('scratch.txt', 'w').write('fine')\nassert open('scratch.txt').read() == 'fine'\n")
    assert inside.passed


def test_a_correct_program_passes_and_a_wrong_one_fails():
    assert run_program("def add(a, b):\n    return a + b\nassert add(2, 3) == 5\n").passed
    failed = run_program("def add(a, b):\n    return a - b\nassert add(2, 3) == 5, 'wrong sum'\n")
    assert failed.status == "failed" and "wrong sum" in failed.detail
