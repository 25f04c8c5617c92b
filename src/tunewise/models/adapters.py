"""LoRA adapters from disk: checked (safetensors only, a real PEFT config) before PEFT sees them, several
joined into one PeftModel under their names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunewise.errors import ModelLoadError


def attach_adapter(model: Any, adapter: Path, name: str = "default") -> Any:
    """Load a LoRA adapter (safetensors only); further adapters join the same PeftModel under their name.
    A damaged adapter, or one trained on another base model, is a one-line `ModelLoadError`, never PEFT's traceback."""
    from peft import PeftModel, PeftType

    from tunewise.core.safeio import Unreadable, read_json_file

    if not (adapter / "adapter_config.json").is_file():
        raise ModelLoadError(f"--adapter {adapter}: no adapter_config.json; pass the run's adapter/ directory")
    if not (adapter / "adapter_model.safetensors").is_file():
        raise ModelLoadError(f"--adapter {adapter}: no adapter_model.safetensors (only safetensors are loaded)")
    redo = "pass the adapter/ directory of a run trained on this config's model.name"
    try:
        settings = read_json_file(adapter / "adapter_config.json", MAX_ADAPTER_CONFIG)
    except Unreadable as exc:
        raise ModelLoadError(f"--adapter {adapter}: {exc}; {redo}") from None
    if not isinstance(settings, dict):
        raise ModelLoadError(
            f"--adapter {adapter}: adapter_config.json is a JSON {_json_kind(settings)}, not an object; {redo}"
        )
    peft_type = settings.get("peft_type")
    if not isinstance(peft_type, str) or peft_type not in {t.value for t in PeftType}:
        raise ModelLoadError(
            f"--adapter {adapter}: adapter_config.json: peft_type {json.dumps(peft_type)[:80]} is not a PEFT "
            f"adapter type (a tunewise adapter is LORA); {redo}"
        )
    try:
        if isinstance(model, PeftModel):
            model.load_adapter(str(adapter), adapter_name=name)
            return model
        return PeftModel.from_pretrained(model, str(adapter), adapter_name=name)
    except Exception as exc:  # a bad safetensors header, other shapes (r, base model), unknown target modules...
        raise ModelLoadError(
            f"--adapter {adapter}: not an adapter for this model: {type(exc).__name__}: {_first_line(exc)}; {redo}"
        ) from exc


MAX_ADAPTER_CONFIG = 1 << 20  # adapter_config.json is a few hundred bytes; more is not an adapter's config


def _json_kind(value: Any) -> str:
    kinds = {list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """The gist of a library's error in one line: its first line, with the next one when the first only
    introduces it ("Error(s) in loading state_dict for ...:" then "size mismatch for ...")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return "(no message)"
    text = lines[0] if not lines[0].endswith(":") or len(lines) == 1 else f"{lines[0]} {lines[1]}"
    return text.rstrip(".") if len(text) <= limit else text[: limit - 1] + "…"
