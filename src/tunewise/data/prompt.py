"""One prompt rendering for training, evaluation and inference: sandboxed Jinja2 + the chat template."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.environment import Template
from jinja2.ext import Extension
from jinja2.sandbox import SecurityError
from jinja2.utils import Namespace

from tunewise.config import PromptSettings
from tunewise.data.records import ANSWER_FIELDS, Record
from tunewise.data.template_costs import checked_fromkeys, checked_pairs
from tunewise.data.template_limits import DEFAULT_LIMITS, BoundedEnvironment, TemplateLimits
from tunewise.data.template_sizes import RecordTooLong
from tunewise.errors import ConfigError, RenderError, TunewiseError

DEFAULT_TEMPLATES = {
    "classification": "Classify the text as one of: {{ labels | join(', ') }}.\n\nText: {{ text }}",
    "completion": "{{ prompt }}",
    "alpaca": "{{ instruction }}{% if input %}\n\n{{ input }}{% endif %}",
    "chat": "",
}
SANDBOX_HINT = "(not allowed: a template may use the record's fields, `labels` and filters, not Python internals)"
CHAT_HINT = "(set prompt.chat_template: false and write the whole prompt in prompt.template)"
CHAT_FAILED = "the model's chat template failed to render"
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
        limits: TemplateLimits = DEFAULT_LIMITS,
    ) -> None:
        self.cfg, self.kind, self.tokenizer = cfg, kind, tokenizer
        self.field = field  # the config key the template came from, for error messages
        self.shots = list(shots or [])[: cfg.few_shot]
        if self.shots and kind == "chat":
            raise ConfigError("prompt.few_shot is for classification, completion and alpaca data, not chat")
        self.labels = list(labels or [])
        self.limits = limits
        self.env = BoundedEnvironment(limits, undefined=StrictUndefined, keep_trailing_newline=True)
        self.template = self.env.template(cfg.template or DEFAULT_TEMPLATES[kind], field)
        self.chat_env = _chat_environment(limits)
        self.chat_name = f"chat template of {getattr(tokenizer, 'name_or_path', '') or 'the model'}"
        self._chat_source: Any = None
        self._chat_template: Template | None = None
        has_template = bool(getattr(tokenizer, "chat_template", None))
        # `auto` is resolved here, once per tokenizer: from now on the form used is a plain bool
        self.use_chat: bool = has_template if cfg.chat_template == "auto" else bool(cfg.chat_template)
        if self.use_chat and not has_template:
            raise ConfigError(
                "prompt.chat_template is true but the model's tokenizer has no chat template (a base model?); "
                "set prompt.chat_template: auto or false for a plain prompt, written in prompt.template"
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
            # the system text leads, as it would in a chat: a base model gets the same instructions
            system = f"{self.cfg.system}\n\n" if self.cfg.system else ""
            solved = "".join(f"{self._render_user(s)}{self.answer_prefix}{self.target(s)}\n\n" for s in self.shots)
            return system + solved + user
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
            return self.env.render(self.template, self.field, variables)
        except TunewiseError:  # a limit: already worded
            raise
        except SecurityError as exc:
            raise ConfigError(f"{self.field}: blocked by the sandbox: {exc} {SANDBOX_HINT}") from None
        except TemplateError as exc:
            if "unsafe" in str(exc):  # the sandbox answers forbidden attributes with an "unsafe" undefined
                raise ConfigError(f"{self.field}: blocked by the sandbox: {exc} {SANDBOX_HINT}") from None
            raise RenderError(f"{self.field} failed: {exc}") from None
        except Exception as exc:  # e.g. `{{ text / 2 }}` or `{{ 1 / n }}`: this record's values, one line
            raise RenderError(f"{self.field} failed: {type(exc).__name__}: {exc}") from None

    def _with_system(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        if self.cfg.system and messages[0]["role"] != "system":
            return [{"role": "system", "content": self.cfg.system}, *messages]
        return messages

    def _messages(self, record: Record) -> list[dict[str, str]]:
        messages, most = record.fields["messages"], self.limits.chat_messages
        if len(messages) > most:  # segments() renders the turns before each answer again: n x n work
            raise RecordTooLong(f"conversation of {len(messages)} messages exceeds the limit of {most}")
        return self._with_system([dict(m) for m in messages])

    def _chat(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        """tokenizer.apply_chat_template(messages, tokenize=False, ...) to the byte, but within our limits."""
        if not messages:
            raise RenderError(f"{CHAT_FAILED}: Cannot apply chat template to an empty conversation.")
        template = self._compiled_chat_template()  # its errors are worded there
        try:
            variables = {
                **getattr(self.tokenizer, "special_tokens_map", {}),  # bos_token, eos_token, ... as transformers does
                "messages": _chat_messages(messages),
                "tools": None,
                "documents": None,
                "add_generation_prompt": generation_prompt,
            }
            return self.chat_env.render(template, self.chat_name, variables)
        except ConfigError as exc:
            raise ConfigError(f"{exc} {CHAT_HINT}") from None
        except TunewiseError:
            raise
        except Exception as exc:  # the chat template is model-supplied Jinja; report, don't trace
            raise RenderError(f"{CHAT_FAILED}: {exc}") from None

    def _compiled_chat_template(self) -> Template:
        source = getattr(self.tokenizer, "chat_template", None)
        if source is not self._chat_source:  # compiled once, again only if the tokenizer's template changes
            if isinstance(source, dict):  # several named templates: transformers picks "default" (we pass no tools)
                if "default" not in source:
                    raise ConfigError(f"the model has chat templates {sorted(source)} but none named 'default'")
                text = source["default"]
            elif not source:  # chat data (kind: chat) is rendered with it even when prompt.chat_template is false
                raise ConfigError("chat data needs the model's chat template, and the model's tokenizer has none")
            else:
                text = source
            try:
                self._chat_template = self.chat_env.template(text, self.chat_name)
            except ConfigError as exc:
                raise ConfigError(f"{exc} {CHAT_HINT}") from None
            self._chat_source = source
        assert self._chat_template is not None
        return self._chat_template

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


# -- chat templates as transformers renders them (transformers.utils.chat_template_utils, 5.x) ---------------
# Same environment options, globals, filters and inputs, so the text is identical; only the limits are added.


class _GenerationTag(Extension):
    """transformers' `{% generation %}...{% endgeneration %}` (it marks assistant text for masks): renders the body."""

    tags = {"generation"}  # noqa: RUF012  # jinja's Extension API

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return caller()


class _TemplateDict:
    """`dict` in chat templates: dict(...) and dict.fromkeys(...), nothing else of the type."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return checked_pairs(dict, *args, **kwargs)  # keys that all share a hash would take n x n: refused

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return checked_fromkeys(*args, **kwargs)


class _TemplateNamespace(Namespace):
    """`namespace` in chat templates: no underscore-prefixed attributes."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # Jinja's signature trick, so namespace(self=...) works
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(
                f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}. "
                "Please rename the attribute."
            )


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@lru_cache(maxsize=8)
def _chat_environment(limits: TemplateLimits) -> BoundedEnvironment:
    env = BoundedEnvironment(
        limits, trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, "jinja2.ext.loopcontrols"]
    )

    def tojson(
        x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
    ) -> str:
        # transformers' tojson: plain json.dumps (no HTML escaping), streamed within the size limit
        return env.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env.add_filter("tojson", tojson)
    env.globals.update(
        raise_exception=_raise_exception,
        strftime_now=_strftime_now,
        dict=_TemplateDict(),
        namespace=_TemplateNamespace,
    )
    return env


_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the template sees as `messages`: None values dropped, plain JSON types, reasoning under every name."""
    chat = []
    for message in messages:
        plain = _plain({key: value for key, value in message.items() if value is not None})
        reasoning = next((plain[k] for k in _REASONING_FIELDS if plain.get(k) is not None), None)
        if reasoning is not None:
            plain = {"thinking": reasoning, **plain, "reasoning_content": reasoning}
        chat.append(plain)
    return chat


def _plain(value: Any) -> Any:
    """transformers' _plain_template_data for what JSON records hold (no arrays, dataclasses or pydantic models)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):  # subclasses carry methods the sandbox doesn't know
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_plain(item) for item in value)
    return f"<{type(value).__name__}>"


@contextmanager
def _located(record: Record) -> Iterator[None]:
    """A record that cannot be rendered is named by file and line (training stops there; curation drops it)."""
    try:
        yield
    except RenderError as exc:
        if exc.where:
            raise
        raise type(exc)(exc.reason, record.where) from None  # the same kind: too long stays too long
