"""Measures for tunewise.data.template_limits: how big a value prints, how much a printf or format field can make,
how deep a template nests, and the error a limit raises. Estimates err high; they refuse only what could pass a
limit."""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Iterable
from typing import Any

from jinja2 import Environment
from jinja2.exceptions import TemplateError
from jinja2.runtime import LoopContext, Undefined
from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import Cycler, Joiner, Namespace

from tunewise.errors import ConfigError, RenderError, TunewiseError


class RecordTooLong(RenderError):
    """A record's content would take its render past a size limit: far more than any max_length holds, so the
    record is rejected as too long (length:too_many_tokens), not as unrenderable."""


class LimitExceeded(Exception):
    """Raised inside a render; `render` turns it into the user's error. Not a TemplateError: no filter swallows it."""

    def __init__(self, message: str, per_record: bool = False) -> None:
        super().__init__(message)
        self.per_record = per_record  # the record's size may be to blame: reject it, don't stop the run

    def as_error(self, what: str) -> TunewiseError:
        return (RecordTooLong if self.per_record else ConfigError)(f"{what}: {self}")


_VIEWS = (type({}.keys()), type({}.values()), type({}.items()))
_SEQUENCES = (list, tuple, set, frozenset, *_VIEWS)  # not range: it prints as "range(0, 9)"
CONTAINERS = (dict, Namespace, *_SEQUENCES)


def _reduced(iterator: Any) -> tuple:
    return iterator.__reduce__()[1]  # reversed(x) -> (reversed, (x,), index): what it iterates


def _closure(func: types.FunctionType) -> tuple:
    return tuple(cell.cell_contents for cell in func.__closure__ or () if cell.cell_contents is not None)


# Objects other than containers that hold values a template gave them, and those values. Weighed with them, so that
# `cycler(prev, big)`, `[prev, big]|select` or `[prev, big].count` kept in a loop weigh what they hold (as 1 each,
# 1,000 steps of `set ns.c = cycler(ns.c, 'x' * 999990 ~ i)` held 1 GB). Filters return generators: their frame's
# locals are the filter's arguments. template_budget adds its loop iterable.
HOLDERS: dict[type, Callable[[Any], Iterable[Any]]] = {
    Cycler: lambda c: c.items,
    Joiner: lambda j: (j.sep,),
    LoopContext: lambda loop: (loop._iterable, loop._before, loop._current, loop._after, loop._last_changed_value),
    types.GeneratorType: lambda g: tuple(g.gi_frame.f_locals.values()) if g.gi_frame else (),
    types.MethodType: lambda m: (m.__self__,),  # loop.cycle, cycler.next
    types.BuiltinMethodType: lambda m: (m.__self__,),  # [prev, big].count
    types.FunctionType: _closure,  # 'x'.format: the sandbox's wrapper holds the string
    type(reversed([])): _reduced,  # the reverse filter
    reversed: _reduced,
}
WEIGHED = (*CONTAINERS, Undefined, *HOLDERS)  # what fit() weighs: what can hold something


def references(item: Any) -> Iterable[Any]:
    """What a non-container object holds (an undefined holds the object it was looked up on), or ()."""
    get = HOLDERS.get(type(item))
    if get is None:
        if not isinstance(item, Undefined):  # StrictUndefined and the like
            return ()
        return (item._undefined_obj, item._undefined_hint, item._undefined_name)
    try:
        return get(item)
    except (AttributeError, ValueError):  # an empty closure cell, an exhausted iterator
        return ()


def _spread(items: Iterable[Any], stack: list[Any]) -> int:
    """The length of the plain strings in `items` (most of them: message fields, words); the rest go on `stack`."""
    size = 0
    for item in items:
        if type(item) is str:
            size += len(item)
        else:
            stack.append(item)
    return size


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
            if total <= limit:  # then there are fewer than `limit` of them to look at
                total += _spread(items.keys(), stack) + _spread(items.values(), stack)
        elif isinstance(item, _SEQUENCES):
            total += len(item) + 1
            if total <= limit:
                total += _spread(item, stack)
        else:
            total += 1
            stack += references(item)
    return total


def weigh_made(value: Any, limit: int) -> int:
    """weigh() for a value a call or filter just made. A filter's generator holds the filter's arguments: a list
    among them was weighed when it was made, or is the record's data (the sandbox can't change either; a fresh
    *args is a tuple), so it counts by its length here, or `messages|selectattr(...)` in a loop would weigh all the
    messages each time; whatever else the generator holds is weighed through."""
    if type(value) is not types.GeneratorType:
        return weigh(value, limit)
    return 1 + sum(len(part) + 1 if type(part) is list else weigh(part, limit) for part in references(value))


def nesting(value: Any, limit: int) -> int:
    """How deep containers nest in `value`, looking at no more than `limit` of them."""
    deepest, stack = 0, [(value, 0)]
    while stack and limit > 0:
        item, depth = stack.pop()
        limit -= 1
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack += ((inner, depth + 1) for inner in (*item.keys(), *item.values()))
        elif isinstance(item, _SEQUENCES):
            stack += ((inner, depth + 1) for inner in item)
    return deepest


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
