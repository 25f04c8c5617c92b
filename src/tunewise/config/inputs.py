"""The sections that say what a run reads: the base model (`model`), the data files (`data`) and how a record
becomes the prompt (`prompt`)."""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator

from tunewise.config.section import Section

RecordKind = Literal["classification", "completion", "chat", "alpaca"]
_BOOL = TypeAdapter(bool)


class ModelConfig(Section):
    """The base model that is evaluated and fine-tuned."""

    name: str = Field(
        "smollm2-135m-instruct",
        description="an alias (smollm2-135m-instruct, gemma3-270m), a Hugging Face model folder, a .gguf file or a "
        "hub id",
    )
    gguf_file: str | None = Field(None, description="GGUF file name inside `name` when `name` is a folder")
    revision: str | None = Field(None, description="branch, tag or commit of a hub model (default: its main branch)")
    trust_remote_code: bool = Field(
        False, description="load a model that ships its own Python code, which then runs: review that code first"
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="precision the model weights are loaded, trained and evaluated in"
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="where the model runs; auto: the accelerator when there is one (CUDA, then MPS), else CPU"
    )
    quantize: Literal["none", "8bit", "4bit"] = Field(
        "none",
        description="load the frozen base quantized through bitsandbytes (4bit: NF4, QLoRA) and train LoRA on top; "
        "needs `pip install bitsandbytes`; export reloads the base in full precision before merging",
    )


class DataConfig(Section):
    """The data files and how their records are read. Relative paths resolve against the config file."""

    kind: RecordKind = Field(
        "classification",
        description="record kind: classification (text, label), completion (prompt, completion), "
        "chat (messages), alpaca (instruction, input, output)",
    )
    train: Path = Field(description="training file: .jsonl, .csv or .parquet")
    val: Path | None = Field(None, description="validation file (default: split off train, see val_fraction)")
    test: Path | None = Field(None, description="test file (default: split off train, see test_fraction)")
    format: Literal["auto", "jsonl", "csv", "parquet"] = Field(
        "auto", description="file format; auto: from the extension (.jsonl/.json/.ndjson, .csv, .parquet)"
    )
    encoding: str = Field("utf-8", description="text encoding of JSONL/CSV files, e.g. utf-8, utf-16, latin-1")
    fields: dict[str, str] = Field(
        default_factory=dict, description="column of the file for each field of the kind, e.g. {text: tweet}"
    )
    labels: list[str] | None = Field(
        None, description="allowed labels (classification); other labels are bad records; default: those in train"
    )
    on_error: Literal["raise", "skip"] = Field(
        "raise", description="a bad record: raise stops with file, line and field; skip writes it to rejects.jsonl"
    )
    val_fraction: float = Field(
        0.1, gt=0, lt=1, description="without `val`: share of the training records held out for validation"
    )
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="without `test`: share of the training records held out for testing"
    )
    max_train_examples: int | None = Field(None, gt=0, description="train on a seeded sample of at most this many")
    max_val_examples: int | None = Field(None, gt=0, description="validate on a seeded sample of at most this many")
    max_test_examples: int | None = Field(None, gt=0, description="test on a seeded sample of at most this many")

    @field_validator("encoding")
    @classmethod
    def _text_encoding(cls, value: str) -> str:
        """Python's codecs also hold byte transforms (hex, base64, rot13): they cannot decode a file."""
        try:
            info = codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}; e.g. utf-8, utf-16, latin-1") from None
        if not getattr(info, "_is_text_encoding", True) or info.name in {"punycode", "idna", "undefined"}:
            raise ValueError(f"{value!r} is a codec, not a text encoding; e.g. utf-8, utf-16, latin-1")
        return value


class PromptSettings(Section):
    """How a record becomes the model's prompt, the same in training, evaluation and prediction."""

    template: str | None = Field(
        None,
        description="Jinja2 template of the user turn (sandboxed): the record's fields, its other columns and "
        "`labels` are variables; default: one per data kind",
    )
    system: str | None = Field(
        None,
        description="system message: the chat template's system turn, or without one the prompt's first paragraph",
    )
    chat_template: bool | Literal["auto"] = Field(
        True,
        description="wrap the prompt in the model's chat template; false: a plain prompt (base models); "
        "auto: the chat template when the tokenizer has one, else the plain prompt",
    )
    answer_prefix: str | None = Field(
        None, description="text between prompt and answer; default ' ' without a chat template ('Label: positive')"
    )
    few_shot: int = Field(0, ge=0, description="seeded solved training examples shown before each question (not chat)")

    @field_validator("chat_template", mode="before")
    @classmethod
    def _chat_template_choice(cls, value: Any) -> Any:
        """One error naming the three choices, instead of one per member of the union; what a bool field accepts
        ("false", 0) is read as before."""
        if value == "auto":
            return value
        try:
            return _BOOL.validate_python(value)
        except ValidationError:
            raise ValueError("use true, false or auto") from None


class PromptConfig(PromptSettings):
    """How a record becomes the model's prompt, the same in training, evaluation and prediction."""

    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="more prompts every model is also evaluated with: name -> the keys above it changes, "
        "e.g. {few: {few_shot: 3}}",
    )

    @model_validator(mode="after")
    def _check_variants(self) -> PromptConfig:
        for name in self.variants:
            self.variant(name)
        return self

    def variant(self, name: str) -> PromptSettings:
        """This prompt with the variant's keys changed; unknown keys are errors naming the variant."""
        base = self.model_dump(exclude={"variants"})
        try:
            return PromptSettings.model_validate({**base, **(self.variants[name] or {})})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"prompt.variants.{name}: {problems}") from None
