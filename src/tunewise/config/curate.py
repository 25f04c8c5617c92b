"""The `curate:` config section: a list of steps, each typed and individually switchable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

STEP = "this step's name"  # the description of every step's `step` key


class StepSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="false skips this step (it stays in the list and the report)")


class ValidateStep(StepSettings):
    """Drops records that cannot be rendered into a prompt, whose label is not in data.labels, or that are too long."""

    step: Literal["validate"] = Field(description=STEP)
    max_tokens: int | None = Field(
        None, gt=0, description="drop examples whose rendered prompt and answer exceed this many tokens"
    )


class NormalizeStep(StepSettings):
    """Repairs record text; evaluation and prediction inputs get the same repairs as the training text."""

    step: Literal["normalize"] = Field(description=STEP)
    nfc: bool = Field(True, description="Unicode NFC normalization")
    whitespace: bool = Field(True, description="collapse runs of spaces in a line; drop trailing spaces")
    fix_mojibake: bool = Field(True, description="repair mojibake (text decoded with the wrong encoding), with ftfy")
    strip_for_key: list[Literal["urls", "mentions", "hashtags"]] = Field(
        default_factory=list, description="removed from dedup keys only, never from the training text"
    )
    apply_to_text: bool = Field(True, description="keep the normalized text for training")
    answers: bool = Field(False, description="also normalize answers (completion, output, assistant turns)")


class ConflictsStep(StepSettings):
    """Finds records with the same text and different labels."""

    step: Literal["conflicts"] = Field(description=STEP)
    resolve: Literal["drop", "majority"] = Field(
        "majority", description="majority: keep the most frequent label's records (drop all on a tie); drop: drop all"
    )


class ExactDedupStep(StepSettings):
    """Drops exact duplicates (case-folded, spaces collapsed), keeping the first."""

    step: Literal["exact_dedup"] = Field(description=STEP)


class NearDedupStep(StepSettings):
    """Drops near-duplicates (MinHash + LSH), keeping the first of each cluster."""

    step: Literal["near_dedup"] = Field(description=STEP)
    threshold: float = Field(0.8, gt=0, le=1, description="estimated Jaccard similarity")
    num_perm: int = Field(128, ge=16, description="MinHash permutations: more estimate similarity better, slower")
    shingle: Literal["char", "word"] = Field("char", description="compare texts by character or by word n-grams")
    shingle_size: int = Field(5, ge=1, description="characters or words per n-gram")


class SemanticDedupStep(StepSettings):
    """Drops records whose sentence embedding is close to an earlier kept record's."""

    step: Literal["semantic_dedup"] = Field(description=STEP)
    threshold: float = Field(0.95, gt=0, le=1, description="cosine similarity")


class QualityStep(StepSettings):
    """Drops records that are too short or long, repetitive, full of symbols or garbled, or in another language."""

    step: Literal["quality"] = Field(description=STEP)
    min_words: int = Field(3, ge=0, description="fewest words a text may have")
    max_words: int | None = Field(None, gt=0, description="most words a text may have")
    max_repetition: float = Field(0.5, gt=0, le=1, description="max share of repeated words")
    max_symbol_ratio: float = Field(0.25, gt=0, le=1, description="max share of non-letter, non-space chars")
    max_garbled_ratio: float = Field(0.02, ge=0, le=1, description="max share of replacement/control chars")
    languages: list[str] | None = Field(None, description="ISO 639-1 codes to keep, e.g. [en]; unset: any language")


class ConfidenceStep(StepSettings):
    """Drops records whose annotator confidence is below a threshold."""

    step: Literal["confidence"] = Field(description=STEP)
    field: str = Field("confidence", description="column of the data file holding each record's confidence")
    min: float = Field(0.7, ge=0, le=1, description="lowest confidence kept")
    keep_missing: bool = Field(True, description="keep records that have no confidence value")


class LabelErrorsStep(StepSettings):
    """Finds likely mislabelled records: cleanlab on out-of-fold probabilities of a classifier on embeddings."""

    step: Literal["label_errors"] = Field(description=STEP)
    action: Literal["drop", "report"] = Field(
        "drop", description="drop the records, or keep them with the suspicion in a label_issue column"
    )
    folds: int = Field(
        5, ge=2, description="cross-validation folds; the step is skipped when a label has fewer records"
    )


class RelevanceStep(StepSettings):
    """Keeps the records most similar to a task description and/or seed examples: give either or both, and
    top_k and/or min_score."""

    step: Literal["relevance"] = Field(description=STEP)
    description: str | None = Field(None, description="the task in words, compared with each record")
    seeds: list[str] = Field(default_factory=list, description="example texts of the task")
    top_k: int | None = Field(None, gt=0, description="keep at most this many records, the most similar")
    min_score: float | None = Field(None, ge=-1, le=1, description="keep records at least this similar (cosine)")


class BalanceStep(StepSettings):
    """Samples the training records down to per-class and/or total sizes (seeded, stratified)."""

    step: Literal["balance"] = Field(description=STEP)
    per_class: int | None = Field(None, gt=0, description="most training records per label")
    total: int | None = Field(None, gt=0, description="most training records in all, shared out equally by label")


class SplitStep(StepSettings):
    """Splits off validation and test records (stratified, seeded) where data.val or data.test is not given."""

    step: Literal["split"] = Field(description=STEP)
    val: float = Field(0.1, gt=0, description="fraction if < 1, else a count")
    test: float = Field(0.2, gt=0, description="fraction if < 1, else a count")


class DecontaminateStep(StepSettings):
    """Drops records that share a long word n-gram with, or nearly copy, an evaluation record (test, else
    validation); the evaluation records themselves stay."""

    step: Literal["decontaminate"] = Field(description=STEP)
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
    """Curation: steps that keep or drop each training record with a reason, before training."""

    model_config = ConfigDict(extra="forbid")
    output: Path = Field(Path("curated"), description="folder for the curated splits and the report")
    seed: int = Field(13, description="seed of the steps that sample: split, balance, label_errors folds")
    embed_dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="bfloat16 is ~2x faster on CPUs with AVX512-BF16 (cosine to float32 >= 0.99), but its bits "
        "depend on the CPU's bf16 support: decisions fed by embeddings then reproduce only on the same CPU type",
    )
    engine: Literal["local", "ray"] = Field(
        "local",
        description="local: this process, streaming the input in chunks; ray: the same steps on Ray Data "
        "(pip install 'tunewise[ray]'), with the same decisions",
    )
    ray_address: str | None = Field(
        None, description="the Ray cluster to join (e.g. ray://head:10001 or auto); unset: a local Ray"
    )
    steps: list[AnyStep] = Field(
        description="the steps; they run by kind whatever the list order: cleaning, relevance, split, "
        "decontaminate, then balance (list order holds within a kind)"
    )
