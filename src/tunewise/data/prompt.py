"""One prompt rendering for training, evaluation and inference: sandboxed Jinja2 + the chat template."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from tunewise.config import PromptSettings
from tunewise.data.records import ANSWER_FIELDS, Record
from tunewise.errors import ConfigError, RenderError

DEFAULT_TEMPLATES = {
    "classification": "Classify the text as one of: {{ labels | join(', ') }}.\n\nText: {{ text }}",
    "completion": "{{ prompt }}",
    "alpaca": "{{ instruction }}{% if input %}\n\n{{ input }}{% endif %}",
    "chat": "",
}
SANDBOX_HINT = "(not allowed: a template may use the record's fields, `labels` and filters, not Python internals)"
_SENTINEL = "\x00TUNEWISE-ANSWER\x00"


@dataclass(frozen=True)
class Segment:
    text: str
    train: bool  # whether its tokens count in the loss


class PromptRenderer:
    """Turns a Record into prompt text and answer text, the same way everywhere."""

    def __init__(
        self,
        cfg: PromptSettings,
        kind: str,
        tokenizer: Any,
        labels: list[str] | None = None,
        shots: list[Record] | None = None,
        field: str = "prompt.template",
    ) -> None:
        self.cfg, self.kind, self.tokenizer = cfg, kind, tokenizer
        self.field = field  # the config key the template came from, for error messages
        self.shots = list(shots or [])[: cfg.few_shot]
        if self.shots and kind == "chat":
            raise ConfigError("prompt.few_shot is for classification, completion and alpaca data, not chat")
        self.labels = list(labels or [])
        env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
        try:
            self.template = env.from_string(cfg.template or DEFAULT_TEMPLATES[kind])
        except TemplateError as exc:
            raise ConfigError(f"{field}: line {getattr(exc, 'lineno', '?')}: {exc}") from None
        self.use_chat = cfg.chat_template
        if self.use_chat and not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                "prompt.chat_template is true but the model's tokenizer has no chat template; "
                "set prompt.chat_template: false and write the whole prompt in prompt.template"
            )
        self.end_of_answer = self._chat_answer_suffix() if self.use_chat else (tokenizer.eos_token or "")
        # Plain prompts ("...Label:") continue with " positive": the token a model has seen there.
        default_prefix = "" if self.use_chat else " "
        self.answer_prefix = cfg.answer_prefix if cfg.answer_prefix is not None else default_prefix

    def prompt(self, record: Record) -> str:
        """Everything the model sees before its answer (for chat: before the last assistant turn)."""
        with _located(record):
            return self._prompt(record)

    def _prompt(self, record: Record) -> str:
        if self.kind == "chat":
            messages = self._messages(record)
            answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
            if not answers or answers[-1] != len(messages) - 1:  # nothing to answer yet: predict the next turn
                return self._chat(messages, generation_prompt=True)
            return self._chat(messages[: answers[-1]], generation_prompt=True)
        user = self._render_user(record)
        if not self.use_chat:
            solved = "".join(f"{self._render_user(s)}{self.answer_prefix}{self.target(s)}\n\n" for s in self.shots)
            return solved + user
        turns = []
        for shot in self.shots:  # few-shot as earlier turns of the same conversation
            turns += [
                {"role": "user", "content": self._render_user(shot)},
                {"role": "assistant", "content": self.target(shot)},
            ]
        return self._chat(self._with_system([*turns, {"role": "user", "content": user}]), generation_prompt=True)

    def answer(self, text: str) -> str:
        """The answer as trained on: text plus the end-of-turn marker, so the model learns to stop."""
        return self.answer_prefix + text + self.end_of_answer

    def target(self, record: Record) -> str:
        """The reference answer: for chat, the last assistant turn (the one `prompt` leads up to)."""
        if self.kind == "chat":
            return next(m["content"] for m in reversed(record.fields["messages"]) if m["role"] == "assistant")
        return str(record.fields[ANSWER_FIELDS[self.kind]])

    def segments(self, record: Record) -> list[Segment]:
        with _located(record):
            if self.kind != "chat":
                return [Segment(self._prompt(record), False), Segment(self.answer(self.target(record)), True)]
            return self._chat_segments(self._messages(record))

    # -- internals ---------------------------------------------------------------------------------

    def _render_user(self, record: Record) -> str:
        variables = {**record.extra, **record.fields, "labels": self.labels}
        try:
            return self.template.render(**variables)
        except SecurityError as exc:
            raise ConfigError(f"{self.field}: blocked by the sandbox: {exc} {SANDBOX_HINT}") from None
        except TemplateError as exc:
            if "unsafe" in str(exc):  # the sandbox answers forbidden attributes with an "unsafe" undefined
                raise ConfigError(f"{self.field}: blocked by the sandbox: {exc} {SANDBOX_HINT}") from None
            raise RenderError(f"{self.field} failed: {exc}") from None
        except RecursionError:  # a recursive macro
            raise ConfigError(f"{self.field}: recursion too deep while rendering") from None

    def _with_system(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        if self.cfg.system and messages[0]["role"] != "system":
            return [{"role": "system", "content": self.cfg.system}, *messages]
        return messages

    def _messages(self, record: Record) -> list[dict[str, str]]:
        return self._with_system([dict(m) for m in record.fields["messages"]])

    def _chat(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        except Exception as exc:  # the chat template is model-supplied Jinja; report, don't trace
            raise RenderError(f"the model's chat template failed to render: {exc}") from None

    def _chat_answer_suffix(self) -> str:
        user = self._with_system([{"role": "user", "content": "hi"}])
        before = self._chat(user, generation_prompt=True)
        full = self._chat([*user, {"role": "assistant", "content": _SENTINEL}], generation_prompt=False)
        if not full.startswith(before) or _SENTINEL not in full:
            raise ConfigError(
                "the model's chat template does not render a prompt that its answer extends; "
                "set prompt.chat_template: false and write the prompt in prompt.template"
            )
        return full.split(_SENTINEL, 1)[1].rstrip()

    def _chat_segments(self, messages: list[dict[str, str]]) -> list[Segment]:
        segments: list[Segment] = []
        done = ""
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before = self._chat(messages[:i], generation_prompt=True)
            if not before.startswith(done):
                raise RenderError("the chat template re-renders earlier turns; cannot mask the prompt")
            segments.append(Segment(before[len(done) :], False))
            segments.append(Segment(self.answer(message["content"]), True))
            done = before + self.answer(message["content"])
        return segments


@contextmanager
def _located(record: Record) -> Iterator[None]:
    """A record that cannot be rendered is named by file and line (training stops there; curation drops it)."""
    try:
        yield
    except RenderError as exc:
        if exc.where:
            raise
        raise RenderError(exc.reason, record.where) from None
