"""Each artifact checked against what it must reproduce: the merged directory against base + adapter, the GGUF
against the merged model (through llama.cpp when it is installed), the Modelfile's prompt against tunewise's."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from tunewise.config import Config
from tunewise.core.hashing import sha256_file
from tunewise.data.encode import encode_prompts
from tunewise.data.prompt import PromptRenderer
from tunewise.data.records import Record
from tunewise.errors import ExportError
from tunewise.evaluate.tasks import EvalOutput
from tunewise.export.checks import (
    GREEDY_TOKENS,
    ArtifactCheck,
    Stopwatch,
    against_adapter,
    hf_greedy,
    hf_logits,
    probe_sequences,
    score_hf,
    share_equal,
    task_inputs,
    task_output,
)
from tunewise.export.fidelity import logit_fidelity
from tunewise.export.gguf_probe import ProbeRequest, run_probe
from tunewise.export.merge import DTYPES, AdaptedModel
from tunewise.export.modelfile import Modelfile, ollama_prompt, parse_modelfile, render_template
from tunewise.export.run_source import EvaluatedData
from tunewise.models.device import input_device

INSTALL_RUNTIME = "pip install 'tunewise[gguf]'"


@dataclass
class ReferenceRun:
    """The model the run evaluated (base + adapter, unmerged), measured once: logits on the probe sequences,
    greedy continuations of their prompts, and the task's predictions on the whole evaluated split."""

    sequences: list[list[int]]
    prompts: list[list[int]]
    logits: list[np.ndarray]
    greedy: list[list[int]]
    output: EvalOutput
    recorded: bool  # `output` is the run's own predictions.jsonl (else the adapter was scored here)
    seed: int
    stops: list[int]  # the tokens that end an answer: every greedy continuation is compared up to the first
    # Where the reference ran; an artifact read back with transformers runs there too, so its logits differ from
    # the reference's by what the export changed, not by another device's kernels.
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def reference_run(
    adapted: AdaptedModel,
    data: EvaluatedData,
    config: Config,
    probes: int,
    stops: list[int],
    recorded: EvalOutput | None,
    console: Console,
) -> ReferenceRun:
    """Logits and greedy answers of base + adapter on the probes; its task predictions as the run recorded them,
    or, for a run that recorded none (`tunewise train`), scored here."""
    tokenizer, renderer = adapted.tokenizer, adapted.renderer
    sequences = probe_sequences(tokenizer, renderer, data.records, probes)
    prompts = encode_prompts(tokenizer, renderer, data.records[:probes])
    logits = list(hf_logits(adapted.model, sequences))
    greedy = hf_greedy(adapted.model, tokenizer, prompts, GREEDY_TOKENS, stops)
    output = recorded or score_hf(
        data.task, adapted.model, tokenizer, renderer, data.records, config.eval.batch_size, console, "base + adapter"
    )
    device = input_device(adapted.model)
    return ReferenceRun(
        sequences, prompts, logits, greedy, output, recorded is not None, config.train.seed, stops, device
    )


@dataclass
class Measuring:
    """What every artifact is measured against (the reference run, on the evaluated split, with the trained
    prompt) and how its task is scored (eval batch size, progress on the console)."""

    reference: ReferenceRun
    data: EvaluatedData
    renderer: PromptRenderer
    batch_size: int
    console: Console


def check_merged(merged_dir: Path, dtype: str, m: Measuring) -> tuple[ArtifactCheck, list[np.ndarray]]:
    """Re-read the merged directory with plain transformers (no tunewise loader, no remote code) and measure it.
    Returns the check and the merged model's probe logits, which the GGUF is compared with."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    clock = Stopwatch()
    check = ArtifactCheck(f"merged {dtype}", "transformers", "base + adapter")
    options = {"trust_remote_code": False}  # the export ships no code, and none would run if it did
    model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=DTYPES[dtype], use_safetensors=True, **options)
    model = model.to(m.reference.device)
    tokenizer = AutoTokenizer.from_pretrained(merged_dir, **options)
    merged_logits = _measure_hf(check, model, tokenizer, m.reference.logits, m)
    check.seconds = clock.seconds
    return check, merged_logits


def check_gguf(
    gguf_file: Path, merged_logits: list[np.ndarray], m: Measuring, against: str = "merged"
) -> ArtifactCheck:
    """Through llama.cpp when llama-cpp-python is installed (the runtime users serve GGUF with), in a child
    process; otherwise, or when llama.cpp fails on this machine, through transformers' GGUF reader, which checks
    the file (weights, layout, tokenizer) but not llama.cpp itself."""
    if not llama_cpp_installed():
        check = _check_gguf_with_transformers(gguf_file, merged_logits, m)
        check.notes.append(f"llama.cpp runtime not installed ({INSTALL_RUNTIME}): checked with transformers' reader")
    else:
        try:
            check = _check_gguf_with_llama_cpp(gguf_file, merged_logits, m)
        except (ExportError, ValueError) as exc:  # ValueError: results of another shape than asked for
            check = _check_gguf_with_transformers(gguf_file, merged_logits, m)
            check.notes.append(f"{exc}; checked with transformers' reader instead")
    check.against = against
    return check


def llama_cpp_installed() -> bool:
    """Looked up, not imported: the native library is loaded only in the child process that runs the GGUF."""
    return importlib.util.find_spec("llama_cpp") is not None


def _check_gguf_with_llama_cpp(gguf_file: Path, merged_logits: list[np.ndarray], m: Measuring) -> ArtifactCheck:
    clock = Stopwatch()
    check = ArtifactCheck(f"gguf {_gguf_type(gguf_file)}", "llama.cpp", "merged")
    reference, data, renderer = m.reference, m.data, m.renderer
    tokenizer = renderer.tokenizer  # the model is compared on the same token ids; the tokenizers separately
    inputs = task_inputs(data.task, tokenizer, renderer, data.records)
    texts = [renderer.prompt(r) for r in data.records[: len(reference.prompts)]]
    longest = max(len(s) for s in [*reference.sequences, *inputs.prompts])
    longest_choice = max((len(c) for c in inputs.choices or []), default=0)
    request = ProbeRequest(
        reference.sequences,
        reference.prompts,
        GREEDY_TOKENS,
        reference.stops,
        texts,
        inputs.prompts,
        inputs.choices,
        inputs.max_new_tokens,
        # tunewise's own generation stops at the tokenizer's EOS only; the GGUF's task answers must too
        task_stops=[tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [],
        n_ctx=longest + max(GREEDY_TOKENS, inputs.max_new_tokens, longest_choice) + 16,
    )
    with m.console.status("checking the GGUF with llama.cpp"), tempfile.TemporaryDirectory() as workdir:
        result = run_probe(gguf_file, request, Path(workdir))
    check.logits = logit_fidelity(merged_logits, result.logits)
    check.greedy_agreement = share_equal(reference.greedy, result.greedy)
    check.tokenizer_agreement = share_equal(result.tokenized, reference.prompts)
    output = task_output(data.task, tokenizer, renderer, data.records, result.choice_scores, result.task_generations)
    if output is None:
        check.notes.append(f"the {data.task.name} task is not re-scored through llama.cpp")
    else:
        _score(check, m, output)
    check.seconds = clock.seconds
    return check


def check_modelfile(
    modelfile: Modelfile, renderer: PromptRenderer, tokenizer: Any, records: list[Record]
) -> dict[str, Any]:
    """The Modelfile's TEMPLATE and SYSTEM rendered for every evaluated record, tokenized and compared with the
    prompt tunewise trained and evaluated with, token for token."""
    parsed = parse_modelfile(modelfile.text)
    template, system = parsed["TEMPLATE"][-1], (parsed["SYSTEM"] or [""])[-1]  # Ollama uses the last of each
    same = 0
    for record in records:
        try:
            prompt = ollama_prompt(renderer, record, modelfile)
        except ExportError:  # a record this template cannot express (e.g. text a trimming chat template changes)
            continue
        text = render_template(template, system=system, prompt=prompt)
        expected = renderer.prompt(record) + renderer.answer_prefix
        same += encode_prompts_text(tokenizer, text) == encode_prompts_text(tokenizer, expected)
    return {
        "records": len(records),
        "identical_tokens": same,
        "prompt_field": modelfile.prompt_field,
        "stops": modelfile.stops,
        "notes": modelfile.notes,
    }


def check_adapter_copy(adapter_dir: Path, tokenizer: Any, target: Path) -> ArtifactCheck:
    """The adapter shipped as trained, with the tokenizer beside it; checked byte for byte."""
    clock = Stopwatch()
    names = ("adapter_model.safetensors", "adapter_config.json")
    target.mkdir()
    for name in names:  # only these two, as regular files: a link planted in adapter/ is never followed
        source = adapter_dir / name
        if source.is_symlink() or not source.is_file():
            raise ExportError(f"{source} is not a regular file; export a run whose adapter/ tunewise wrote")
        shutil.copyfile(source, target / name, follow_symlinks=False)
    tokenizer.save_pretrained(target)
    check = ArtifactCheck("adapter", "files", "the run's adapter")
    if any(sha256_file(adapter_dir / n) != sha256_file(target / n) for n in names):
        raise ExportError(f"the adapter copied to {target} differs from {adapter_dir}; export again")
    check.notes.append("adapter files identical to the run's (SHA-256)")
    check.seconds = clock.seconds
    return check


def encode_prompts_text(tokenizer: Any, text: str) -> list[int]:
    """A rendered prompt text encoded as tunewise encodes prompts (special tokens parsed, BOS as the model adds)."""
    from tunewise.data.encode import encode_prompt, special_prefix

    return encode_prompt(tokenizer, text, special_prefix(tokenizer))


def _check_gguf_with_transformers(gguf_file: Path, merged_logits: list[np.ndarray], m: Measuring) -> ArtifactCheck:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    clock = Stopwatch()
    check = ArtifactCheck(f"gguf {_gguf_type(gguf_file)}", "transformers GGUF reader", "merged")
    with tempfile.TemporaryDirectory(prefix="tunewise-gguf-check-") as folder:
        (Path(folder) / gguf_file.name).symlink_to(gguf_file.resolve())  # nothing beside the GGUF is read
        options = {"gguf_file": gguf_file.name, "trust_remote_code": False}
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **options).to(m.reference.device)
        gguf_tokenizer = AutoTokenizer.from_pretrained(folder, **options)
    _measure_hf(check, model, gguf_tokenizer, merged_logits, m)
    check.seconds = clock.seconds
    return check


def _measure_hf(
    check: ArtifactCheck, model: Any, own_tokenizer: Any, against: list[np.ndarray], m: Measuring
) -> list[np.ndarray]:
    """A Hugging Face model read back from an artifact: its own tokenizer against the run's, then, on the run's
    token ids, its logits against `against`, its greedy answers and the task. Returns its probe logits."""
    reference, renderer = m.reference, m.renderer
    check.tokenizer_agreement = _tokenizer_agreement(own_tokenizer, renderer, m.data.records, reference)
    tokenizer = renderer.tokenizer  # the model is compared on the same token ids
    logits = list(hf_logits(model, reference.sequences))
    check.logits = logit_fidelity(against, logits)
    greedy = hf_greedy(model, tokenizer, reference.prompts, GREEDY_TOKENS, reference.stops)
    check.greedy_agreement = share_equal(reference.greedy, greedy)
    label = check.artifact.split()[0]
    output = score_hf(m.data.task, model, tokenizer, renderer, m.data.records, m.batch_size, m.console, label)
    _score(check, m, output)
    return logits


def _score(check: ArtifactCheck, m: Measuring, output: EvalOutput) -> None:
    check.metrics = output.metrics
    reference = m.reference
    check.difference, check.prediction_agreement = against_adapter(
        m.data.task, reference.output, output, reference.seed
    )


def _tokenizer_agreement(
    tokenizer: Any, renderer: PromptRenderer, records: list[Record], reference: ReferenceRun
) -> float:
    """Share of the probe prompts an artifact's own tokenizer encodes to the ids the run's tokenizer gave."""
    texts = [renderer.prompt(r) for r in records[: len(reference.prompts)]]
    return share_equal([encode_prompts_text(tokenizer, t) for t in texts], reference.prompts)


def _gguf_type(gguf_file: Path) -> str:
    """f16 from model.f16.gguf: the export names its GGUF <stem>.<type>.gguf."""
    parts = gguf_file.name.rsplit(".", 2)
    return parts[-2] if len(parts) == 3 else "gguf"
