"""Safe loading: nothing from a model directory, a weights file, a prompt template or a data
file gets to run code, unless the user has reviewed it and said so (model.trust_remote_code: true).

- A source scan (AST, support/safety_scan.py) of src/tunewise finds no pickle, no unsafe torch.load / yaml.load, no
  trust_remote_code=True, no eval/exec, no non-sandboxed Jinja2 and no archive extraction; it is shown
  to flag each of those in a synthetic snippet, so it can fail.
- A model directory whose config maps to its own modeling code (which would write a canary file) is
  refused without the flag, through the API and the CLI; with the flag (in a subprocess) the canary is
  written, so the canary is live.
- A pickled pytorch_model.bin whose unpickling would write a canary is refused and never unpickled.
- Prompt templates with sandbox-escape payloads fail with a config error naming the key, never with
  the payload's output or a traceback.
- No input accepts archives (zip/tar): there is nothing to extract, so no path traversal to check.
- jinja2 >= 3.1.6 installed and required; torch new enough for weights_only=True to be safe.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pickle
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.version import Version
from safetensors.torch import load_file
from typer.testing import CliRunner

import tunewise
from support.safety_scan import scan_source, scan_tree
from tunewise.cli import app
from tunewise.config import ModelConfig, PromptConfig
from tunewise.errors import ConfigError, DataError, ModelLoadError, TunewiseError
from tunewise.models import load_model, load_tokenizer

SRC = Path(tunewise.__file__).parent
PYPROJECT = Path(__file__).parents[2] / "pyproject.toml"

# -- the source scan -----------------------------------------------------------------------------------


def test_source_tree_has_no_unsafe_loading_or_code_execution():
    assert len(list(SRC.rglob("*.py"))) > 30  # the scan sees the package, not an empty folder
    assert scan_tree(SRC) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle\npickle.loads(b'')",
        "from pickle import loads",
        "import cPickle",
        "import dill",
        "import joblib\njoblib.load('m.pkl')",
        "from joblib import load\nload('m.pkl')",
        "import torch\ntorch.load('w.bin')",
        "import torch as T\nT.load('w.bin', weights_only=False)",
        "from torch import load\nload('w.bin', map_location='cpu')",
        "import torch\nflag = True\ntorch.load('w.bin', weights_only=flag)",  # not a literal: not provable
        "import yaml\nyaml.load(text)",
        "import yaml\nyaml.load(text, Loader=yaml.Loader)",
        "import yaml\nyaml.unsafe_load(text)",
        "import numpy as np\nnp.load('a.npy', allow_pickle=True)",
        "import pandas as pd\npd.read_pickle('df.pkl')",
        "import importlib\nimportlib.import_module('pickle')",
        "eval('1 + 1')",
        "exec('x = 1')",
        "import builtins\nbuiltins.exec('x = 1')",
        "AutoModel.from_pretrained(path, trust_remote_code=True)",
        "kwargs = {'trust_remote_code': True}",
        "kwargs['trust_remote_code'] = True",
        "from jinja2 import Environment\nEnvironment().from_string(t)",
        "import jinja2\njinja2.Template(t)",
        "from jinja2.sandbox import SandboxedEnvironment\nSandboxedEnvironment()",
        "import tarfile\ntarfile.open(p).extractall()",
        "import shutil\nshutil.unpack_archive(p, d)",
    ],
)
def test_scanner_flags_unsafe_code(snippet: str):
    assert scan_source(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\ntorch.load('w.pt', map_location='cpu', weights_only=True)",
        "import yaml\nyaml.safe_load(text)\nyaml.load(text, Loader=yaml.SafeLoader)",
        "model.eval()\nre.compile('x')",
        "load_model(trust_remote_code=cfg.trust_remote_code)",
        "from jinja2.sandbox import ImmutableSandboxedEnvironment\nImmutableSandboxedEnvironment()",
        "from safetensors.torch import load_file\nload_file('model.safetensors')",
    ],
)
def test_scanner_passes_safe_code(snippet: str):
    assert scan_source(snippet) == []


# -- model directories that would run code -------------------------------------------------------------


def _canary_code(canary: Path) -> str:
    return f"from pathlib import Path\nPath({str(canary)!r}).write_text('code from the model directory ran')\n"


def _remote_code_model(tiny_model_dir: Path, target: Path, canary: Path, where: str) -> Path:
    """A copy of the tiny model whose config (or tokenizer config) maps to its own Python files."""
    shutil.copytree(tiny_model_dir, target)
    (target / "configuration_canary.py").write_text(
        _canary_code(canary) + "from transformers import LlamaConfig\n\n\nclass CanaryConfig(LlamaConfig):\n"
        "    model_type = 'canary'\n"
    )
    (target / "modeling_canary.py").write_text(
        _canary_code(canary) + "from transformers import LlamaForCausalLM\n\n\nclass CanaryModel(LlamaForCausalLM):\n"
        "    pass\n"
    )
    (target / "tokenization_canary.py").write_text(
        _canary_code(canary) + "from transformers import PreTrainedTokenizerFast\n\n\n"
        "class CanaryTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )
    name, auto_map = (
        "config.json",
        {
            "AutoConfig": "configuration_canary.CanaryConfig",
            "AutoModelForCausalLM": "modeling_canary.CanaryModel",
        },
    )
    if where == "tokenizer":
        name, auto_map = "tokenizer_config.json", {"AutoTokenizer": ["tokenization_canary.CanaryTokenizer", None]}
    config = json.loads((target / name).read_text())
    config["auto_map"] = auto_map
    if where == "model":
        config["model_type"] = "tunewise_canary"  # not a built-in type: transformers has nothing to fall back on
    (target / name).write_text(json.dumps(config))
    return target


@pytest.mark.parametrize("where", ["model", "tokenizer"])
def test_model_code_never_runs_without_the_flag(tmp_path: Path, tiny_model_dir: Path, where: str, monkeypatch):
    canary = tmp_path / "canary.txt"
    model_dir = _remote_code_model(tiny_model_dir, tmp_path / "model", canary, where)
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))  # should anything get copied, not in ~
    for load in (load_model, load_tokenizer):
        with pytest.raises(ModelLoadError, match=r"ships its own code .*Review that code, then set model\.trust"):
            load(ModelConfig(name=str(model_dir)))
    if where == "model":  # transformers' own refusal is the second line of defence: it holds without ours
        monkeypatch.setattr("tunewise.models.loader.check_local_model", lambda *args, **kwargs: None)
        with pytest.raises(ModelLoadError, match=r"trust_remote_code"):
            load_model(ModelConfig(name=str(model_dir)))
    assert not canary.exists()


def test_model_code_refused_through_the_cli(tmp_path: Path, tiny_model_dir: Path, write_config):
    canary = tmp_path / "canary.txt"
    model_dir = _remote_code_model(tiny_model_dir, tmp_path / "model", canary, "model")
    result = CliRunner().invoke(app, ["eval", str(write_config(model={"name": str(model_dir)}))])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "set model.trust_remote_code: true" in errors[0], result.output
    assert not canary.exists()


def test_with_the_flag_the_canary_fires(tmp_path: Path, tiny_model_dir: Path):
    """The positive control, in a subprocess (the imported model code must not stay in this process)."""
    canary = tmp_path / "canary.txt"
    model_dir = _remote_code_model(tiny_model_dir, tmp_path / "model", canary, "model")
    code = (
        "from tunewise.config import ModelConfig\nfrom tunewise.models import load_model\n"
        f"load_model(ModelConfig(name={str(model_dir)!r}, trust_remote_code=True))\n"
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300, check=False)
    assert canary.read_text() == "code from the model directory ran"


class _Payload:
    """Unpickling this runs `exec`: what a hostile pytorch_model.bin can do to torch.load(weights_only=False)."""

    def __init__(self, canary: Path) -> None:
        self.canary = str(canary)

    def __reduce__(self):
        return exec, (f"open({self.canary!r}, 'w').write('unpickled')",)


def test_pickled_weights_are_refused_and_never_unpickled(tmp_path: Path, tiny_model_dir: Path, monkeypatch):
    canary = tmp_path / "canary.txt"
    model_dir = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, model_dir)
    state = load_file(model_dir / "model.safetensors")
    (model_dir / "model.safetensors").unlink()
    torch.save({**state, "payload": _Payload(canary)}, model_dir / "pytorch_model.bin")
    with pytest.raises(
        ModelLoadError, match=r"no \.safetensors weights .*found pytorch_model\.bin.*never loads pickled"
    ):
        load_model(ModelConfig(name=str(model_dir)))
    monkeypatch.setattr("tunewise.models.loader.check_local_model", lambda *args, **kwargs: None)
    with pytest.raises(ModelLoadError, match="safetensors"):  # transformers, told use_safetensors=True, refuses too
        load_model(ModelConfig(name=str(model_dir)))
    assert not canary.exists()
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global"):  # what weights_only=True is for
        torch.load(model_dir / "pytorch_model.bin", weights_only=True)
    assert not canary.exists()
    torch.load(model_dir / "pytorch_model.bin", weights_only=False)  # the positive control: the payload is live
    assert canary.read_text() == "unpickled"


# -- prompt templates ----------------------------------------------------------------------------------

PAYLOADS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ text|attr('__class__') }}",
    "{{ x|attr('__class__') }}",
    "{{ self._TemplateReference__context }}",
    "{% set x = [].append(1) %}{{ x }}",
    "{{ lipsum.__globals__ }}",
    "{{ lipsum.__globals__['os'].popen('echo pwned').read() }}",
    "{{ labels.append('evil') }}",
    "{{ ''|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ '{0.__class__}'.format(text) }}",
    "{% for c in ''.__class__.__mro__ %}{{ c }}{% endfor %}",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _record():
    from tunewise.data.records import Record

    return Record("classification", {"text": "the car was great", "label": "a"}, "t.jsonl", 1)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_template_escape_payloads_are_config_errors(tokenizer, payload: str):
    from tunewise.data.prompt import PromptRenderer

    renderer = PromptRenderer(PromptConfig(template=payload), "classification", tokenizer, ["a"])
    with pytest.raises(ConfigError, match=r"^prompt\.template: blocked by the sandbox: .*unsafe.*\(not allowed"):
        renderer.prompt(_record())


def test_a_variant_template_payload_names_the_variant(tokenizer):
    from tunewise.config import validate_config
    from tunewise.data.splits import DataSplits
    from tunewise.data.variants import prompt_variants

    config = validate_config(
        {"data": {"train": "t.jsonl"}, "prompt": {"variants": {"evil": {"template": PAYLOADS[0]}, "terse": {}}}}
    )
    renderers = prompt_variants(config, tokenizer, DataSplits([_record()], [], [], ["a"]))
    assert renderers["terse"].prompt(_record())  # the default template still renders
    with pytest.raises(ConfigError, match=r"^prompt\.variants\.evil\.template: blocked by the sandbox"):
        renderers["evil"].prompt(_record())


def test_a_model_chat_template_payload_is_sandboxed_too(tokenizer):
    from tunewise.data.prompt import PromptRenderer

    evil = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    evil.chat_template = "{% for m in messages %}{{ m.__class__.__mro__ }}{% endfor %}"
    with pytest.raises(TunewiseError, match=r"chat template failed to render: .*unsafe") as info:
        PromptRenderer(PromptConfig(), "classification", evil, ["a"])
    assert "<class" not in str(info.value)


def test_template_payload_through_the_cli(write_config):
    config = write_config(prompt={"template": "{{ cycler.__init__.__globals__.os.popen('echo pwned').read() }}"})
    result = CliRunner().invoke(app, ["eval", str(config)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: prompt.template: blocked by the sandbox"), result.output
    assert "pwned" not in result.output


# -- archives, versions --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["train.zip", "train.tar", "train.tar.gz", "train.7z"])
def test_no_input_accepts_archives(tmp_path: Path, name: str):
    """Data files are read as JSONL/CSV/Parquet only: an archive is an unknown file type, nothing is extracted."""
    from tunewise.data.readers import read_rows

    path = tmp_path / name
    path.write_bytes(b"PK\x03\x04 not extracted")
    with pytest.raises(DataError, match="unknown file type"):
        list(read_rows(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_jinja2_is_at_least_3_1_6_installed_and_required():
    assert Version(importlib.metadata.version("jinja2")) >= Version("3.1.6")  # sandbox escapes fixed up to 3.1.6
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (jinja,) = [Requirement(d) for d in dependencies if Requirement(d).name == "jinja2"]
    assert not jinja.specifier.contains("3.1.5") and jinja.specifier.contains("3.1.6")


def test_torch_is_new_enough_for_weights_only_to_be_safe():
    # CVE-2025-32434: torch.load(weights_only=True) could still run code before torch 2.6.
    assert Version(torch.__version__.split("+")[0]) >= Version("2.6")
