"""`tunewise.pipeline` loads its exports on first use: importing the package alone does not import
tunewise.pipeline.jobs."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import tunewise.pipeline as package


def test_importing_the_package_does_not_import_its_heavy_module():
    check = "import sys, tunewise.pipeline; print('tunewise.pipeline.jobs' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_the_exports_load_on_first_use_and_unknown_names_raise():
    for name in ("RunOutcome", "eval_job", "run_job", "train_job"):
        assert getattr(package, name) is getattr(importlib.import_module("tunewise.pipeline.jobs"), name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        package.nope  # noqa: B018
