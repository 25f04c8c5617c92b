"""models.adapters: a LoRA adapter saved by PEFT attaches to its base model and changes its output; several join
one PeftModel under their names; anything else in its place is one `ModelLoadError` line, not PEFT's traceback."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from tunewise.errors import ModelLoadError
from tunewise.models.adapters import MAX_ADAPTER_CONFIG, attach_adapter

IDS = torch.tensor([[5, 17, 42, 99, 7, 3]])


def base(model_dir: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


def logits(model: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def save_lora(model_dir: Path, directory: Path, seed: int, r: int = 4) -> Path:
    torch.manual_seed(seed)
    # init_lora_weights=False: B is random too, so the adapter really changes the output
    config = LoraConfig(r=r, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base(model_dir), config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return save_lora(tiny_model_dir, root / "one", seed=1), save_lora(tiny_model_dir, root / "two", seed=2)


@pytest.fixture
def copy_of(adapters: tuple[Path, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(adapters[0], tmp_path / "adapter"))


def test_an_adapter_attaches_and_gives_peft_own_outputs(tiny_model_dir: Path, adapters: tuple[Path, Path]) -> None:
    model = attach_adapter(base(tiny_model_dir), adapters[0])
    assert isinstance(model, PeftModel) and set(model.peft_config) == {"default"}
    reference = PeftModel.from_pretrained(base(tiny_model_dir), adapters[0])
    assert torch.allclose(logits(model), logits(reference), atol=1e-6)
    assert (logits(model) - logits(base(tiny_model_dir))).abs().max() > 1e-3  # the adapter does act


def test_further_adapters_join_the_same_model_under_their_names(
    tiny_model_dir: Path, adapters: tuple[Path, Path]
) -> None:
    model = attach_adapter(base(tiny_model_dir), adapters[0], "one")
    assert attach_adapter(model, adapters[1], "two") is model
    assert set(model.peft_config) == {"one", "two"}
    model.set_adapter("one")
    first = logits(model)
    model.set_adapter("two")
    second = logits(model)
    assert (first - second).abs().max() > 1e-3
    alone = attach_adapter(base(tiny_model_dir), adapters[1])
    assert torch.allclose(second, logits(alone), atol=1e-6)


def test_a_directory_without_an_adapter_config_is_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=rf"^--adapter {tmp_path}: no adapter_config.json; pass the run's"):
        attach_adapter(base(tiny_model_dir), tmp_path)


def test_pickled_adapter_weights_are_not_loaded(tiny_model_dir: Path, copy_of: Path) -> None:
    weights = copy_of / "adapter_model.safetensors"
    weights.rename(copy_of / "adapter_model.bin")
    with pytest.raises(ModelLoadError, match="no adapter_model.safetensors \\(only safetensors are loaded\\)"):
        attach_adapter(base(tiny_model_dir), copy_of)


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (b"[1, 2]", "adapter_config.json is a JSON array, not an object"),
        (b'{"peft_type": "NOT_A_TYPE"}', 'peft_type "NOT_A_TYPE" is not a PEFT adapter type'),
        (b'{"r": 4}', "peft_type null is not a PEFT adapter type"),
        (b"{", r"adapter_config.json is not valid JSON \(line 1, column 2\)"),
        (b" " * (MAX_ADAPTER_CONFIG + 1), "adapter_config.json is 1.0 MB, more than the 1.0 MB expected"),
    ],
)
def test_an_adapter_config_that_is_not_one_is_named(
    tiny_model_dir: Path, copy_of: Path, config: bytes, reason: str
) -> None:
    (copy_of / "adapter_config.json").write_bytes(config)
    with pytest.raises(ModelLoadError) as caught:
        attach_adapter(base(tiny_model_dir), copy_of)
    message = str(caught.value)
    assert message.startswith(f"--adapter {copy_of}: ") and "\n" not in message
    assert re.search(reason, message), message
    assert message.endswith("pass the adapter/ directory of a run trained on this config's model.name")


def test_an_adapter_of_other_shapes_is_not_an_adapter_for_this_model(tiny_model_dir: Path, copy_of: Path) -> None:
    settings = json.loads((copy_of / "adapter_config.json").read_text())
    (copy_of / "adapter_config.json").write_text(json.dumps({**settings, "r": 8}))  # the weights have r=4
    with pytest.raises(ModelLoadError, match="not an adapter for this model: RuntimeError: .*size mismatch for"):
        attach_adapter(base(tiny_model_dir), copy_of)


def test_damaged_adapter_weights_are_one_line(tiny_model_dir: Path, copy_of: Path) -> None:
    weights = copy_of / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])  # cut inside the safetensors header
    with pytest.raises(ModelLoadError) as caught:
        attach_adapter(base(tiny_model_dir), copy_of)
    assert "not an adapter for this model" in str(caught.value) and "\n" not in str(caught.value)
