"""The base model in full precision with the run's adapter, merged with PEFT and saved as a plain Hugging Face
directory that loads with `AutoModelForCausalLM.from_pretrained(dir)` and no tunewise import."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunewise.config import Config
from tunewise.data.prompt import PromptRenderer
from tunewise.data.splits import DataSplits
from tunewise.data.variants import DEFAULT_PROMPT, prompt_variants
from tunewise.errors import ExportError
from tunewise.models import load_model
from tunewise.models.adapters import attach_adapter
from tunewise.models.loader import ModelSource

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class AdaptedModel:
    """The base model (loaded in float32, whatever it was trained in) with the adapter attached, unmerged: the
    model the run evaluated. `source` says where the base came from (a GGUF carries the export's metadata)."""

    model: Any
    tokenizer: Any
    renderer: PromptRenderer
    source: ModelSource
    base_name: str

    @property
    def source_gguf(self) -> Path | None:
        if self.source.kind != "gguf" or self.source.gguf_file is None:
            return None
        return Path(self.source.location) / self.source.gguf_file


def load_adapted(
    config: Config, adapter_dir: Path, adapter_settings: dict[str, Any], splits: DataSplits
) -> AdaptedModel:
    """Never merge into quantized weights: a GGUF base is dequantized (the loader's float32 cache), and every base
    loads in float32 here, unquantized also when the run trained on a bitsandbytes-quantized base (model.quantize):
    the update is added to the full-precision weights, not rounded again to 4 or 8 bits."""
    if config.model.trust_remote_code:
        raise ExportError(
            f"the run's config sets model.trust_remote_code for {config.model.name}; tunewise export never runs a "
            "model's own code (a run directory is not proof you reviewed it): export such a model with its own tools"
        )
    full_precision = config.model.model_copy(
        update={"dtype": "float32", "quantize": "none", "trust_remote_code": False}
    )
    loaded = load_model(full_precision)
    _check_adapter_base(adapter_settings, loaded.model, config.model.name, adapter_dir)
    model = attach_adapter(loaded.model, adapter_dir)
    model.eval()
    renderer = prompt_variants(config, loaded.tokenizer, splits)[DEFAULT_PROMPT]
    return AdaptedModel(model, loaded.tokenizer, renderer, loaded.source, config.model.name)


def merge_and_save(adapted: AdaptedModel, directory: Path, dtype: str = "float32") -> dict[str, Any]:
    """Fold the adapter into the weights (in float32) and write `directory`: safetensors in `dtype`, config,
    tokenizer with its chat template, and a generation_config.json whose EOS ends the answer exactly where training
    taught it to. Returns the generation settings written. The adapted model is merged in place: take its logits
    first; `adapted.model` is then the merged model, still in float32."""
    merged = adapted.model.merge_and_unload()
    adapted.model = merged
    generation = generation_settings(adapted)
    save_merged(adapted, directory, dtype, generation)
    return generation


def generation_settings(adapted: AdaptedModel) -> dict[str, Any]:
    stops = stop_token_ids(adapted.renderer, adapted.tokenizer)
    return {
        "eos_token_id": stops if len(stops) > 1 else stops[0],
        "pad_token_id": adapted.tokenizer.pad_token_id,
        "bos_token_id": adapted.tokenizer.bos_token_id,
        "do_sample": False,  # the run evaluated greedy answers
    }


def save_merged(adapted: AdaptedModel, directory: Path, dtype: str, generation: dict[str, Any]) -> None:
    """The merged model saved in `dtype` (a copy when that is not float32: the model in memory stays float32)."""
    merged = adapted.model if dtype == "float32" else copy.deepcopy(adapted.model).to(DTYPES[dtype])
    merged.generation_config.update(**generation)
    merged.generation_config.temperature = None
    merged.generation_config.top_p = None
    merged.generation_config.top_k = None
    merged.save_pretrained(directory, safe_serialization=True)
    adapted.tokenizer.save_pretrained(directory)
    for stray in (p for p in directory.rglob("*") if p.suffix in {".py", ".pyc"}):  # an export never ships code
        stray.unlink()


def stop_token_ids(renderer: PromptRenderer, tokenizer: Any) -> list[int]:
    """The token that ends an answer in training (the chat template's end-of-turn, or EOS without one), then the
    tokenizer's EOS when it differs: a server stopping at either stops where the evaluated model stopped."""
    ids: list[int] = []
    marker = renderer.end_of_answer.strip()
    if marker:
        encoded = tokenizer(marker, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise ExportError(
                f"the answer ends with {marker!r}, which is {len(encoded)} tokens, not one: no EOS token can stop "
                "generation there; use a model whose end-of-turn marker is a special token"
            )
        ids.append(int(encoded[0]))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    if not ids:
        raise ExportError("the tokenizer has no EOS token and the prompt no end-of-turn marker: nothing ends an answer")
    return ids


def architecture(directory: Path) -> str:
    """The `architectures[0]` of a saved model's config.json, e.g. LlamaForCausalLM."""
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    names = config.get("architectures") or []
    return str(names[0]) if names else str(config.get("model_type", "unknown"))


def _check_adapter_base(settings: dict[str, Any], model: Any, name: str, adapter_dir: Path) -> None:
    """An adapter records the base it was trained on. A GGUF base is cached under its name plus a hash of its
    bytes, so another file under the same name is caught here, before PEFT would silently load mismatched
    weights of the same shapes."""
    trained_on = settings.get("base_model_name_or_path")
    found = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None)
    if not trained_on or not found:
        return
    if Path(str(trained_on)).name != Path(str(found)).name:
        raise ExportError(
            f"{adapter_dir} was trained on {Path(str(trained_on)).name}, but model.name {name} now loads "
            f"{Path(str(found)).name}: restore the base model the run trained on"
        )
