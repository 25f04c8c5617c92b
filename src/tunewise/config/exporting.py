"""The `export` section: what `tunewise run` ships at the end of a run, and the defaults of `tunewise export`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tunewise.config.section import Section

ExportFormat = Literal["merged", "gguf", "adapter"]
GgufType = Literal["f32", "f16", "bf16", "q8_0"]


class ExportConfig(Section):
    """Merged safetensors, GGUF + Ollama Modelfile and/or the adapter, each measured against the evaluated model."""

    formats: list[ExportFormat] = Field(
        default_factory=lambda: ["merged", "gguf"],
        description="what to write: merged (safetensors for transformers, vLLM, TGI), gguf (llama.cpp, Ollama, "
        "LM Studio; with a Modelfile), adapter (the LoRA adapter with the tokenizer)",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="precision of the merged weights (the merge itself is always done in float32)"
    )
    gguf_type: GgufType = Field(
        "f16", description="weight type of the GGUF: f32, f16, bf16 or q8_0 (norms and biases stay f32)"
    )
    probe_prompts: int = Field(
        16, gt=0, le=256, description="evaluated prompts whose logits are compared at every position"
    )

    @field_validator("formats")
    @classmethod
    def _some_distinct(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one format: merged, gguf or adapter")
        return list(dict.fromkeys(value))
