"""Checks for a package whose exports load on first use (`__getattr__`): importing it alone stays light."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


def assert_lazy_exports(package: str, heavy: str, names: tuple[str, ...]) -> None:
    """Importing `package` in a fresh interpreter leaves `heavy` unimported; each name then resolves to `heavy`'s
    object, and an unknown name raises AttributeError."""
    check = f"import sys, {package}; print({heavy!r} in sys.modules)"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
    module, source = importlib.import_module(package), importlib.import_module(heavy)
    for name in names:
        assert getattr(module, name) is getattr(source, name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        module.nope  # noqa: B018
