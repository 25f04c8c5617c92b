"""Ollama's Modelfile syntax and the Go-template subset a written Modelfile uses, read and written by Ollama's rules.

`parse_modelfile` follows Ollama's parser (parser/parser.go) for the commands a Modelfile written here holds;
`render_template` renders text, `{{ .Prompt }}`, `{{ .System }}` and Go string literals as Ollama does.
`template_literal` and `modelfile_value` write text so that those two read it back unchanged."""

from __future__ import annotations

import re
import unicodedata
from contextlib import suppress

from tunewise.errors import ExportError

_COMMAND = re.compile(r"from|license|template|system|adapter|draft|renderer|parser|parameter|message|requires", re.I)
_NIL, _NAME, _VALUE, _PARAMETER, _MESSAGE, _COMMENT = range(6)
_GO_ESCAPE = re.compile(r'\\(?:([abfnrtv\\"])|x([0-9a-fA-F]{2})|([0-7]{3})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(.?))')
_ACTION = re.compile(r'\s*([^\s"`{}]+|"(?:[^"\\\n]|\\.)*"|`[^`]*`)\s*}}')  # one operand: a field or a string
_GO_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"'}


def parse_modelfile(text: str) -> dict:
    """FROM, SYSTEM, TEMPLATE and PARAMETER (name, value) lists, read by the rules of Ollama's parser/parser.go."""
    parsed: dict[str, list] = {"FROM": [], "SYSTEM": [], "TEMPLATE": [], "PARAMETER": []}
    for keyword, args in _commands(text):
        parsed.setdefault(keyword, []).append(args)
    if not parsed["FROM"]:
        raise ExportError("the Modelfile has no FROM line")
    return parsed


def render_template(template: str, *, system: str, prompt: str) -> str:
    """What Ollama renders for one prompt with this template: text, `{{ .Prompt }}`, `{{ .System }}` and Go string
    literals (the subset `build_modelfile` writes); anything else is refused."""
    values = {".Prompt": prompt, ".System": system, ".Response": ""}
    out, pos = [], 0
    while (start := template.find("{{", pos)) >= 0:
        out.append(template[pos:start])
        match = _ACTION.match(template, start + 2)
        if not match:
            raise ExportError(f"Modelfile TEMPLATE: unsupported action at character {start}: {template[start:][:40]!r}")
        action = match.group(1)
        if action[:1] in ('"', "`"):
            out.append(_go_unquote(action[1:-1]) if action[0] == '"' else action[1:-1])
        elif action in values:
            out.append(values[action])
        else:
            raise ExportError(f"Modelfile TEMPLATE: unsupported action {{{{ {action} }}}}")
        pos = match.end()
    return "".join(out) + template[pos:]


# -- writing values as Ollama reads them -----------------------------------------------------------------------


def _go_printable(char: str) -> bool:
    """Go's strconv.IsPrint: Ollama's parser silently drops every other character outside quotes' line breaks."""
    return char == " " or unicodedata.category(char)[0] in "LMNPS"


def template_literal(text: str) -> str:
    """Template text that reads back as `text`: plain where it is safe, Go string literals around the rest."""
    safe = re.compile(r'[^{}"\\\s]|[\n\t ]')
    out, plain = [], []
    for char in text:
        if safe.match(char) and (char in "\n\t " or _go_printable(char)):
            plain.append(char)
            continue
        if 0xD800 <= ord(char) <= 0xDFFF:
            raise ExportError("the prompt holds an unpaired surrogate character; remove it from the template or data")
        out += ["".join(plain), '{{ "' + _go_escape(char) + '" }}']
        plain = []
    return "".join([*out, "".join(plain)]).replace('" }}{{ "', "")  # one literal per run of unsafe characters


def _go_escape(char: str) -> str:
    if char in '"\\\n':
        return {'"': '\\"', "\\": "\\\\", "\n": "\\n"}[char]
    if " " <= char <= "~" and char not in "{}":  # printable ASCII; braces escaped so no `{{` or `}}` ever forms
        return char
    return f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"


def _go_unquote(body: str) -> str:
    def escape(match: re.Match[str]) -> str:
        simple, hex_byte, octal, short, long, bad = match.groups()
        if simple:
            return _GO_SIMPLE[simple]
        code = int(octal, 8) if octal else int(hex_byte or short or long or "0", 16)
        if bad is not None or ((hex_byte or octal) and code > 0x7F) or 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
            raise ExportError(f"Modelfile TEMPLATE: unsupported escape {match.group(0)!r} in a string literal")
        return chr(code)

    return _GO_ESCAPE.sub(escape, body)


def modelfile_value(command: str, value: str, *, triple_first: bool = False, required: bool = False) -> str | None:
    """`value` in the form Ollama's parser reads back exactly after `command` (bare or in triple quotes); None if
    there is none, an ExportError if it is `required`."""
    keyword, _, name = command.partition(" ")
    wanted = [(keyword, (name, value) if name else value)]
    forms = [f'"""{value}"""', value] if triple_first else [value, f'"""{value}"""']
    for form in forms if value and "\r" not in value else []:  # editors rewrite line endings; "" is no value
        with suppress(ExportError):
            if _commands(f"FROM x\n{command} {form}\n")[1:] == wanted:
                return form
    if required:
        raise ExportError(f"{value[:60]!r} cannot be written as a Modelfile {command} value; rename or simplify it")
    return None


# -- Ollama's Modelfile parser (parser/parser.go), for the commands a written Modelfile holds -------------------


def _commands(text: str) -> list[tuple[str, object]]:
    """(KEYWORD, value) per command; PARAMETER values are (name, value), MESSAGE values (role, content)."""
    commands: list[tuple[str, object]] = []
    state, buffer, keyword, name, line = _NIL, [], "", "", 1
    for char in text.removeprefix("\ufeff"):
        line += char in "\r\n"
        following, kept = _next_state(char, state, line)
        if following != state:
            word = "".join(buffer) if state != _VALUE else ""  # a value is joined only once it may be complete
            if state == _NAME:
                if not _COMMAND.fullmatch(word):
                    raise ExportError(f"Modelfile line {line}: unknown command {word!r}")
                keyword = word.upper()
                following = {"PARAMETER": _PARAMETER, "MESSAGE": _MESSAGE}.get(keyword, following)
            elif state in (_PARAMETER, _MESSAGE):
                name = word
            elif state == _VALUE:
                if char in " \t":  # a space within the value: keep reading
                    buffer.append(char)
                    continue
                closed, value = _unquote_buffer(buffer)
                if not closed:  # a line break inside quotes
                    buffer.append(char)
                    continue
                commands.append((keyword, (name, value) if keyword in ("PARAMETER", "MESSAGE") else value))
            buffer, state = [], following
        if kept and _go_printable(kept):
            buffer.append(kept)
    if state == _VALUE:
        closed, value = _unquote_buffer(buffer)
        if not closed:
            raise ExportError("the Modelfile ends inside a quoted value")
        commands.append((keyword, (name, value) if keyword in ("PARAMETER", "MESSAGE") else value))
    elif state not in (_NIL, _COMMENT):
        raise ExportError("the Modelfile ends inside a command")
    return commands


def _next_state(char: str, state: int, line: int) -> tuple[int, str]:
    if state == _NIL:
        return (_COMMENT, "") if char == "#" else (_NIL, "") if char in " \t\r\n" else (_NAME, char)
    if state == _VALUE:
        return (_NIL if char in " \t\r\n" else _VALUE), char
    if state == _COMMENT:
        return (_NIL if char in "\r\n" else _COMMENT), ""
    word_chars = r"[A-Za-z]" if state in (_NAME, _MESSAGE) else r"[A-Za-z0-9_]"
    if re.fullmatch(word_chars, char):
        return state, char
    if char in " \t":
        return _VALUE, ""
    raise ExportError(f"Modelfile line {line}: unexpected {char!r} in a command")


def _unquote_buffer(buffer: list[str]) -> tuple[bool, str]:
    """_unquote of the buffer, without joining it while a quoted value is still open (a long TEMPLATE)."""
    end = len(buffer)
    while end and buffer[end - 1] in " \t\r\n":
        end -= 1
    start = next((i for i, char in enumerate(buffer) if char not in " \t\r\n"), end)
    if start < end and buffer[start] == '"' and buffer[end - 1] != '"':
        return False, ""
    return _unquote("".join(buffer).strip())


def _unquote(text: str) -> tuple[bool, str]:
    if text.startswith('"""'):
        return (True, text[3:-3]) if len(text) >= 6 and text.endswith('"""') else (False, "")
    if text.startswith('"'):
        return (True, text[1:-1]) if len(text) >= 2 and text.endswith('"') else (False, "")
    return True, text
