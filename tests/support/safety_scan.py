"""An AST scan of Python source for code that could run what a file, a model or a template says:
pickle and its kin, torch.load without weights_only=True, unsafe yaml loads, trust_remote_code=True
literals, eval/exec, Jinja2 outside the immutable sandbox, and archive extraction (which would need
path checks). Used by tests/system/test_safety.py on src/tunewise; a finding names file, line and why.
"""

from __future__ import annotations

import ast
from pathlib import Path

BANNED_MODULES = {
    "pickle": "pickle runs code while loading",
    "cPickle": "pickle runs code while loading",
    "_pickle": "pickle runs code while loading",
    "dill": "dill is pickle",
    "cloudpickle": "cloudpickle is pickle",
    "shelve": "shelve is pickle",
    "marshal": "marshal loads code objects",
    "zipfile": "archive extraction needs path checks (.., absolute paths, links)",
    "tarfile": "archive extraction needs path checks (.., absolute paths, links)",
}
BANNED_CALLS = {
    "joblib.load": "joblib.load unpickles",
    "pandas.read_pickle": "read_pickle unpickles",
    "yaml.unsafe_load": "yaml.unsafe_load builds arbitrary objects",
    "yaml.full_load": "yaml.full_load builds arbitrary objects",
    "eval": "eval runs code",
    "exec": "exec runs code",
    "builtins.eval": "eval runs code",
    "builtins.exec": "exec runs code",
    "shutil.unpack_archive": "archive extraction needs path checks (.., absolute paths, links)",
    "jinja2.Environment": "templates must render in jinja2.sandbox.ImmutableSandboxedEnvironment",
    "jinja2.Template": "templates must render in jinja2.sandbox.ImmutableSandboxedEnvironment",
    "jinja2.environment.Environment": "templates must render in jinja2.sandbox.ImmutableSandboxedEnvironment",
    "jinja2.nativetypes.NativeEnvironment": "templates must render in jinja2.sandbox.ImmutableSandboxedEnvironment",
    "jinja2.sandbox.SandboxedEnvironment": "the mutable sandbox lets templates change data: use the immutable one",
}
TORCH_LOADS = {"torch.load", "torch.serialization.load"}
# Files allowed a finding, with the reason. Empty: tunewise.evaluate.sandbox runs model-written code in a
# separate interpreter (subprocess, `python -I program.py`), so no eval/exec happens in tunewise's process.
ALLOWED: dict[str, set[str]] = {}


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted name it was imported as (import torch as T; from torch import load)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, aliases)
        return f"{base}.{node.attr}" if base else None
    return None


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def scan_source(source: str, filename: str = "<snippet>") -> list[str]:
    """Findings ("file:line: what") for code that could run what a file, model or template says."""
    tree = ast.parse(source, filename)
    aliases = _aliases(tree)
    found: list[str] = []

    def flag(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in modules:
                if module.split(".")[0] in BANNED_MODULES:
                    flag(node, f"import {module}: {BANNED_MODULES[module.split('.')[0]]}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func, aliases) or ""
            keywords = {k.arg: k.value for k in node.keywords}
            if name in BANNED_CALLS:
                flag(node, f"{name}(): {BANNED_CALLS[name]}")
            if name in TORCH_LOADS and not _is_true(keywords.get("weights_only")):
                flag(node, f"{name}() without weights_only=True unpickles")
            if name == "yaml.load" and _dotted(keywords.get("Loader", ast.Constant(None)), aliases) not in {
                "yaml.SafeLoader",
                "yaml.CSafeLoader",
            }:
                flag(node, "yaml.load() without Loader=yaml.SafeLoader")
            if name.endswith("read_pickle"):
                flag(node, f"{name}(): unpickles")
            if (
                name.split(".")[-1] == "load"
                and name.startswith(("numpy.", "np."))
                and _is_true(keywords.get("allow_pickle"))
            ):
                flag(node, f"{name}(allow_pickle=True) unpickles")
            if name in {"importlib.import_module", "__import__"} and node.args:
                target = node.args[0]
                if isinstance(target, ast.Constant) and str(target.value).split(".")[0] in BANNED_MODULES:
                    flag(node, f"dynamic import of {target.value}")
            if _is_true(keywords.get("trust_remote_code")):
                flag(node, "trust_remote_code=True: only model.trust_remote_code may turn it on")
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "trust_remote_code" and _is_true(value):
                    flag(node, "trust_remote_code: True literal")
        elif isinstance(node, ast.Assign) and _is_true(node.value):
            for target in node.targets:
                if isinstance(target, ast.Subscript) and getattr(target.slice, "value", None) == "trust_remote_code":
                    flag(node, "trust_remote_code = True literal")
    return found


def scan_tree(root: Path) -> list[str]:
    findings = []
    for path in sorted(root.rglob("*.py")):
        relative = str(path.relative_to(root.parent))
        for finding in scan_source(path.read_text(encoding="utf-8"), relative):
            if not any(allowed in finding for allowed in ALLOWED.get(relative, ())):
                findings.append(finding)
    return findings
