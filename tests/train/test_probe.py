"""tunewise.train.probe: real training steps in a child process give finite figures whose memory growth is what the
arithmetic predicts, and a probe that fails (a model that cannot load, a kill, a hang) is a one-line reason."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from support.features import make_features
from tunewise.config import Config
from tunewise.models.anatomy import read_anatomy
from tunewise.train import probe
from tunewise.train.estimate import memory_breakdown, micro_batch
from tunewise.train.probe import _reason, available_memory_bytes, matmul_flops_per_second, run_probe


@pytest.fixture(scope="module")
def wide_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's tokenizer with wider layers: activations of a long micro-batch then outweigh the noise of a
    process's resident memory."""
    directory = tmp_path_factory.mktemp("wide-llama")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def make_config(model_dir: Path, tmp_path: Path, **train: object) -> Config:
    return Config(
        model={"name": str(model_dir)},
        data={"train": str(tmp_path / "unused.jsonl")},
        train={"batch_size": 4, **train},
    )


def batches(lengths: list[int], vocab: int) -> list[dict[str, list[int]]]:
    return [
        {"input_ids": [3 + (i * 13 + j) % (vocab - 3) for j in range(n)], "labels": [-100] * (n - 2) + [5, 6]}
        for i, n in enumerate(lengths)
    ]


def test_a_probe_measures_steps_and_the_peak_the_arithmetic_predicts(wide_model_dir: Path, tmp_path: Path) -> None:
    config = make_config(wide_model_dir, tmp_path, grad_accum=2)
    vocab = read_anatomy(config.model).vocab_size
    heaviest = batches([700] * 4, vocab)
    typical = [batches([300, 200, 250, 150], vocab), batches([100, 120, 90, 110], vocab)]
    outcome = run_probe(config, [[heaviest, typical[0]], typical, typical], batches([80, 60], vocab), pad_token_id=0)
    assert outcome.failure is None, outcome.failure
    result = outcome.result
    assert result is not None and result.steps == 3 and result.device == "cpu"
    assert result.step_tokens == [2800 + 900, 900 + 420, 900 + 420]
    assert all(s > 0 for s in result.step_seconds) and result.train_seconds_per_token > 0
    assert result.eval_tokens == 140 and result.eval_seconds_per_token > 0
    assert result.peak_scope == "training steps" and result.peak_bytes > result.ready_bytes > result.start_bytes
    # What the steps add to the loaded process is the arithmetic's step memory: activations of the heaviest micro-batch
    # with the allocator's slack, the loss's vocabulary tensors and the backward in flight.
    batch = micro_batch([(n, 2) for n in [700] * 4], [0, 1, 2, 3], config.train)
    memory = memory_breakdown(read_anatomy(config.model), config, batch, "cpu")
    predicted = memory.activations + memory.allocator + memory.lm_head + memory.backward
    assert result.peak_bytes - result.ready_bytes == pytest.approx(predicted, rel=0.2)
    assert outcome.to_json()["result"]["train_seconds_per_token"] == result.train_seconds_per_token


def test_a_model_that_cannot_load_is_the_probes_one_line_reason(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "no-weights"
    shutil.copytree(tiny_model_dir, broken, ignore=shutil.ignore_patterns("*.safetensors"))
    config = make_config(broken, tmp_path)
    features = make_features(4, 300, seed=1)
    outcome = run_probe(config, [[features]], features, pad_token_id=0)
    assert outcome.result is None and "no .safetensors weights" in (outcome.failure or "")
    assert "\n" not in outcome.failure and "Traceback" not in outcome.failure


@pytest.mark.parametrize(
    ("child", "reason"),
    [
        (subprocess.CompletedProcess([], -9, "", ""), "killed (SIGKILL), most likely by the out-of-memory killer"),
        (subprocess.CompletedProcess([], -11, "", ""), "crashed (SIGSEGV)"),
        (subprocess.CompletedProcess([], 1, "", "boom\nImportError: no torch\n"), "code 1: ImportError: no torch"),
        (subprocess.TimeoutExpired([], 5), "did not finish within"),
    ],
)
def test_a_child_that_dies_or_hangs_is_reported(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, child: object, reason: str
) -> None:
    def fake_run(*args: object, **kwargs: object) -> object:
        if isinstance(child, BaseException):
            raise child
        return child

    monkeypatch.setattr(probe.subprocess, "run", fake_run)
    outcome = run_probe(make_config(tiny_model_dir, tmp_path), [[make_features(2, 300)]], [], pad_token_id=0)
    assert outcome.result is None and reason in (outcome.failure or "")


def test_out_of_memory_in_the_child_reads_as_not_fitting() -> None:
    assert "does not fit" in _reason(MemoryError())
    assert "does not fit" in _reason(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB"))
    assert _reason(ValueError("bad shape\nmore")) == "the probe failed: ValueError: bad shape"


def test_machine_figures() -> None:
    assert available_memory_bytes("cpu") > 2**20
    assert 1e6 < matmul_flops_per_second("cpu", "float32", 64, 64, 64, budget_s=0.05) < 1e15
