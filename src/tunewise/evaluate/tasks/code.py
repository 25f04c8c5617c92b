"""The `code` evaluation task: generated programs run against unit tests in the sandbox; pass@k."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from math import comb
from typing import Any

from tunewise.errors import ConfigError
from tunewise.evaluate.code_permission import CodeGrant
from tunewise.evaluate.generate import generate_answers
from tunewise.evaluate.sandbox import confinement_problem, run_program
from tunewise.evaluate.stats import Difference, mean_difference
from tunewise.evaluate.tasks.base import EvalOutput

_FENCE = re.compile(r"```(?:python|py)?\n(.*?)(?:```|$)", re.DOTALL)


def pass_at_k(n: int, correct: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - correct < k:
        return 1.0
    return 1.0 - comb(n - correct, k) / comb(n, k)


def build_program(header: str, completion: str, test: str, entry_point: str) -> str:
    """Header + body as HumanEval expects; a fenced answer that restates the function stands alone."""
    fenced = _FENCE.search(completion)
    body = fenced.group(1) if fenced else completion
    code = body if re.search(rf"def\s+{re.escape(entry_point)}\s*\(", body) else header + body
    return f"{code}\n\n{test}\n\ncheck({entry_point})\n"


@dataclass
class CodeTask:
    """Records: completion kind with `prompt` (function header + docstring), extra `test` and `entry_point`."""

    max_new_tokens: int
    stop: list[str]
    allow_execution: CodeGrant | None  # from the command line of this invocation; None: code may not run
    samples: int = 1
    k: list[int] = field(default_factory=lambda: [1])
    timeout: float = 5.0
    name: str = "code"
    primary_metric: str = "pass@1"

    def __post_init__(self) -> None:
        if not self.allow_execution:
            raise ConfigError("the code task runs model-written programs: pass --allow-code-execution to allow it")
        # Refused here, when the task is built at the start of a run, not after the model has been trained
        if not self.allow_execution.unconfined and (problem := confinement_problem()) is not None:
            raise ConfigError(problem)

    def evaluate(self, model, tokenizer, renderer, records, batch_size, progress=None, description=""):
        unconfined = self.allow_execution is not None and self.allow_execution.unconfined
        for record in records:
            if "test" not in record.extra or "entry_point" not in record.extra:
                raise ConfigError(f"{record.where}: code records need 'test' and 'entry_point' fields")
        completions = [
            generate_answers(
                model,
                tokenizer,
                renderer,
                records,
                self.max_new_tokens,
                batch_size,
                self.stop,
                do_sample=self.samples > 1,
                temperature=0.8,
                top_p=0.95,
                seed=seed,
                progress=progress,
                description=description or "generating code",
            )
            for seed in range(self.samples)
        ]
        predictions, per_k = [], {k: [] for k in self.k}
        for i, record in enumerate(records):
            results = [
                run_program(
                    build_program(
                        str(record.fields["prompt"]), c[i], record.extra["test"], record.extra["entry_point"]
                    ),
                    self.timeout,
                    allow_unconfined=unconfined,
                )
                for c in completions
            ]
            correct = sum(r.passed for r in results)
            for k in self.k:
                per_k[k].append(pass_at_k(self.samples, correct, k))
            predictions.append(
                {
                    "source": record.where,
                    "passed": correct,
                    "samples": self.samples,
                    "pass@1": pass_at_k(self.samples, correct, 1),
                    "first_completion": completions[0][i],
                    "first_status": results[0].status,
                    "first_detail": results[0].detail,
                }
            )
        metrics: dict[str, Any] = {"n": len(records), "samples": self.samples}
        metrics.update({f"pass@{k}": sum(v) / max(len(v), 1) for k, v in per_k.items()})
        return EvalOutput(metrics, predictions)

    def compare(self, a: list[dict[str, Any]], b: list[dict[str, Any]], seed: int = 0) -> dict[str, Difference]:
        return {"pass@1": mean_difference([p["pass@1"] for p in a], [p["pass@1"] for p in b], seed=seed)}
