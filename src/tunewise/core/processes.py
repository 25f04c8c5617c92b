"""Whether a process id still names a running process: how a run or a staging directory is told to be orphaned."""

from __future__ import annotations

import os
from contextlib import suppress


def process_alive(pid: int) -> bool:
    """True while `pid` runs (also when it belongs to another user); False for a gone process, a zombie (killed,
    not yet reaped) or a number no process can have."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError, OSError):  # not a pid this system can have
        return False
    with suppress(OSError), open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"  # a zombie writes nothing
    return True
