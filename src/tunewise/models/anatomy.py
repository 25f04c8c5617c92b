"""A model's shape read from its config alone, no weights loaded: exact parameter count, layer sizes and every linear
layer by name, so LoRA's trainable parameters and a training run's memory can be sized in seconds.

The config comes from where `model.name` points (a folder, a GGUF's metadata, a hub id already in the local cache);
`AutoModelForCausalLM.from_config` then builds the model on the meta device, where parameters have shapes and no
storage, so the counts are the loaded model's own, tied embeddings counted once.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunewise.config import LoraSettings, ModelConfig
from tunewise.core.safeio import save_dir_atomically
from tunewise.errors import ConfigError, ModelLoadError
from tunewise.models.loader import _gguf_alone, _gguf_cache_dir, cache_root, check_local_model, resolve_model

LAYER_INDEX = re.compile(r"^(.*?)\.(\d+)\.")


@dataclass(frozen=True)
class ModelAnatomy:
    """What sizing a LoRA run needs of a model: its dimensions, its linear layers (name -> (in, out) features, the
    output layer included) and its norm layers (name -> normalized size)."""

    name: str
    architecture: str
    n_params: int
    embedding_params: int  # the input embeddings, plus the output layer when it is not tied to them
    n_layers: int
    hidden_size: int
    intermediate_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int | None
    tied_embeddings: bool
    linears: dict[str, tuple[int, int]] = field(repr=False)
    norms: dict[str, int] = field(repr=False)
    output_layer: str | None = None

    @property
    def non_embedding_params(self) -> int:
        return self.n_params - self.embedding_params

    def lora_targets(self, lora: LoraSettings) -> dict[str, tuple[int, int]]:
        """The linear layers PEFT adapts. all-linear: every linear layer but the output layer (PEFT's rule); a list:
        each layer whose name is an entry or ends with '.' + an entry."""
        if lora.target_modules == "all-linear":
            return {name: shape for name, shape in self.linears.items() if name != self.output_layer}
        names = list(lora.target_modules)
        chosen = {n: s for n, s in self.linears.items() if any(n == t or n.endswith(f".{t}") for t in names)}
        if not chosen:
            raise ConfigError(
                f"lora.target_modules: none of {', '.join(names)} names a linear layer of {self.name}; "
                f"its linear layers end in: {', '.join(sorted({n.rsplit('.', 1)[-1] for n in self.linears}))}"
            )
        return chosen

    def lora_params(self, lora: LoraSettings) -> int:
        """LoRA's trainable parameters: r x (in + out) per adapted layer (A is r x in, B is out x r, no bias)."""
        return sum(lora.r * (n_in + n_out) for n_in, n_out in self.lora_targets(lora).values())

    def layer_of(self, name: str) -> int | None:
        """The decoder layer a module belongs to (`model.layers.3.mlp.up_proj` -> 3), None outside the layers."""
        match = LAYER_INDEX.match(name)
        return int(match.group(2)) if match else None

    def to_json(self) -> dict[str, Any]:
        shapes = Counter((name.rsplit(".", 1)[-1], shape) for name, shape in self.linears.items())
        return {
            "name": self.name,
            "architecture": self.architecture,
            "n_params": self.n_params,
            "embedding_params": self.embedding_params,
            "n_layers": self.n_layers,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "context_length": self.context_length,
            "tied_embeddings": self.tied_embeddings,
            "linear_layers": [
                {"name": suffix, "in": n_in, "out": n_out, "count": count}
                for (suffix, (n_in, n_out)), count in sorted(shapes.items())
            ],
        }


def read_anatomy(cfg: ModelConfig) -> ModelAnatomy:
    """The anatomy of `model.name` without loading weights; a ModelLoadError says why it cannot be read."""
    from transformers import AutoModelForCausalLM

    config = read_model_config(cfg)
    check_sizes(cfg.name, config)
    trusted = cfg.trust_remote_code and resolve_model(cfg).kind != "gguf"  # a GGUF's config never carries code
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trusted)
    except Exception as exc:  # an architecture transformers cannot build fails in many types
        raise ModelLoadError(f"model {cfg.name}: cannot build it from its config ({_first_line(exc)})") from None
    return _anatomy_of(cfg.name, config, model)


# Far beyond any causal LM there is; a config past them is damaged or hostile, and building it would not end.
SIZE_LIMITS = {
    "num_hidden_layers": 1_024,
    "hidden_size": 131_072,
    "intermediate_size": 1_048_576,
    "num_attention_heads": 4_096,
    "num_key_value_heads": 4_096,
    "vocab_size": 16_777_216,
}


def check_sizes(name: str, config: Any) -> None:
    """A ModelLoadError for a size in the config (or its text config) that no real model has."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key, limit in SIZE_LIMITS.items():
        value = getattr(text, key, None)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= limit:
            raise ModelLoadError(
                f"model {name}: config.json {key} = {str(value)[:40]} is not a model size (1 to {limit:,}); "
                "is this config.json damaged?"
            )


def read_model_config(cfg: ModelConfig) -> Any:
    """The model's Hugging Face config, read as the loader would find the model, code refused unless trusted."""
    from transformers import AutoConfig

    source = resolve_model(cfg)
    options: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    try:
        if source.kind == "dir":
            check_local_model(Path(source.location), cfg, weights=False)
            return AutoConfig.from_pretrained(source.location, **options)
        if source.kind == "gguf":
            return _gguf_config(Path(source.location) / str(source.gguf_file), cfg)
        return AutoConfig.from_pretrained(source.location, local_files_only=True, revision=cfg.revision, **options)
    except ModelLoadError:
        raise
    except Exception as exc:  # a broken or missing config fails in many types (OSError, ValueError, KeyError)
        text = _first_line(exc)
        if "trust_remote_code" in text:
            raise ModelLoadError(
                f"model {cfg.name} ships its own code; review it, then set model.trust_remote_code: true"
            ) from None
        if source.kind == "hub":
            raise ModelLoadError(
                f"hub model '{cfg.name}' is not in the local cache ({text}); the estimate reads only local files: "
                "download it first (hf download) or point model.name at a local directory"
            ) from None
        raise ModelLoadError(f"could not read the config of model {cfg.name}: {text}") from None


def _gguf_config(gguf_path: Path, cfg: ModelConfig) -> Any:
    """The config of a GGUF: the dequantized cache's config.json when the model was loaded before, else the GGUF's
    metadata (read alone, nothing beside the file), kept in the anatomy cache since a large vocabulary makes that
    read take seconds."""
    from transformers import AutoConfig

    cached = _gguf_cache_dir(gguf_path)
    for folder in (cached, cache_root() / "anatomy" / cached.name):
        if (folder / "config.json").is_file():
            check_local_model(folder, cfg, weights=False)
            return AutoConfig.from_pretrained(folder, trust_remote_code=False)
    with _gguf_alone(gguf_path) as folder:
        try:
            config = AutoConfig.from_pretrained(folder, gguf_file=gguf_path.name, trust_remote_code=False)
        except Exception as exc:  # gguf parsing errors come in many types
            text = _first_line(exc).replace(str(folder / gguf_path.name), str(gguf_path))
            raise ModelLoadError(f"could not read GGUF {gguf_path}: {text}; is it a whole, valid GGUF file?") from None
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the loader dequantizes; the anatomy is the dequantized model's
    target = cache_root() / "anatomy" / cached.name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        save_dir_atomically(target, lambda staged: config.save_pretrained(staged))
    except OSError:
        pass  # a cache that cannot be written costs the next estimate the same seconds, nothing else
    return config


def _anatomy_of(name: str, config: Any, model: torch.nn.Module) -> ModelAnatomy:
    from transformers.pytorch_utils import Conv1D

    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    linears: dict[str, tuple[int, int]] = {}
    norms: dict[str, int] = {}
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            linears[module_name] = (module.in_features, module.out_features)
        elif isinstance(module, Conv1D):  # GPT-2 style: weight is (in, out)
            linears[module_name] = (int(module.weight.shape[0]), int(module.weight.shape[1]))
        elif "norm" in type(module).__name__.lower() and getattr(module, "weight", None) is not None:
            norms[module_name] = int(module.weight.shape[-1])
    inputs, outputs = model.get_input_embeddings(), model.get_output_embeddings()
    tied = outputs is not None and inputs is not None and outputs.weight is inputs.weight
    output_layer = next((n for n, m in model.named_modules() if outputs is not None and m is outputs), None)
    embedding = inputs.weight.numel() if inputs is not None else 0
    if outputs is not None and not tied:
        embedding += outputs.weight.numel()
    hidden = int(_first(text, "hidden_size", "n_embd", "d_model"))
    heads = int(_first(text, "num_attention_heads", "n_head"))
    return ModelAnatomy(
        name=name,
        architecture=(getattr(config, "architectures", None) or [type(model).__name__])[0],
        n_params=sum(p.numel() for p in model.parameters()),
        embedding_params=embedding,
        n_layers=int(_first(text, "num_hidden_layers", "n_layer")),
        hidden_size=hidden,
        intermediate_size=int(_first(text, "intermediate_size", "n_inner", default=4 * hidden) or 4 * hidden),
        n_heads=heads,
        n_kv_heads=int(_first(text, "num_key_value_heads", default=heads) or heads),
        head_dim=int(_first(text, "head_dim", default=hidden // heads) or hidden // heads),
        vocab_size=int(_first(text, "vocab_size")),
        context_length=_first(text, "max_position_embeddings", "n_positions", default=None),
        tied_embeddings=tied,
        linears=linears,
        norms=norms,
        output_layer=output_layer,
    )


_REQUIRED = object()


def _first(config: Any, *keys: str, default: Any = _REQUIRED) -> Any:
    for key in keys:
        value = getattr(config, key, None)
        if value is not None:
            return value
    if default is _REQUIRED:
        raise ModelLoadError(f"model config has none of {', '.join(keys)}: not a decoder language model tunewise sizes")
    return default


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
