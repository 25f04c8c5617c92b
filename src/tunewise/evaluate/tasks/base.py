"""What every evaluation task provides: evaluate (metrics + per-example predictions) and compare."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from rich.progress import Progress

from tunewise.data.prompt import PromptRenderer
from tunewise.data.records import Record
from tunewise.evaluate.stats import Difference


@dataclass
class EvalOutput:
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]] = field(default_factory=list)


class EvalTask(Protocol):
    name: str
    primary_metric: str

    def evaluate(
        self,
        model: Any,
        tokenizer: Any,
        renderer: PromptRenderer,
        records: list[Record],
        batch_size: int,
        progress: Progress | None = None,
        description: str = "",
    ) -> EvalOutput: ...

    def compare(self, a: list[dict[str, Any]], b: list[dict[str, Any]], seed: int = 0) -> dict[str, Difference]: ...
