"""An Ollama Modelfile that gives an exported GGUF the exact prompt the model was trained and evaluated with.

The prompt is rendered once with sentinel strings in place of the user's input and of the system prompt; the text
around them becomes literal template text and the sentinels become `{{ .Prompt }}` and `{{ .System }}`. Literal text
that Go templates or Ollama's Modelfile parser would read differently is written as a Go string literal, and the
Modelfile is parsed and rendered back under those rules before it is returned."""

from __future__ import annotations

import re
from dataclasses import dataclass

from jinja2 import meta, nodes

from tunewise.data.prompt import DEFAULT_TEMPLATES, PromptRenderer
from tunewise.data.records import Record
from tunewise.errors import ExportError, TunewiseError
from tunewise.export.modelfile_syntax import modelfile_value, parse_modelfile, render_template, template_literal

# Mixed case, markup characters and an inner newline: a filter or escaping that touches the value changes it.
# No leading or trailing whitespace, because chat templates often trim messages.
_PROMPT = "\u27e6Tunewise-prompt <&'\"\n> 7\u27e7"
_SYSTEM = "\u27e6Tunewise-system <&'\"\n> 7\u27e7"
_PROBE_VAR = "tunewise_modelfile_probe"  # a column name no dataset uses: marks the sentinel record


@dataclass(frozen=True)
class Modelfile:
    text: str
    prompt_field: str | None  # the record field a user sends as Ollama's prompt; None: the whole user turn
    stops: list[str]  # one `PARAMETER stop` line each
    notes: list[str]  # what the user should know: what to send, what could not be written as asked


def build_modelfile(
    renderer: PromptRenderer, gguf_name: str, *, parameters: dict[str, str | int | float] | None = None
) -> Modelfile:
    """A Modelfile whose TEMPLATE + SYSTEM render `renderer.prompt(record) + renderer.answer_prefix` exactly."""
    notes: list[str] = []
    prompt_field, why = _prompt_field(renderer)
    probe = _probe(renderer, prompt_field) if prompt_field else None
    if prompt_field and probe is None:
        prompt_field, why = None, f"the prompt does not hold `{prompt_field}` exactly once as it is"
    probe = probe or _probe(renderer, None)
    if probe is None:
        raise ExportError(
            "the prompt cannot be written as an Ollama template: the chat template changes the text it is given; "
            "use the exported model with its own prompt code instead of a Modelfile"
        )
    if renderer.kind == "chat":
        notes.append("chat data: send the conversation's user message as the prompt, one turn per request")
    elif prompt_field is None:
        notes.append(f"{why}, so Ollama's prompt is the whole user turn: send the rendered user turn, not one field")
    system = renderer.cfg.system or ""
    pieces = re.split(f"({re.escape(_PROMPT)}|{re.escape(_SYSTEM)})", probe + renderer.answer_prefix)
    system_line = modelfile_value("SYSTEM", system, triple_first=True) if _SYSTEM in pieces else None
    if system and _SYSTEM not in pieces:
        notes.append("the system prompt is not part of this prompt: no SYSTEM")
    elif _SYSTEM in pieces and system_line is None:
        notes.append("the system prompt cannot be written as a Modelfile SYSTEM exactly: it is fixed in the TEMPLATE")
    template = "".join(_template_piece(piece, system, system_line is not None) for piece in pieces)
    stops, stop_lines = _stops(renderer, parameters or {}, notes)
    lines = _header(renderer, prompt_field, _SYSTEM in pieces)
    lines.append(f"FROM {modelfile_value('FROM', gguf_name, required=True)}")
    lines.append(f"TEMPLATE {modelfile_value('TEMPLATE', template, triple_first=True, required=True)}")
    lines += [f"SYSTEM {system_line}"] if system_line is not None else []
    lines += stop_lines + _parameter_lines(parameters or {})
    text = "\n".join(lines) + "\n"
    wanted = probe.replace(_SYSTEM, system) + renderer.answer_prefix
    _check(text, template, system if system_line is not None else None, stops, wanted)
    return Modelfile(text, prompt_field, stops, notes)


def ollama_prompt(renderer: PromptRenderer, record: Record, modelfile: Modelfile) -> str:
    """What a user sends to Ollama for this record: its `prompt_field` value, or its rendered user turn."""
    parsed = parse_modelfile(modelfile.text)
    system = parsed["SYSTEM"][-1] if parsed["SYSTEM"] else ""
    marker = "\x00tunewise-input\x00"
    around = render_template(parsed["TEMPLATE"][-1] if parsed["TEMPLATE"] else "", system=system, prompt=marker)
    if around.count(marker) != 1:
        raise ExportError("the Modelfile's TEMPLATE does not hold {{ .Prompt }} once; build it with build_modelfile")
    before, _, after = around.partition(marker)
    full = renderer.prompt(record) + renderer.answer_prefix
    sent = full[len(before) : len(full) - len(after)]
    expected, what = _expected_input(renderer, record, modelfile.prompt_field)
    fits = len(full) >= len(before) + len(after) and full.startswith(before) and full.endswith(after)
    if not fits or (expected is not None and sent != expected):
        raise ExportError(
            f"{record.where}: the Modelfile's template around {what} does not give this record's prompt; it "
            "reproduces one user turn, with the configured system prompt, that the chat template does not change"
        )
    return sent


# -- the prompt, with sentinels ------------------------------------------------------------------------------


def _prompt_field(renderer: PromptRenderer) -> tuple[str | None, str]:
    """The one field the user template prints as it is, or None and why not."""
    if renderer.kind == "chat":
        return None, "chat data has no prompt field"
    source = renderer.cfg.template or DEFAULT_TEMPLATES[renderer.kind]
    tree = renderer.env.parse(source)
    names = sorted(meta.find_undeclared_variables(tree) - {"labels"})
    if len(names) != 1:
        return None, f"the prompt template uses {len(names)} fields ({', '.join(names)})"
    uses = sum(1 for name in tree.find_all(nodes.Name) if name.name == names[0])
    printed = sum(
        1 for out in tree.find_all(nodes.Output) for n in out.nodes if isinstance(n, nodes.Name) and n.name == names[0]
    )
    # a filter, a test or a slice of the field renders real values differently from the sentinel
    return (names[0], "") if uses == printed else (None, f"the prompt template transforms or tests `{names[0]}`")


def _probe(renderer: PromptRenderer, prompt_field: str | None) -> str | None:
    """The prompt with the sentinels for the input and the system prompt, each where the real ones go."""
    cfg = renderer.cfg
    update = {"system": _SYSTEM} if cfg.system else {}
    if prompt_field is None and renderer.kind != "chat":  # the whole user turn: the template prints the sentinel
        source = cfg.template or DEFAULT_TEMPLATES[renderer.kind]
        update["template"] = (
            f"{{% if {_PROBE_VAR} is defined %}}{{{{ {_PROBE_VAR} }}}}{{% else %}}{source}{{% endif %}}"
        )
    if renderer.kind == "chat":
        record = Record("chat", {"messages": [{"role": "user", "content": _PROMPT}]}, "Modelfile", 0)
    elif prompt_field is None:
        record = Record(renderer.kind, {}, "Modelfile", 0, {_PROBE_VAR: _PROMPT})
    else:
        record = Record(renderer.kind, {prompt_field: _PROMPT}, "Modelfile", 0)
    r = renderer
    try:
        probe = PromptRenderer(cfg.model_copy(update=update), r.kind, r.tokenizer, r.labels, r.shots, r.field, r.limits)
        probe = probe.prompt(record)
    except TunewiseError as exc:
        raise ExportError(f"cannot render the prompt for the Modelfile: {exc}") from None
    return probe if probe.count(_PROMPT) == 1 else None  # printed twice, or changed on its way


def _template_piece(piece: str, system: str, system_line: bool) -> str:
    if piece == _PROMPT:
        return "{{ .Prompt }}"
    if piece == _SYSTEM:
        # a SYSTEM that cannot be written: the system prompt becomes fixed template text
        return "{{ .System }}" if system_line else template_literal(system)
    return template_literal(piece)


def _expected_input(renderer: PromptRenderer, record: Record, prompt_field: str | None) -> tuple[str | None, str]:
    if prompt_field is not None:
        return str({**record.extra, **record.fields}[prompt_field]), f"its `{prompt_field}`"
    if renderer.kind != "chat":
        return None, "its user turn"
    messages = list(record.fields["messages"])
    if messages and messages[-1]["role"] == "assistant":  # the prompt leads up to the last answer
        messages.pop()
    if not messages or messages[-1]["role"] != "user":
        raise ExportError(f"{record.where}: the conversation has no user message to send")
    return messages[-1]["content"], "its last user message"


# -- the Modelfile's lines ------------------------------------------------------------------------------------------


def _header(renderer: PromptRenderer, prompt_field: str | None, system: bool) -> list[str]:
    chat = renderer.use_chat or renderer.kind == "chat"
    parts = [] if renderer.kind == "chat" else [f"the {renderer.kind} prompt template"]
    parts += ["the chat template"] if chat else []
    parts += [f"few-shot examples ({len(renderer.shots)})"] if renderer.shots else []
    parts += ["the system prompt"] if system else []
    send = f"the value of the record's `{prompt_field}` field" if prompt_field else "the whole rendered user turn"
    send = "the conversation's user message" if renderer.kind == "chat" else send
    return [
        "# Written by tunewise: the exact prompt the model was trained and evaluated with",
        f"# ({', '.join(parts)} and the answer prefix).",
        f"# Send {send} as the prompt; the template adds the rest.",
        "# One user turn per request: follow-up turns of a conversation are not in the trained format.",
        "# Greedy decoding (temperature 0, no repeat penalty), as tunewise evaluates.",
    ]


def _stops(renderer: PromptRenderer, parameters: dict, notes: list[str]) -> tuple[list[str], list[str]]:
    """Every distinct end-of-answer string, one `PARAMETER stop` line each."""
    wanted = [renderer.end_of_answer.strip(), getattr(renderer.tokenizer, "eos_token", None) or ""]
    wanted += [parameters["stop"]] if parameters.get("stop") else []
    stops, lines = [], []
    for stop in dict.fromkeys(str(s) for s in wanted if s):
        written = modelfile_value("PARAMETER stop", stop)
        if written is None:
            notes.append(f"the stop string {stop!r} cannot be written in a Modelfile: left out")
            continue
        stops.append(stop)
        lines.append(f"PARAMETER stop {written}")
    return stops, lines


def _parameter_lines(parameters: dict[str, str | int | float]) -> list[str]:
    lines = []
    # Ollama's runner applies repeat_penalty 1.1 by default, which temperature 0 does not turn off: 1 makes it greedy.
    for name, value in {"temperature": 0, "repeat_penalty": 1, **parameters}.items():
        if name == "stop":
            continue  # written with the end-of-answer stops
        if not re.fullmatch(r"[A-Za-z0-9_]+", name) or isinstance(value, bool):
            raise ExportError(f"Modelfile parameter {name}={value!r}: use a name of letters, digits, _ and a number")
        lines.append(f"PARAMETER {name} {modelfile_value(f'PARAMETER {name}', str(value), required=True)}")
    return lines


def _check(text: str, template: str, system: str | None, stops: list[str], wanted: str) -> None:
    """Read the Modelfile back as Ollama would: it must give the trained prompt around the user's input."""
    parsed = parse_modelfile(text)
    stop_values = [value for name, value in parsed["PARAMETER"] if name == "stop"]
    if parsed["TEMPLATE"] != [template] or parsed["SYSTEM"] != ([system] if system is not None else []):
        raise ExportError("the Modelfile does not read back as written; please report this prompt configuration")
    if stop_values != stops or render_template(template, system=system or "", prompt=_PROMPT) != wanted:
        raise ExportError("the Modelfile does not reproduce the prompt; please report this prompt configuration")
