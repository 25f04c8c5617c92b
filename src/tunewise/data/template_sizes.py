"""Measures for tunewise.data.template_limits: how big an operation's result would be before it runs, how big a
value prints, how deep a template nests. Estimates err high; they refuse only what could pass a limit."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from jinja2 import Environment
from jinja2.exceptions import TemplateError
from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import Namespace

_VIEWS = (type({}.keys()), type({}.values()), type({}.items()))
_SEQUENCES = (list, tuple, set, frozenset, *_VIEWS)  # not range: it prints as "range(0, 9)"
CONTAINERS = (dict, Namespace, *_SEQUENCES)


def weigh(value: Any, limit: int) -> int:
    """About how many characters str(value) has: nested containers count each time they are referenced, the
    way they print. Stops as soon as the total passes `limit`, so weighing a huge value is cheap."""
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            total += len(item)
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, (dict, Namespace)):
            items = item if isinstance(item, dict) else object.__getattribute__(item, "_Namespace__attrs")
            total += 2 * len(items) + 1
            if total <= limit:
                stack += items.keys()
                stack += items.values()
        elif isinstance(item, _SEQUENCES):
            total += len(item) + 1
            if total <= limit:
                stack += item
        else:
            total += 1
    return total


_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
DIGITS = re.compile(r"\d+")


def number(text: str) -> int:
    return int(text) if len(text) < 10 else 10**10  # int("9" * 5000) would itself refuse to parse


def printf_size(fmt: str, args: Any, limit: int) -> int:
    """Most characters `fmt % args` can make: the widest field, or every field printing all the arguments
    (a mapping's value may be named by many fields)."""
    specs = _PRINTF.findall(fmt)
    widths = [number(n) for spec in specs for n in spec if n and n != "*"]
    if any("*" in spec for spec in specs):  # widths taken from the arguments
        widths += [a for a in (args if isinstance(args, tuple) else (args,)) if isinstance(a, int)]
    return max([len(fmt) + len(specs) * weigh(args, limit), *widths])


# Filters that can make far more than they are given, and how much they would make (checked before they run).
def _indent_size(s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> int:
    text = str(s)
    return len(text) + (text.count("\n") + 1) * (width if isinstance(width, int) else len(str(width)))


def _wordwrap_size(s: Any, width: Any = 79, break_long_words: bool = True, wrapstring: Any = None, **_: Any) -> int:
    text = str(s)  # at most one break per `width` characters, plus the lines it already has
    return len(text) + (len(text) // max(int(width), 1) + text.count("\n") + 1) * len(str(wrapstring or "\n"))


def _replace_size(s: Any, old: Any, new: Any, count: Any = None) -> int:
    text, old, new = str(s), str(old), str(new)
    found = text.count(old) if old else len(text) + 1
    return len(text) + (min(found, count) if isinstance(count, int) and count >= 0 else found) * (len(new) - len(old))


FILTER_SIZES: dict[str, Callable[..., int]] = {
    "center": lambda value, width=80: width if isinstance(width, int) else 0,
    "indent": _indent_size,
    "wordwrap": _wordwrap_size,
    "replace": _replace_size,
    "batch": lambda value, linecount, fill_with=None: linecount if fill_with is not None else 0,  # pads to it
    "slice": lambda value, slices, fill_with=None: slices,  # range(slices) in one C call
}


def text_method_size(text: str | bytes, name: str, args: tuple, kwargs: dict, limit: int) -> tuple[int, tuple]:
    """(characters the str/bytes method would make, its arguments): 0 for methods that can't outgrow their input.
    `join`'s iterable comes back as a list, so that the estimate and the join see the same items."""
    size = len(text)
    if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        return args[0], args
    if name == "expandtabs" and isinstance(tab := args[0] if args else kwargs.get("tabsize", 8), int):
        return size + text.count("\t" if isinstance(text, str) else b"\t") * tab, args  # type: ignore[arg-type]
    if name == "replace" and len(args) >= 2 and all(isinstance(a, (str, bytes)) for a in args[:2]):
        found = text.count(args[0]) if args[0] else size + 1
        most = args[2] if len(args) > 2 else kwargs.get("count", -1)
        found = min(found, most) if isinstance(most, int) and most >= 0 else found
        return size + found * (len(args[1]) - len(args[0])), args
    if name == "join" and args:
        items = list(args[0])
        return size * len(items) + sum(weigh(i, limit) for i in items), (items, *args[1:])
    if name == "translate" and args and isinstance(args[0], dict):
        return size * max([1, *(weigh(v, limit) for v in args[0].values())]), args
    return 0, args


class _WidthChecked:
    """A str.format formatter that refuses `{:999999999}` before Python pads to it."""

    _env: Any  # the BoundedEnvironment

    def format_field(self, value: Any, format_spec: str) -> Any:
        self._env.expect(max(map(number, DIGITS.findall(format_spec)), default=0), "a format width")
        return super().format_field(value, format_spec)  # type: ignore[misc]


class SizedFormatter(_WidthChecked, SandboxedFormatter):
    pass


class SizedEscapeFormatter(_WidthChecked, SandboxedEscapeFormatter):
    pass


_BLOCK_TAGS = frozenset({"for", "if", "macro", "call", "filter", "block", "with", "autoescape", "generation", "trans"})


def nesting_depth(env: Environment, source: str) -> int:
    """How deep blocks and brackets nest, from the token stream (flat, unlike the parser that would recurse)."""
    depth = deepest = 0
    tag_next = open_set = False
    try:
        for _, kind, value in env.lex(source):
            if kind == "whitespace":
                continue
            if tag_next and kind == "name":
                if value in _BLOCK_TAGS:
                    depth += 1
                elif value.startswith("end"):
                    depth -= 1
                open_set = value == "set"  # `{% set x %}...{% endset %}` is a block, `{% set x = 1 %}` isn't
            tag_next = kind == "block_begin"
            if kind == "operator" and value in ("(", "[", "{"):  # the raw stream calls every symbol an operator
                depth += 1
            elif kind == "operator" and value in (")", "]", "}"):
                depth -= 1
            elif kind == "operator" and value == "=":
                open_set = False
            elif kind == "block_end" and open_set:
                depth, open_set = depth + 1, False
            deepest = max(deepest, depth)
    except TemplateError:
        return 0  # a syntax error: compiling reports it with its line
    return deepest
