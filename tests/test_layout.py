"""The tree keeps its shape: each module in src/tunewise says what it is for in its first line and has a direct
test at the mirrored path, no two modules in different packages share a name, and imports run one way."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "tunewise"
TESTS = ROOT / "tests"


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def _has_code(path: Path) -> bool:
    """A package `__init__` that only re-exports names needs no test of its own."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(node, ast.FunctionDef | ast.ClassDef) for node in tree.body)


def expected_tests(module: Path) -> list[Path]:
    """tests/<package path>/test_<module>.py; a package's own code: test_init.py or test_<package>.py there."""
    relative = module.relative_to(SRC)
    folder = TESTS.joinpath(*relative.parent.parts)
    if module.name == "__init__.py":
        names = ["test_init.py"] + ([f"test_{relative.parent.name}.py"] if relative.parent.parts else [])
        return [folder / name for name in names]
    return [folder / f"test_{module.stem}.py"]


def test_every_module_has_a_direct_test_at_the_mirrored_path() -> None:
    missing = [
        f"{m.relative_to(ROOT)} -> {expected_tests(m)[0].relative_to(ROOT)}"
        for m in _modules()
        if (m.name != "__init__.py" or _has_code(m)) and not any(t.is_file() for t in expected_tests(m))
    ]
    assert not missing, "modules without a direct test:\n" + "\n".join(missing)


def test_a_direct_test_imports_the_module_it_is_named_after() -> None:
    unrelated = []
    for module in _modules():
        dotted = ".".join(module.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
        for test in (t for t in expected_tests(module) if t.is_file()):
            text = test.read_text(encoding="utf-8")
            package, _, name = dotted.rpartition(".")
            named = dotted in text or re.search(rf"from {re.escape(package)} import [^\n]*\b{name}\b", text)
            if not named and not (module.name == "__init__.py" and "import tunewise" in text):
                unrelated.append(f"{test.relative_to(ROOT)} never names {dotted}")
    assert not unrelated, "\n".join(unrelated)


def test_every_module_opens_with_a_sentence_saying_what_it_is_for() -> None:
    bare = [str(m.relative_to(ROOT)) for m in _modules() if not ast.get_docstring(ast.parse(m.read_text("utf-8")))]
    assert not bare, "modules without a docstring: " + ", ".join(bare)


SAME_ROLE = {"base"}  # curate/base.py, evaluate/tasks/base.py: the protocol the package's members implement


def test_no_two_modules_in_different_packages_share_a_name() -> None:
    by_name: dict[str, list[str]] = defaultdict(list)
    for module in _modules():
        if module.name != "__init__.py" and module.stem not in SAME_ROLE:
            by_name[module.stem].append(str(module.relative_to(SRC)))
    shared = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    assert not shared, f"module names used twice: {shared}"


def test_the_checks_above_can_fail(tmp_path: Path) -> None:
    module = SRC / "data" / "records.py"
    assert expected_tests(module) == [TESTS / "data" / "test_records.py"]
    assert expected_tests(SRC / "__init__.py") == [TESTS / "test_init.py"]
    stray = tmp_path / "x.py"
    stray.write_text("def f():\n    return 1\n", encoding="utf-8")
    assert ast.get_docstring(ast.parse(stray.read_text())) is None and _has_code(stray)


@pytest.mark.skipif(
    shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None, reason="no lint-imports"
)
def test_imports_run_one_way() -> None:
    """The layers contract in pyproject.toml ([tool.importlinter]), as `make lint` checks it."""
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
