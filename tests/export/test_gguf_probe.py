"""llama.cpp in a child process: its results come back as arrays, and its failures as one-line reasons."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from support.tiny import write_tiny_gguf
from tunewise.errors import ExportError
from tunewise.export import gguf_probe
from tunewise.export.fidelity import logit_fidelity
from tunewise.export.gguf_probe import ProbeRequest, run_probe


def _request(**changes: object) -> ProbeRequest:
    fields: dict = {
        "sequences": [[5, 17, 42, 3], [9, 8, 7]],
        "prompts": [[5, 17, 42]],
        "greedy_tokens": 4,
        "stops": [2],
        "texts": ["<|im_start|>user\nhello<|im_end|>"],
        "task_prompts": [[5, 17], [9, 8]],
        "choices": [[11], [12, 13]],
        "n_ctx": 64,
    }
    return ProbeRequest(**{**fields, **changes})


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tiny_model_dir, tmp_path_factory.mktemp("probe") / "tiny.gguf")


def test_the_child_returns_what_llama_cpp_computed(tiny_gguf: Path, tiny_model_dir: Path, tmp_path: Path):
    pytest.importorskip("llama_cpp")
    from transformers import AutoModelForCausalLM

    request = _request()
    result = run_probe(tiny_gguf, request, tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = [model(input_ids=torch.tensor([ids])).logits[0].numpy() for ids in request.sequences]
    assert logit_fidelity(expected, result.logits).nmse < 1e-4
    assert result.choice_scores is not None and result.choice_scores.shape == (2, 2)
    assert np.all(result.choice_scores <= 0)  # sums of log-probabilities
    assert len(result.greedy) == 1 and len(result.greedy[0]) <= 4
    assert result.tokenized and all(isinstance(i, int) for i in result.tokenized[0])
    assert result.task_generations is None
    assert not list(tmp_path.iterdir())  # request and result files removed


def test_generation_tasks_get_greedy_answers(tiny_gguf: Path, tmp_path: Path):
    pytest.importorskip("llama_cpp")
    result = run_probe(tiny_gguf, _request(choices=None, task_max_new_tokens=3), tmp_path)
    assert result.choice_scores is None
    assert result.task_generations is not None and len(result.task_generations) == 2
    assert all(len(ids) <= 3 for ids in result.task_generations)
    first = result.task_generations[0][0]  # the task's own stops apply to task answers, not the probe's
    stopped = run_probe(tiny_gguf, _request(choices=None, task_max_new_tokens=3, task_stops=[first]), tmp_path)
    assert stopped.task_generations is not None and stopped.task_generations[0] == []


def test_a_file_llama_cpp_cannot_load_is_a_one_line_reason(tmp_path: Path):
    pytest.importorskip("llama_cpp")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ExportError, match="llama.cpp failed: .*GGUF"):
        run_probe(bad, _request(), work)
    assert not list(work.iterdir())


def test_a_hung_runtime_is_killed_at_the_timeout(tiny_gguf: Path, tmp_path: Path):
    with pytest.raises(ExportError, match="did not finish the GGUF check within 0 s"):
        run_probe(tiny_gguf, _request(), tmp_path, timeout=0.01)


def test_a_crash_is_named_by_its_signal(tmp_path: Path):
    assert "SIGSEGV" in gguf_probe._death(-signal.SIGSEGV, tmp_path)
    assert "SIGILL" in gguf_probe._death(-signal.SIGILL, tmp_path)
    assert gguf_probe._death(1, tmp_path) == "exited with code 1"
