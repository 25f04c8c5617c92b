"""Code shipped beside a model never runs without model.trust_remote_code, whatever the source kind:
a model directory, a GGUF file (whose folder transformers would otherwise read), the GGUF cache, a hub id.
Every `from_pretrained` tunewise makes passes trust_remote_code explicitly, so transformers never asks
interactively, and the cache never holds code files."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

import tunewise
from support.tiny import write_tiny_gguf
from tunewise.config import ModelConfig
from tunewise.errors import ModelLoadError
from tunewise.models import load_model, load_tokenizer

SRC = Path(tunewise.__file__).parent


def _canary_module(canary: Path) -> str:
    return (
        f"open({str(canary)!r}, 'w').write('code beside the GGUF ran')\n"
        "from transformers import PreTrainedTokenizerFast\n\n\n"
        "class XTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def _hostile_gguf_folder(tiny_gguf: Path, folder: Path, canary: Path) -> Path:
    folder.mkdir()
    shutil.copy(tiny_gguf, folder / "model.gguf")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {"auto_map": {"AutoTokenizer": ["tokenization_x.XTokenizer", None]}, "tokenizer_class": "XTokenizer"}
        )
    )
    (folder / "config.json").write_text(
        json.dumps({"auto_map": {"AutoModelForCausalLM": "modeling_x.XModel"}, "model_type": "llama"})
    )
    (folder / "tokenization_x.py").write_text(_canary_module(canary))
    (folder / "modeling_x.py").write_text(_canary_module(canary))
    return folder / "model.gguf"


@pytest.mark.parametrize("load", [load_model, load_tokenizer], ids=["model", "tokenizer"])
def test_code_beside_a_gguf_never_runs_or_reaches_the_cache(
    tmp_path: Path, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch, load
):
    canary = tmp_path / "canary.txt"
    gguf = _hostile_gguf_folder(tiny_gguf, tmp_path / "folder", canary)
    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("transformers asked whether to run code"))
    loaded = load(ModelConfig(name=str(gguf)))
    tokenizer = loaded.tokenizer if hasattr(loaded, "tokenizer") else loaded
    assert type(tokenizer).__name__ != "XTokenizer"
    assert tokenizer("the car was great").input_ids  # the GGUF's own tokenizer, read from the GGUF alone
    assert not canary.exists()
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.suffix == ".py"]
    assert not (tmp_path / "modules").exists() or not any((tmp_path / "modules").rglob("*.py"))


def test_gguf_folder_is_read_alone_and_matches_the_plain_load(tmp_path: Path, tiny_gguf: Path, monkeypatch):
    """The isolation changes nothing for an ordinary GGUF: same tokenizer, same chat template."""
    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    loaded = load_model(ModelConfig(name=str(tiny_gguf)))
    assert loaded.tokenizer.chat_template and loaded.tokenizer.eos_token == "<|im_end|>"
    assert list((tmp_path / "cache" / "gguf").glob("tiny-*/model.safetensors"))


def test_a_tampered_gguf_cache_entry_with_code_is_refused(tmp_path: Path, tiny_gguf: Path, monkeypatch):
    """$TUNEWISE_CACHE is a folder like any other: code planted in a cached model is refused, not loaded."""
    canary = tmp_path / "canary.txt"
    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    load_model(ModelConfig(name=str(tiny_gguf)))
    (cached,) = (tmp_path / "cache" / "gguf").glob("tiny-*")
    config = json.loads((cached / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["tokenization_x.XTokenizer", None]}
    config["tokenizer_class"] = "XTokenizer"
    (cached / "tokenizer_config.json").write_text(json.dumps(config))
    (cached / "tokenization_x.py").write_text(_canary_module(canary))
    for load in (load_model, load_tokenizer):
        with pytest.raises(ModelLoadError, match="ships its own code"):
            load(ModelConfig(name=str(tiny_gguf)))
    assert not canary.exists()


def _from_pretrained_calls(tree: ast.AST) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "from_pretrained"
            and getattr(node.func.value, "id", "") != "PeftModel"
        )  # adapters: weights and a JSON config, no code
        or (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", "")) == "SentenceTransformer"
        )
    ]


def test_every_from_pretrained_passes_trust_remote_code_explicitly():
    """Without it transformers asks on the terminal (or reads a default); with it, the answer is ours."""
    missing = []
    calls = 0
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for call in _from_pretrained_calls(ast.parse(text)):
            calls += 1
            names = {k.arg for k in call.keywords}
            # **options: the module must build those dicts with the key (the loader's kwargs/options do)
            spread = any(k.arg is None for k in call.keywords) and '"trust_remote_code":' in text
            if "trust_remote_code" not in names and not spread:
                missing.append(f"{path.relative_to(SRC)}:{call.lineno}")
    assert calls >= 5
    assert missing == []


@pytest.mark.parametrize(
    "content",
    [
        b"GGUF\x03\x00\x00\x00" + b"\xff\xff\xff\xff\xff\xff\xff\x7f" * 2,  # 2^63 tensors and keys announced
        b"\x00" * 4096,  # no magic
        "truncated",
    ],
    ids=["absurd-counts", "not-gguf", "truncated"],
)
def test_a_broken_gguf_gives_one_line_naming_the_users_file(tmp_path: Path, tiny_gguf: Path, monkeypatch, content):
    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "broken.gguf"
    path.write_bytes(tiny_gguf.read_bytes()[:3000] if content == "truncated" else content)
    with pytest.raises(ModelLoadError) as error:
        load_model(ModelConfig(name=str(path)))
    message = str(error.value)
    assert message.startswith(f"could not read GGUF {path}") and "\n" not in message
    assert "tunewise-gguf-" not in message  # the private link folder is never shown
    assert not (tmp_path / "cache" / "gguf").exists() or not any((tmp_path / "cache" / "gguf").iterdir())


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json"])
def test_a_model_config_nested_absurdly_deep_gives_one_line(tmp_path: Path, tiny_model_dir: Path, name: str):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / name).write_text("[" * 200_000 + "]" * 200_000)
    for load in (load_model, load_tokenizer):
        with pytest.raises(ModelLoadError, match=rf"{name}: not readable JSON \(nested too deep\)"):
            load(ModelConfig(name=str(model_dir)))
