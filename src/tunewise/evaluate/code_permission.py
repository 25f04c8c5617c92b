"""Permission to run model-written code: held by the current invocation, never read from a config.

A config file, a dotted override, a prompt variant, a sweep parameter or an ablation arm are all data a
user may have been handed; none of them can carry this permission, because it is not a config key at
all. The command line grants it for the duration of one command (`--allow-code-execution`), and a
Python caller grants it the same way, with `with code_execution_allowed(): ...`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class CodeGrant:
    """What the invocation allowed: running generated code, and whether without OS confinement."""

    unconfined: bool = False


_GRANT: ContextVar[CodeGrant | None] = ContextVar("tunewise_code_grant", default=None)


@contextmanager
def code_execution_allowed(allowed: bool = True, unconfined: bool = False) -> Iterator[None]:
    """Within this block, the code task may run generated programs (confined unless `unconfined`)."""
    token = _GRANT.set(CodeGrant(unconfined=unconfined) if allowed else None)
    try:
        yield
    finally:
        _GRANT.reset(token)


def current_grant() -> CodeGrant | None:
    """The grant of the enclosing `code_execution_allowed` block, or None where code may not run."""
    return _GRANT.get()
