"""Model loading: HF dirs, hub ids, GGUF files and built-in aliases, safetensors only."""

from tunewise.models.loader import LoadedModel, load_model, load_tokenizer, resolve_model

__all__ = ["LoadedModel", "load_model", "load_tokenizer", "resolve_model"]
