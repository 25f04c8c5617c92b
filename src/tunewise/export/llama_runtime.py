"""A GGUF file run by llama.cpp (through `llama-cpp-python`), to measure what the exported file really does.

Token ids come from the caller, tokenized once with the Hugging Face tokenizer, so a comparison with the
merged model measures the model and not two tokenizers; `GgufRuntime.tokenize` exposes llama.cpp's own
tokenizer so the caller can report separately whether the two agree. Everything runs on the CPU and decodes
by arg-max of the raw logits: no sampler, no randomness.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np

from tunewise.errors import ExportError

INSTALL_HINT = "pip install 'tunewise[gguf]'"
GGUF_MAGIC = b"GGUF"
SEED = 0
GGML_LOG_LEVEL_ERROR = 4  # ggml's enum: NONE, DEBUG, INFO, WARN, ERROR, CONT

_log_lock = threading.Lock()
_log_state: dict[str, Any] = {"callback": None, "errors": []}


def runtime_available() -> bool:
    """Whether llama-cpp-python is installed and its native library loads."""
    try:
        _import_llama_cpp()
    except ExportError:
        return False
    return True


def _import_llama_cpp() -> ModuleType:
    try:
        import llama_cpp
    except (ImportError, OSError, RuntimeError) as error:  # OSError/RuntimeError: the native library is unusable
        raise ExportError(
            f"the llama.cpp runtime is not available ({type(error).__name__}: {error}); install it with: {INSTALL_HINT}"
        ) from None
    _silence_logs(llama_cpp)
    return llama_cpp


def _silence_logs(llama_cpp: ModuleType) -> None:
    """Route llama.cpp's log lines into memory instead of stderr; errors are kept for the next ExportError.

    llama-cpp-python's own callback prints every error line to stderr even with verbose=False, and the
    callback is process-wide, so it is replaced once and kept referenced (ctypes would free it otherwise).
    """
    with _log_lock:
        if _log_state["callback"] is not None:
            return

        @llama_cpp.llama_log_callback
        def record(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
            if level == GGML_LOG_LEVEL_ERROR and text:
                errors: list[str] = _log_state["errors"]
                errors.append(text.decode("utf-8", "replace").strip())
                del errors[:-20]  # only the latest lines explain the latest failure

        llama_cpp.llama_log_set(record, ctypes.c_void_p(0))
        _log_state["callback"] = record


def _take_log_error() -> str:
    """The first error llama.cpp logged since the last call, without its function-name prefix."""
    errors: list[str] = _log_state["errors"]
    first = next((line for line in errors if line), "")
    errors.clear()
    detail = first.rsplit("error loading model: ", 1)[-1]
    prefix, _, rest = detail.partition(": ")
    return rest if rest and " " not in prefix else detail


class GgufRuntime:
    """One loaded GGUF on the CPU: raw logits, choice log-probabilities and greedy decoding over given token ids."""

    def __init__(
        self, path: Path, *, n_ctx: int = 2048, n_threads: int | None = None, f32_kv_cache: bool = True
    ) -> None:
        """Load `path`. An f32 KV cache (the default) makes the runtime reproduce the file's arithmetic to ~1e-5;
        llama.cpp's own default, f16, is how Ollama and llama-server run it and adds ~1e-2 of logit noise."""
        path = Path(path)
        llama_cpp = _import_llama_cpp()  # first: without the runtime the caller skips the check, whatever the file
        _check_gguf_file(path)
        _take_log_error()
        kv_type = llama_cpp.GGML_TYPE_F32 if f32_kv_cache else llama_cpp.GGML_TYPE_F16
        # llama-cpp-python's default is half the cores; one token at a time is bound by memory bandwidth,
        # which every core adds to.
        n_threads = n_threads or os.cpu_count() or 1
        try:
            self._llm: Any = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_gpu_layers=0,
                logits_all=True,  # every position's logits, not only the last one
                seed=SEED,
                type_k=kv_type,
                type_v=kv_type,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as error:
            detail = _take_log_error() or str(error)
            raise ExportError(
                f"{path}: llama.cpp cannot load this GGUF ({detail}); re-export it or check the file is complete"
            ) from None
        self.path = path
        # llama-cpp-python sizes its token and logit buffers by the n_ctx asked for, whatever llama.cpp rounds to.
        self.n_ctx: int = min(n_ctx, self._llm.n_ctx())
        self.n_vocab: int = self._llm.n_vocab()

    def logits(self, token_ids: list[int]) -> np.ndarray:
        """Raw logits at every position, shape (len(token_ids), vocab), float32; nothing is reused from before."""
        self._check_ids(token_ids, len(token_ids), "prompt")
        self._evaluate_from(0, token_ids)
        return np.array(self._llm.scores[: len(token_ids)], dtype=np.float32, copy=True)

    def choice_logprobs(self, prompts: list[list[int]], choices: list[list[int]]) -> np.ndarray:
        """Sum of log p(choice tokens | prompt) for every prompt x choice, shape [n_prompts, n_choices].

        The tokens every prompt starts with (system prompt, instructions, few-shot examples) are evaluated once
        and kept in llama.cpp's KV cache; each prompt's own tail is evaluated after them, and each choice then
        continues from that prompt's state, as tunewise's own label scoring does.
        """
        if any(not choice for choice in choices):
            raise ExportError("a choice has no tokens; every choice needs at least one token to be scored")
        longest = max((len(choice) for choice in choices), default=1)
        scores = np.empty((len(prompts), len(choices)), dtype=np.float64)
        shared = _shared_prefix(prompts)
        if shared:
            self._check_ids(prompts[0][:shared], shared, "shared prompt prefix")
            self._evaluate_from(0, prompts[0][:shared])
        for choice in choices:
            self._check_ids(choice, len(choice), "choice")
        for row, prompt in enumerate(prompts):
            # The last choice token is only scored, never evaluated, hence the - 1.
            self._check_ids(prompt, len(prompt) + longest - 1, "prompt + longest choice")
            # The prompt's tail and the first choice go in one batch: one pass over the weights, not two.
            self._evaluate_from(shared, prompt[shared:] + choices[0][:-1])
            first = _log_softmax(self._llm.scores[len(prompt) - 1])
            for column, choice in enumerate(choices):
                total = float(first[choice[0]])
                if len(choice) > 1:
                    if column:
                        self._evaluate_from(len(prompt), choice[:-1])
                    rest = _log_softmax(self._llm.scores[len(prompt) : len(prompt) + len(choice) - 1])
                    total += float(rest[np.arange(len(choice) - 1), choice[1:]].sum())
                scores[row, column] = total
        return scores

    def greedy(self, prompt: list[int], max_new_tokens: int, stop_ids: set[int]) -> list[int]:
        """Arg-max decoding of the raw logits; stops before a stop id (not returned) or after max_new_tokens."""
        self._check_ids(prompt, len(prompt) + max(max_new_tokens, 1) - 1, f"prompt + {max_new_tokens} new tokens")
        self._evaluate_from(0, prompt)
        generated: list[int] = []
        while len(generated) < max_new_tokens:
            token = int(np.argmax(self._llm.scores[self._llm.n_tokens - 1]))
            if token in stop_ids:
                break
            generated.append(token)
            if len(generated) < max_new_tokens:
                self._evaluate_from(self._llm.n_tokens, [token])
        return generated

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """llama.cpp's own tokenization; BOS/EOS are added as the GGUF's metadata says, special tokens parsed."""
        # llama.cpp's "add_bos" flag means "add the special tokens the vocabulary asks for".
        return list(self._loaded().tokenize(text.encode("utf-8"), add_bos=True, special=special))

    def close(self) -> None:
        """Free the model and its context; the runtime is unusable afterwards."""
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()

    def __enter__(self) -> GgufRuntime:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _loaded(self) -> Any:
        if self._llm is None:
            raise ExportError(f"{self.path}: the GGUF runtime is closed; open a new GgufRuntime")
        return self._llm

    def _check_ids(self, token_ids: list[int], needed: int, what: str) -> None:
        self._loaded()
        if not token_ids:
            raise ExportError(f"an empty {what.split()[0]} cannot be evaluated; give at least one token")
        if needed > self.n_ctx:
            raise ExportError(
                f"{what} needs {needed} positions but the llama.cpp context holds {self.n_ctx}; "
                "shorten it or open the runtime with a larger n_ctx"
            )
        bad = next((t for t in token_ids if not 0 <= t < self.n_vocab), None)
        if bad is not None:
            raise ExportError(f"token id {bad} is outside the GGUF's vocabulary of {self.n_vocab} tokens")

    def _evaluate_from(self, position: int, token_ids: list[int]) -> None:
        """Evaluate token_ids after the first `position` cached tokens; llama.cpp drops the cache beyond them."""
        if position == 0:
            self._llm.reset()
        else:
            self._llm.n_tokens = position
        try:
            self._llm.eval(token_ids)
        except RuntimeError as error:
            detail = _take_log_error() or str(error)
            raise ExportError(f"{self.path}: llama.cpp failed to evaluate {len(token_ids)} tokens ({detail})") from None


def _check_gguf_file(path: Path) -> None:
    """Reject what is plainly not a GGUF before the native loader sees it."""
    if not path.is_file():
        raise ExportError(f"{path}: no such GGUF file; export the model first or check the path")
    with path.open("rb") as handle:
        magic = handle.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise ExportError(f"{path}: not a GGUF file (it does not start with {GGUF_MAGIC!r}); export the model again")


def _shared_prefix(prompts: list[list[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least one token of its own (its last logits are read)."""
    if len(prompts) < 2 or not all(prompts):
        return 0
    limit = min(len(p) for p in prompts) - 1
    first = prompts[0]
    shared = 0
    while shared < limit and all(p[shared] == first[shared] for p in prompts):
        shared += 1
    return shared


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    values = np.asarray(logits, dtype=np.float64)
    shifted = values - values.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
