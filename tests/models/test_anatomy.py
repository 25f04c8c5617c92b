"""tunewise.models.anatomy: a model's size from its config alone matches the loaded model parameter for parameter,
LoRA's trainable count matches PEFT's, and what the loader refuses (remote code, an uncached hub id) is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from support.tiny import build_tiny_gemma, write_tiny_gguf
from tunewise.config import Config, LoraSettings, ModelConfig
from tunewise.errors import ConfigError, ModelLoadError
from tunewise.models.anatomy import read_anatomy
from tunewise.train.trainer import add_lora


@pytest.fixture(scope="module")
def tiny_gemma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gemma(tmp_path_factory.mktemp("tiny-gemma"))


@pytest.mark.parametrize("builder", ["llama", "gemma"])
def test_counts_and_shapes_are_the_loaded_models(builder: str, tiny_model_dir: Path, tiny_gemma_dir: Path) -> None:
    directory = tiny_model_dir if builder == "llama" else tiny_gemma_dir
    anatomy = read_anatomy(ModelConfig(name=str(directory)))
    model = AutoModelForCausalLM.from_pretrained(directory)
    assert anatomy.n_params == sum(p.numel() for p in model.parameters())  # tied embeddings counted once
    linears = {n: (m.in_features, m.out_features) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert anatomy.linears == linears
    config = model.config
    assert (anatomy.n_layers, anatomy.hidden_size, anatomy.vocab_size) == (
        config.num_hidden_layers,
        config.hidden_size,
        config.vocab_size,
    )
    assert anatomy.n_kv_heads == config.num_key_value_heads and anatomy.tied_embeddings
    assert anatomy.embedding_params == model.get_input_embeddings().weight.numel()
    assert anatomy.output_layer == "lm_head" and anatomy.layer_of("model.layers.1.mlp.up_proj") == 1
    if builder == "gemma":  # per-head query/key norms are found, at head_dim
        assert anatomy.norms["model.layers.0.self_attn.q_norm"] == config.head_dim


@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "v_proj"], ["mlp.down_proj", "o_proj"]])
def test_lora_params_are_pefts_count(tiny_model_dir: Path, tmp_path: Path, targets: str | list[str]) -> None:
    config = Config(
        model={"name": str(tiny_model_dir)},
        data={"train": str(tmp_path / "unused.jsonl")},
        lora={"r": 4, "target_modules": targets},
    )
    peft_model = add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    anatomy = read_anatomy(config.model)
    assert anatomy.lora_params(config.lora) == trainable
    assert anatomy.n_params + trainable == total


def test_a_target_that_names_no_linear_layer_is_a_config_error(tiny_model_dir: Path) -> None:
    anatomy = read_anatomy(ModelConfig(name=str(tiny_model_dir)))
    with pytest.raises(ConfigError, match=r"none of qkv names a linear layer.*q_proj"):
        anatomy.lora_params(LoraSettings(target_modules=["qkv"]))


def test_a_gguf_is_sized_from_its_metadata_without_dequantizing(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    gguf = write_tiny_gguf(tiny_model_dir, tmp_path / "tiny.gguf")
    anatomy = read_anatomy(ModelConfig(name=str(gguf)))
    reference = read_anatomy(ModelConfig(name=str(tiny_model_dir)))
    assert (anatomy.n_params, anatomy.linears) == (reference.n_params, reference.linears)
    assert not list((tmp_path / "cache").glob("gguf/*/model.safetensors"))  # no weights were converted
    (kept,) = (tmp_path / "cache" / "anatomy").iterdir()  # the metadata is kept: the next read is instant
    assert json.loads((kept / "config.json").read_text())["num_hidden_layers"] == reference.n_layers
    assert read_anatomy(ModelConfig(name=str(gguf))).n_params == reference.n_params


def test_a_model_shipping_code_is_refused_unless_trusted(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "coded"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoConfig": "x.Config"}}))
    with pytest.raises(ModelLoadError, match="ships its own code.*trust_remote_code"):
        read_anatomy(ModelConfig(name=str(folder)))


def test_an_uncached_hub_id_is_one_line_not_a_download() -> None:
    with pytest.raises(ModelLoadError, match="not in the local cache.*download it first"):
        read_anatomy(ModelConfig(name="nobody-here/no-such-model-7f3a"))


@pytest.mark.parametrize(("key", "value"), [("num_hidden_layers", 10**8), ("hidden_size", -4), ("vocab_size", 10**9)])
def test_a_config_with_sizes_no_model_has_is_refused_before_it_is_built(
    tiny_model_dir: Path, tmp_path: Path, key: str, value: object
) -> None:
    hostile = tmp_path / "hostile"
    shutil.copytree(tiny_model_dir, hostile)
    config = json.loads((hostile / "config.json").read_text())
    config[key] = value
    (hostile / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=f"config.json {key} = .* is not a model size"):
        read_anatomy(ModelConfig(name=str(hostile)))
