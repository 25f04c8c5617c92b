"""`tunewise predict`: model outputs for an input file, as JSONL (batched), base model or an adapter."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tunewise.config import Config
from tunewise.data.jsonl import write_jsonl
from tunewise.data.prompt import PromptRenderer
from tunewise.data.splits import load_file
from tunewise.errors import ConfigError
from tunewise.evaluate.generate import generate_answers
from tunewise.evaluate.tasks import ClassificationTask


def predict(config: Config, input_path: Path, output_path: Path, adapter: Path | None, console: Console) -> Path:
    from tunewise.models import load_model
    from tunewise.pipeline import attach_adapter

    data = config.data.model_copy(update={"on_error": "skip"})
    records, rejects, total = load_file(input_path, data, need_answer=False)
    if config.data.kind == "classification" and not config.data.labels:
        raise ConfigError("predict for classification needs the label set: set data.labels in the config")
    with console.status(f"loading model {config.model.name}"):
        loaded = load_model(config.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    if adapter is not None:
        model = attach_adapter(model, adapter)
    labels = list(config.data.labels or [])
    renderer = PromptRenderer(config.prompt, config.data.kind, tokenizer, labels)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        if config.data.kind == "classification":
            task = ClassificationTask(labels)
            scores = task.score(model, tokenizer, renderer, records, config.eval.batch_size, progress, "predicting")
            outputs = [
                {
                    "prediction": labels[int(row.argmax())],
                    "logprobs": {k: round(float(v), 4) for k, v in zip(labels, row, strict=True)},
                }
                for row in scores
            ]
        else:
            texts = generate_answers(
                model,
                tokenizer,
                renderer,
                records,
                config.eval.max_new_tokens,
                config.eval.batch_size,
                config.eval.stop,
                progress=progress,
                description="predicting",
            )
            outputs = [{"prediction": text} for text in texts]
    output_path.parent.mkdir(parents=True, exist_ok=True)
    rows = ({"source": r.where, **r.to_row(), **output} for r, output in zip(records, outputs, strict=True))
    write_jsonl(output_path, rows)
    if rejects:
        rejects_path = output_path.with_suffix(".rejects.jsonl")
        write_jsonl(rejects_path, (reject.to_json() for reject in rejects))
        console.print(f"[yellow]{len(rejects)} of {total} input rows rejected; reasons in {rejects_path}[/]")
    console.print(f"{len(records)} predictions -> {output_path}")
    return output_path
