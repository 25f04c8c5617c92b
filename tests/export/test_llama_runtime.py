"""GgufRuntime against the Hugging Face model it was converted from: logits, choice scores, greedy decoding."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from support.tiny import write_tiny_gguf
from tunewise.errors import ExportError
from tunewise.evaluate.scoring import choice_logprobs
from tunewise.export import llama_runtime
from tunewise.export.fidelity import NMSE_EXCELLENT, logit_fidelity
from tunewise.export.llama_runtime import INSTALL_HINT, GgufRuntime, runtime_available

TEXTS = [
    "the car ride was great today",
    "<|im_start|>user\nClassify the text as one of: negative, neutral, positive. Text: my trip was awful<|im_end|>\n",
    "really very plain and normal",
]


@pytest.fixture(scope="module")
def gguf_file(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf")
    return write_tiny_gguf(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf")


@pytest.fixture(scope="module")
def runtime(gguf_file: Path) -> Iterator[GgufRuntime]:
    pytest.importorskip("llama_cpp")
    with GgufRuntime(gguf_file, n_ctx=256, n_threads=1) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def hf(tiny_model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def test_logits_match_the_hugging_face_model(runtime: GgufRuntime, hf: tuple[Any, Any]) -> None:
    model, tokenizer = hf
    prompts = [_ids(tokenizer, text) for text in TEXTS]
    reference = [model(input_ids=torch.tensor([p])).logits[0].numpy() for p in prompts]
    candidate = [runtime.logits(p) for p in prompts]
    assert all(
        c.shape == (len(p), model.config.vocab_size) and c.dtype == np.float32
        for c, p in zip(candidate, prompts, strict=True)
    )
    fidelity = logit_fidelity(reference, candidate)
    assert fidelity.nmse < NMSE_EXCELLENT, fidelity
    assert fidelity.top1_agreement == 1.0, fidelity


@torch.no_grad()
def test_an_f16_kv_cache_is_close_but_not_exact(gguf_file: Path, runtime: GgufRuntime, hf: tuple[Any, Any]) -> None:
    model, tokenizer = hf
    prompt = _ids(tokenizer, TEXTS[1])
    reference = model(input_ids=torch.tensor([prompt])).logits[0].numpy()
    with GgufRuntime(gguf_file, n_ctx=64, n_threads=1, f32_kv_cache=False) as deployed:
        f16 = logit_fidelity([reference], [deployed.logits(prompt)])
    f32 = logit_fidelity([reference], [runtime.logits(prompt)])
    assert f16.nmse < NMSE_EXCELLENT and f16.top1_agreement == 1.0, f16
    assert f32.max_abs_diff < 1e-4 and f16.max_abs_diff > 10 * f32.max_abs_diff, (f32, f16)


def test_logits_do_not_carry_state_between_prompts(runtime: GgufRuntime) -> None:
    first = runtime.logits([5, 6, 7, 8])
    runtime.logits([40, 41, 42, 43, 44, 45, 46])  # a longer prompt leaves more cache behind
    assert np.array_equal(runtime.logits([5, 6, 7, 8]), first)
    # A shared prefix must not be reused either: same first tokens, then a different tail.
    other = runtime.logits([5, 6, 7, 9])
    assert np.array_equal(other[:3], first[:3]) and not np.array_equal(other[3], first[3])


def test_choice_scores_match_tunewise_scoring_on_the_hugging_face_model(
    runtime: GgufRuntime, hf: tuple[Any, Any]
) -> None:
    model, tokenizer = hf
    prompts = [_ids(tokenizer, text) for text in TEXTS] + [[12, 13]]
    choices = [_ids(tokenizer, " negative"), _ids(tokenizer, " neutral"), [21, 22, 23], [24]]
    assert any(len(c) > 1 for c in choices)  # multi-token choices exercise the rewind to the prompt
    expected = choice_logprobs(model, prompts, choices, pad_id=tokenizer.pad_token_id, batch_size=2).numpy()
    scores = runtime.choice_logprobs(prompts, choices)
    assert scores.shape == (len(prompts), len(choices))
    np.testing.assert_allclose(scores, expected, atol=1e-4, rtol=0)
    assert (scores.argmax(1) == expected.argmax(1)).all()


def test_choice_scores_equal_one_pass_over_prompt_and_choice(runtime: GgufRuntime) -> None:
    prompt, choices = [30, 31, 32], [[40, 41, 42], [43], [44, 45]]
    scores = runtime.choice_logprobs([prompt], choices)
    for column, choice in enumerate(choices):
        logp = torch.log_softmax(torch.from_numpy(runtime.logits(prompt + choice)).double(), dim=-1)
        expected = sum(float(logp[len(prompt) - 1 + j, token]) for j, token in enumerate(choice))
        assert scores[0, column] == pytest.approx(expected, abs=1e-5)


def test_a_shared_prompt_prefix_is_evaluated_once_and_scores_alike(runtime: GgufRuntime) -> None:
    prefix = [5, 17, 42, 3, 99, 7, 8]
    prompts = [[*prefix, 11], [*prefix, 12, 13], [*prefix, 14, 15, 16]]
    choices = [[20], [21, 22]]
    together = runtime.choice_logprobs(prompts, choices)
    alone = np.vstack([runtime.choice_logprobs([prompt], choices) for prompt in prompts])  # no prefix reuse
    np.testing.assert_allclose(together, alone, atol=1e-4)
    assert llama_runtime._shared_prefix(prompts) == len(prefix)
    assert llama_runtime._shared_prefix([[1, 2], [1, 2]]) == 1  # each prompt keeps a token of its own
    assert llama_runtime._shared_prefix([[1, 2, 3]]) == 0


@torch.no_grad()
def test_greedy_tokens_equal_hugging_face_greedy_generation(runtime: GgufRuntime, hf: tuple[Any, Any]) -> None:
    model, tokenizer = hf
    stop = {tokenizer.eos_token_id}
    for text in TEXTS:
        prompt = _ids(tokenizer, text)
        output = model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            do_sample=False,
            max_new_tokens=12,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        expected = [t for t in output[0, len(prompt) :].tolist()]
        expected = (
            expected[: expected.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in expected else expected
        )
        assert runtime.greedy(prompt, 12, stop) == expected, text


def test_greedy_stops_before_a_stop_id_and_at_the_limit(runtime: GgufRuntime) -> None:
    free = runtime.greedy([5, 6, 7], 10, set())
    assert len(free) == 10
    assert runtime.greedy([5, 6, 7], 4, set()) == free[:4]
    stop = free[3]
    assert runtime.greedy([5, 6, 7], 10, {stop}) == free[: free.index(stop)]
    assert runtime.greedy([5, 6, 7], 0, set()) == []


def test_tokenizer_of_the_gguf_agrees_with_the_hugging_face_one(runtime: GgufRuntime, hf: tuple[Any, Any]) -> None:
    _, tokenizer = hf
    for text in TEXTS:
        assert runtime.tokenize(text) == tokenizer(text)["input_ids"], text
    # Without special-token parsing the markers are spelled out as ordinary text.
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") not in runtime.tokenize("<|im_start|>", special=False)


def test_runtime_prints_nothing_while_loading_and_running(gguf_file: Path, capfd: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("llama_cpp")
    with GgufRuntime(gguf_file, n_ctx=64, n_threads=1) as loaded:
        loaded.logits([5, 6, 7])
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_a_file_that_is_not_a_gguf_is_an_export_error(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    path = tmp_path / "model.gguf"
    path.write_text("this is a text file", encoding="utf-8")
    with pytest.raises(ExportError, match="not a GGUF") as raised:
        GgufRuntime(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(ExportError, match="no such GGUF"):
        GgufRuntime(tmp_path / "missing.gguf")
    with pytest.raises(ExportError, match="no such GGUF"):
        GgufRuntime(tmp_path)


def test_a_truncated_gguf_is_an_export_error(gguf_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    data = gguf_file.read_bytes()
    for size in (8, 200, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut-{size}.gguf"
        path.write_bytes(data[:size])
        with pytest.raises(ExportError, match="cannot load this GGUF") as raised:
            GgufRuntime(path)
        assert "\n" not in str(raised.value)


def test_inputs_the_context_cannot_hold_are_export_errors_naming_the_lengths(gguf_file: Path) -> None:
    pytest.importorskip("llama_cpp")
    with GgufRuntime(gguf_file, n_ctx=32, n_threads=1) as small:
        with pytest.raises(ExportError, match=r"40 positions .* holds 32"):
            small.logits(list(range(5, 45)))
        with pytest.raises(ExportError, match=r"33 positions .* holds 32"):
            small.choice_logprobs([list(range(5, 35))], [[5], [6, 7, 8, 9]])
        with pytest.raises(ExportError, match=r"35 positions .* holds 32"):
            small.greedy(list(range(5, 35)), 6, set())
        assert small.logits(list(range(5, 37))).shape[0] == 32  # exactly full still works


def test_bad_token_ids_and_a_closed_runtime_are_export_errors(gguf_file: Path) -> None:
    pytest.importorskip("llama_cpp")
    loaded = GgufRuntime(gguf_file, n_ctx=32, n_threads=1)
    with pytest.raises(ExportError, match=f"token id {loaded.n_vocab} is outside"):
        loaded.logits([5, loaded.n_vocab])
    with pytest.raises(ExportError, match="token id -1"):
        loaded.choice_logprobs([[5]], [[-1]])
    with pytest.raises(ExportError, match="empty prompt"):
        loaded.logits([])
    with pytest.raises(ExportError, match="no tokens"):
        loaded.choice_logprobs([[5]], [[6], []])
    loaded.close()
    loaded.close()  # closing twice is harmless
    with pytest.raises(ExportError, match="closed"):
        loaded.logits([5])
    with pytest.raises(ExportError, match="closed"):
        loaded.tokenize("the car")


def test_missing_runtime_is_an_export_error_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` raise ImportError
    assert runtime_available() is False
    with pytest.raises(ExportError) as raised:
        GgufRuntime(tmp_path / "model.gguf")
    assert INSTALL_HINT in str(raised.value) and "pip install 'tunewise[gguf]'" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_runtime_available_when_installed() -> None:
    pytest.importorskip("llama_cpp")
    assert runtime_available() is True
