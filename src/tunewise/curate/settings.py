"""The `curate:` config section: an ordered list of steps, each typed and individually switchable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class StepSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True


class ValidateStep(StepSettings):
    step: Literal["validate"]
    max_tokens: int | None = Field(None, gt=0, description="drop examples longer than this (model tokenizer)")


class NormalizeStep(StepSettings):
    step: Literal["normalize"]
    nfc: bool = True
    whitespace: bool = True
    fix_mojibake: bool = True
    strip_for_key: list[Literal["urls", "mentions", "hashtags"]] = Field(
        default_factory=list, description="removed from dedup keys only, never from the training text"
    )
    apply_to_text: bool = Field(True, description="keep the normalized text for training")
    answers: bool = Field(False, description="also normalize answers (completion, output, assistant turns)")


class ConflictsStep(StepSettings):
    step: Literal["conflicts"]
    resolve: Literal["drop", "majority"] = "majority"


class ExactDedupStep(StepSettings):
    step: Literal["exact_dedup"]


class NearDedupStep(StepSettings):
    step: Literal["near_dedup"]
    threshold: float = Field(0.8, gt=0, le=1, description="estimated Jaccard similarity")
    num_perm: int = Field(128, ge=16)
    shingle: Literal["char", "word"] = "char"
    shingle_size: int = Field(5, ge=1)


class SemanticDedupStep(StepSettings):
    step: Literal["semantic_dedup"]
    threshold: float = Field(0.95, gt=0, le=1, description="cosine similarity")


class QualityStep(StepSettings):
    step: Literal["quality"]
    min_words: int = Field(3, ge=0)
    max_words: int | None = Field(None, gt=0)
    max_repetition: float = Field(0.5, gt=0, le=1, description="max share of repeated words")
    max_symbol_ratio: float = Field(0.25, gt=0, le=1, description="max share of non-letter, non-space chars")
    max_garbled_ratio: float = Field(0.02, ge=0, le=1, description="max share of replacement/control chars")
    languages: list[str] | None = Field(None, description="ISO 639-1 codes to keep, e.g. [en]; None = any")


class ConfidenceStep(StepSettings):
    step: Literal["confidence"]
    field: str = "confidence"
    min: float = Field(0.7, ge=0, le=1)
    keep_missing: bool = Field(True, description="keep records that have no confidence value")


class LabelErrorsStep(StepSettings):
    step: Literal["label_errors"]
    action: Literal["drop", "report"] = "drop"
    folds: int = Field(5, ge=2)


class RelevanceStep(StepSettings):
    step: Literal["relevance"]
    description: str | None = None
    seeds: list[str] = Field(default_factory=list)
    top_k: int | None = Field(None, gt=0)
    min_score: float | None = Field(None, ge=-1, le=1)


class BalanceStep(StepSettings):
    step: Literal["balance"]
    per_class: int | None = Field(None, gt=0)
    total: int | None = Field(None, gt=0)


class SplitStep(StepSettings):
    step: Literal["split"]
    val: float = Field(0.1, gt=0, description="fraction if < 1, else a count")
    test: float = Field(0.2, gt=0, description="fraction if < 1, else a count")


class DecontaminateStep(StepSettings):
    step: Literal["decontaminate"]
    ngram: int = Field(10, ge=3, description="words in a shared n-gram that marks contamination")
    near_threshold: float = Field(0.8, gt=0, le=1, description="MinHash Jaccard against eval records")


AnyStep = Annotated[
    ValidateStep
    | NormalizeStep
    | ConflictsStep
    | ExactDedupStep
    | NearDedupStep
    | SemanticDedupStep
    | QualityStep
    | ConfidenceStep
    | LabelErrorsStep
    | RelevanceStep
    | BalanceStep
    | SplitStep
    | DecontaminateStep,
    Field(discriminator="step"),
]


class CurateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    output: Path = Field(Path("curated"), description="folder for the curated splits and the report")
    seed: int = 13
    embed_dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="bfloat16 is ~2x faster on CPUs with AVX512-BF16 (cosine to float32 >= 0.99), but its bits "
        "depend on the CPU's bf16 support: decisions fed by embeddings then reproduce only on the same CPU type",
    )
    steps: list[AnyStep]
