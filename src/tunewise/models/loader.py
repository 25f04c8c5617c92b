"""Resolve `model.name` to weights and load them. GGUF is dequantized once and cached as safetensors; an alias
(`embedded.py`) names a GGUF shipped in pip packages and is then loaded like any GGUF."""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from tunewise.config import ModelConfig
from tunewise.core.safeio import save_dir_atomically
from tunewise.errors import ModelLoadError
from tunewise.models.device import resolve_device
from tunewise.models.embedded import EMBEDDED, embedded_gguf, file_sha256
from tunewise.models.quantize import bitsandbytes_config, keep_4bit_layers_differentiable

HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "dir" | "gguf" | "hub"
    location: str  # directory, or hub id
    gguf_file: str | None = None


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    source: ModelSource
    name: str


def cache_root() -> Path:
    return Path(os.environ.get("TUNEWISE_CACHE", Path.home() / ".cache" / "tunewise"))


def resolve_model(cfg: ModelConfig) -> ModelSource:
    name = cfg.name
    if name in EMBEDDED:
        gguf = embedded_gguf(name, cache_root() / "embedded")
        return ModelSource("gguf", str(gguf.parent), gguf.name)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"model.name: GGUF file {path} not found")
        return ModelSource("gguf", str(path.parent), path.name)
    if path.is_dir():
        if cfg.gguf_file:
            if not (path / cfg.gguf_file).is_file():
                raise ModelLoadError(f"model.gguf_file: {path / cfg.gguf_file} not found")
            return ModelSource("gguf", str(path), cfg.gguf_file)
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model.name: {path} has no config.json; is it a Hugging Face model directory?")
        return ModelSource("dir", str(path))
    if not HUB_ID.fullmatch(name):
        raise ModelLoadError(f"model.name: {name} is not a model directory, a .gguf file or a hub id")
    if cfg.gguf_file:
        raise ModelLoadError(
            "model.gguf_file works with a local directory; download the GGUF and point model.name at it"
        )
    return ModelSource("hub", name)


def load_model(cfg: ModelConfig) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model(cfg)
    location = source.location
    if source.kind == "gguf":
        location = str(_gguf_cache(Path(source.location) / source.gguf_file))
    if source.kind in ("dir", "gguf"):
        check_local_model(Path(location), cfg)  # for a GGUF: the cache entry, which is a folder like any other
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code, "revision": cfg.revision}
    device = resolve_device(cfg.device)
    placement = weight_options(cfg, device)
    if source.kind == "hub" and not _in_hub_cache(location, kwargs) and not _hub_reachable():
        raise ModelLoadError(
            f"hub model '{cfg.name}' is not in the local cache and the hub cannot be reached; download it "
            "where there is network (hf download) or point model.name at a local directory"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(location, use_safetensors=True, **placement, **kwargs)
    except Exception as exc:  # a broken or hostile directory fails in many types (OSError, ValueError, validation)
        raise ModelLoadError(_explain_load_failure(cfg.name, source, exc)) from None
    if cfg.quantize == "none":
        model.to(device)  # a quantized model is placed by its device_map while it loads
    elif cfg.quantize == "4bit":
        keep_4bit_layers_differentiable(model)  # else a CPU eval pass would break training's gradients
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model, tokenizer, source, cfg.name)


def weight_options(cfg: ModelConfig, device: torch.device) -> dict[str, Any]:
    """from_pretrained's dtype, and for `model.quantize` the bitsandbytes config with the whole model on `device`."""
    options: dict[str, Any] = {"dtype": DTYPES[cfg.dtype]}
    if cfg.quantize == "none":
        return options
    options["quantization_config"] = bitsandbytes_config(cfg.quantize, DTYPES[cfg.dtype])
    options["device_map"] = {"": device.index if device.type == "cuda" and device.index is not None else device.type}
    return options


# Config keys that make transformers import Python from the model directory when trust_remote_code is on.
CODE_KEYS = ("auto_map", "custom_pipelines")


def check_local_model(directory: Path, cfg: ModelConfig, weights: bool = True) -> None:
    """Refuse, before transformers sees it, a directory whose loading would run its own code (unless
    model.trust_remote_code is set) or unpickle weights (always): both execute whatever the files say.

    transformers refuses both as well with our arguments; this check does not depend on its version or
    on how it words its errors, and names the files to review.
    """
    if not cfg.trust_remote_code:
        code = [
            f"{name}: {', '.join(keys)}"
            for name in ("config.json", "tokenizer_config.json")
            if (keys := _code_keys(directory / name))
        ]
        if code:
            modules = sorted(p.name for p in directory.glob("*.py"))
            raise ModelLoadError(
                f"model {cfg.name} ships its own code ({'; '.join(code)}"
                + (f"; {', '.join(modules)}" if modules else "")
                + "); tunewise does not run it. Review that code, then set model.trust_remote_code: true"
            )
    if weights and not any(directory.glob("*.safetensors")):
        pickled = sorted(p.name for p in directory.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt", ".pkl"})
        raise ModelLoadError(
            f"model {cfg.name}: no .safetensors weights in {directory}"
            + (f" (found {', '.join(pickled)})" if pickled else "")
            + "; tunewise never loads pickled weights: convert them to safetensors, or use a GGUF"
        )


def _code_keys(path: Path) -> list[str]:
    """The keys of a config file that point transformers at Python files in the model directory."""
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested thousands deep
        reason = "nested too deep" if isinstance(exc, RecursionError) else exc
        raise ModelLoadError(f"{path}: not readable JSON ({reason}); is this a Hugging Face model directory?") from None
    return [key for key in CODE_KEYS if isinstance(data, dict) and data.get(key)]


def _in_hub_cache(hub_id: str, kwargs: dict[str, Any]) -> bool:
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(hub_id, local_files_only=True, **kwargs)
    except (OSError, ValueError):
        return False
    return True


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick connect instead of the hub client's minute of retries when there is no network."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}:
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _explain_load_failure(name: str, source: ModelSource, exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "trust_remote_code" in str(exc):
        return f"model {name} ships its own code; review it, then set model.trust_remote_code: true ({text})"
    if source.kind == "hub":
        return (
            f"could not load hub model '{name}': {text}. If offline, download it first where there is "
            "network (huggingface-cli download) or point model.name at a local directory"
        )
    if "safetensors" in str(exc).lower():
        return f"model {name}: no safetensors weights found; tunewise never loads pickled .bin files ({text})"
    return f"could not load model {name}: {text}"


def load_tokenizer(cfg: ModelConfig) -> Any:
    """Only the tokenizer (for length checks): from the GGUF cache when there is one, else read directly."""
    from transformers import AutoTokenizer

    source = resolve_model(cfg)
    if source.kind == "dir":
        check_local_model(Path(source.location), cfg, weights=False)
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code, "revision": cfg.revision}
    try:
        if source.kind == "gguf":
            gguf_path = Path(source.location) / source.gguf_file
            cached = _gguf_cache_dir(gguf_path)
            if (cached / "tokenizer_config.json").is_file():
                check_local_model(cached, cfg, weights=False)
                return AutoTokenizer.from_pretrained(cached, trust_remote_code=cfg.trust_remote_code)
            with _gguf_alone(gguf_path) as folder:
                return AutoTokenizer.from_pretrained(folder, gguf_file=gguf_path.name, trust_remote_code=False)
        return AutoTokenizer.from_pretrained(source.location, **kwargs)
    except Exception as exc:  # as in load_model: many types for a broken directory
        raise ModelLoadError(_explain_load_failure(cfg.name, source, exc)) from None


def _gguf_cache_dir(gguf_path: Path) -> Path:
    return cache_root() / "gguf" / f"{gguf_path.stem}-{file_sha256(gguf_path)[:16]}"


def _gguf_cache(gguf_path: Path) -> Path:
    """Dequantize a GGUF once into a safetensors directory keyed by the file's hash; later loads take ~1 s."""
    target = _gguf_cache_dir(gguf_path)
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _gguf_alone(gguf_path) as folder:
        options: dict[str, Any] = {"gguf_file": gguf_path.name, "trust_remote_code": False}
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, **options)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **options)
        except Exception as exc:  # gguf parsing errors come in many types
            text = str(exc).splitlines()[0].replace(str(folder / gguf_path.name), str(gguf_path))
            raise ModelLoadError(f"could not read GGUF {gguf_path}: {text}; is it a whole, valid GGUF file?") from None
    # The weights are already dequantized; drop the GGUF quantizer so save_pretrained writes plain tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    def write(staging: Path) -> None:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        for stray in (p for p in staging.rglob("*") if p.suffix in {".py", ".pyc"}):  # a cache never holds code
            stray.unlink()

    target.parent.mkdir(parents=True, exist_ok=True)
    save_dir_atomically(target, write)  # a crash never leaves a half-written cache entry in place
    return target


@contextmanager
def _gguf_alone(gguf_path: Path) -> Iterator[Path]:
    """A folder holding only a link to the GGUF. transformers also reads config and tokenizer files found
    beside a GGUF, with any `auto_map` code they name; a GGUF carries its own, so nothing beside it is read."""
    with tempfile.TemporaryDirectory(prefix="tunewise-gguf-") as folder:
        (Path(folder) / gguf_path.name).symlink_to(gguf_path.resolve())
        yield Path(folder)
