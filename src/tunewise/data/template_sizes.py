"""Measures for tunewise.data.template_limits: how big an operation's result would be before it runs, how big a
value prints, how deep a template nests, and which single calls would run superlinearly long. Estimates err high;
they refuse only what could pass a limit."""

from __future__ import annotations

import codecs
import math
import re
import types
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from jinja2 import Environment
from jinja2.exceptions import TemplateError
from jinja2.filters import make_attrgetter
from jinja2.runtime import LoopContext, Undefined
from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import Cycler, Joiner, Namespace, pass_environment

from tunewise.errors import ConfigError, RenderError, TunewiseError

if TYPE_CHECKING:
    from tunewise.data.template_limits import TemplateLimits


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
# locals are the filter's arguments. template_limits adds its loop iterable.
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


# One call that is superlinear in its input runs between two ticks of the clock, so a value within the size limit
# can hang the render in it. Each bound keeps such a call near 0.1 s (measured on a busy 2-core machine).
STRIP_PAIRS = 10**10  # strip(chars) looks each stripped character up in chars: 400,000 x 400,000 took 1.5 s
RSEARCH_PAIRS = 3 * 10**8  # rfind, rsplit... search backwards without the two-way algorithm: 10**5 x 3 * 10**4, 0.7 s
WRAP_COPIES = 10**10  # textwrap re-slices a long word per line: a 400,000-character word at width 1 took 2.3 s
PUNYCODE_CHARS = 1_000  # punycode (in idna too) encodes in quadratic Python: 8,000 CJK characters took 10 s
HASH_COLLISIONS = 2_000  # unequal keys with one hash probe each other's slots: 8,000 took 0.65 s in |unique
_WRAP_WORDS = re.compile(r"[^\t\n\x0b\x0c\r ]+")  # textwrap's chunks: it splits on ASCII whitespace only
_REVERSE_SEARCHES = frozenset({"rfind", "rindex", "rsplit", "rpartition"})


def check_pairs(what: str, size: int, argument: Any, most: int) -> None:
    """Refuses a call on `size` characters whose work grows with size x len(argument)."""
    if isinstance(argument, (str, bytes)) and size * len(argument) > most:
        raise LimitExceeded(
            f"{what} on {size} characters with a {len(argument)}-character argument, "
            f"over the limit of {most // max(size, 1)} for that length",
            per_record=True,
        )


def check_hashing(keys: Iterable[Any], what: str) -> None:
    """Refuses many unequal keys with one hash before a set or dict is made of them: they all probe the same slots,
    n x n work in one call (an int hashes to itself mod 2**61 - 1, so its multiples all hash to 0)."""
    first: dict[int, Any] = {}  # hash -> the first key with it (hashes are small ints: they never collide)
    colliding = 0
    try:
        for key in keys:
            seen = first.setdefault(hash(key), key)
            colliding += seen is not key and seen != key
    except Exception:  # unhashable, or an undefined value: the call itself raises its own error
        return
    if colliding > HASH_COLLISIONS:
        message = f"{what} on {colliding} unequal values that share a hash, over the limit of {HASH_COLLISIONS}"
        raise LimitExceeded(message, per_record=True)


def checked_pairs(kind: type, /, *args: Any, **kwargs: Any) -> Any:
    """dict(...) or namespace(...), refusing colliding keys among the pairs first (see check_hashing)."""
    if len(args) == 1 and not hasattr(args[0], "keys"):  # pairs: a mapping's keys are in a dict already
        try:
            pairs = list(args[0])
        except TypeError:
            return kind(*args, **kwargs)  # not iterable: its own error
        keys = (p[0] for p in pairs if isinstance(p, (list, tuple, str)) and p)
        check_hashing(keys, "dict()" if kind is dict else "namespace()")
        args = (pairs,)
    return kind(*args, **kwargs)


def checked_fromkeys(*args: Any, **kwargs: Any) -> dict:
    """dict.fromkeys(...) that refuses colliding keys first (see check_hashing)."""
    if args:
        keys = list(args[0])
        check_hashing(keys, "fromkeys()")
        args = (keys, *args[1:])
    return dict.fromkeys(*args, **kwargs)


def checked_unique(original: Callable[..., Any]) -> Callable[..., Any]:
    """The unique filter, refusing colliding keys first (see check_hashing)."""

    @pass_environment
    def unique(environment: Any, value: Any, case_sensitive: bool = False, attribute: Any = None) -> Any:
        items = list(value)  # listed once: the check and the filter see the same items
        keys = items  # case only changes strings, whose hashes are randomized: no collisions to craft there
        if attribute is not None:
            keys = list(map(make_attrgetter(environment, attribute), items))
        check_hashing(keys, "the unique filter")
        return original(environment, items, case_sensitive, attribute)

    return unique


# Filters that can make far more than they are given, and how much they would make (checked before they run);
# the ones that would run superlinearly long refuse here too.
def _indent_size(s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> int:
    text = str(s)
    return len(text) + (text.count("\n") + 1) * (width if isinstance(width, int) else len(str(width)))


def _wordwrap_size(s: Any, width: Any = 79, break_long_words: bool = True, wrapstring: Any = None, **_: Any) -> int:
    text = str(s)  # at most one break per `width` characters, plus the lines it already has
    if break_long_words and isinstance(width, int) and width > 0 and len(text) ** 2 > WRAP_COPIES * width:
        longest = max((m.end() - m.start() for m in _WRAP_WORDS.finditer(text)), default=0)
        if longest**2 > WRAP_COPIES * width:  # a word of n characters broken at width w: n x n / w copied
            raise LimitExceeded(
                f"the wordwrap filter on a word of {longest} characters at width {width}, "
                f"over the limit of {math.isqrt(WRAP_COPIES * width)} for that width",
                per_record=True,
            )
    return len(text) + (len(text) // max(int(width), 1) + text.count("\n") + 1) * len(str(wrapstring or "\n"))


def _replace_size(s: Any, old: Any, new: Any, count: Any = None) -> int:
    text, old, new = str(s), str(old), str(new)
    found = text.count(old) if old else len(text) + 1
    return len(text) + (min(found, count) if isinstance(count, int) and count >= 0 else found) * (len(new) - len(old))


def _trim_size(value: Any, chars: Any = None) -> int:
    text = str(value)
    check_pairs("the trim filter", len(text), chars, STRIP_PAIRS)
    return len(text)


FILTER_SIZES: dict[str, Callable[..., int]] = {
    "center": lambda value, width=80: width if isinstance(width, int) else 0,
    "indent": _indent_size,
    "wordwrap": _wordwrap_size,
    "replace": _replace_size,
    "batch": lambda value, linecount, fill_with=None: linecount if fill_with is not None else 0,  # pads to it
    "slice": lambda value, slices, fill_with=None: slices,  # range(slices) in one C call
    "trim": _trim_size,
}


def filter_sizes(limits: TemplateLimits) -> dict[str, Callable[..., int]]:
    """FILTER_SIZES and the measures that depend on the limits."""

    def urlize(
        value: Any,
        trim_url_limit: Any = None,
        nofollow: Any = False,
        target: Any = None,
        rel: Any = None,
        extra_schemes: Any = None,
    ) -> int:
        # jinja's urlize is quadratic in a word's trailing punctuation, in regexes and loops that never tick:
        # ')' * 10,000 + 'x)' took 2 s, 40,000 took 40 s.
        size = len(str(value))
        if size > limits.urlize_chars:
            raise LimitExceeded(
                f"the urlize filter on {size} characters, over the limit of {limits.urlize_chars}", per_record=True
            )
        # each word may become a link: the word twice, escaped (up to 5x), and rel and target, escaped too
        return 12 * size + (size // 2 + 1) * (6 * len(str(rel or "")) + 6 * len(str(target or "")) + 50)

    def bits(what: str, size: float, per_record: bool) -> int:
        if size > limits.int_bits:  # division and printing of such numbers are quadratic
            message = f"{what} would make a number of about {int(size)} bits, over the limit of {limits.int_bits}"
            raise LimitExceeded(message, per_record=per_record)
        return 0

    def int_(value: Any, default: Any = 0, base: Any = 10) -> int:
        # Python refuses decimal strings over 4,300 digits, not hex ones: '0x' + 'f' * 10**6 is 4,000,000 bits
        linear = isinstance(value, (str, bytes)) and isinstance(base, int) and base & (base - 1) == 0
        return bits("the int filter", len(value) * math.log2(base or 16), True) if linear else 0

    def round_(value: Any, precision: Any = 0, method: str = "common") -> int:
        # round(5, -n) and the floor/ceil methods compute 10 ** n first
        return bits("the round filter", abs(precision) * math.log2(10), False) if isinstance(precision, int) else 0

    def pprint(value: Any, *args: Any, **kwargs: Any) -> int:
        # pformat puts each item of a long container on a line indented by its depth and reprs every level again:
        # a 400,000-item list 100 levels deep made 43 MB in 34 s. Size x depth bounds both.
        size = weigh(value, limits.output_chars)
        return size if size > limits.output_chars else size * (nesting(value, limits.output_chars) + 1)

    return {**FILTER_SIZES, "urlize": urlize, "int": int_, "round": round_, "pprint": pprint}


def _check_text_method(text: str | bytes, name: str, args: tuple, kwargs: dict) -> None:
    what = f"{name}()"
    if name in ("strip", "lstrip", "rstrip") and args:
        check_pairs(what, len(text), args[0], STRIP_PAIRS)
    elif name in _REVERSE_SEARCHES:
        check_pairs(what, len(text), args[0] if args else kwargs.get("sep"), RSEARCH_PAIRS)
    elif name in ("encode", "decode") and len(text) > PUNYCODE_CHARS:
        try:
            codec = codecs.lookup(args[0] if args else kwargs.get("encoding", "utf-8")).name
        except (LookupError, TypeError):
            return  # the call raises its own error
        if codec == "idna" or (codec == "punycode" and name == "encode"):  # idna decodes, then encodes to compare
            where = "to" if name == "encode" else "from"
            message = f"{what} {where} {codec} on {len(text)} characters, over the limit of {PUNYCODE_CHARS}"
            raise LimitExceeded(message, per_record=True)


_CHECKED_METHODS = frozenset({"strip", "lstrip", "rstrip", "encode", "decode", *_REVERSE_SEARCHES})


def text_method_size(text: str | bytes, name: str, args: tuple, kwargs: dict, limit: int) -> tuple[int, tuple]:
    """(characters the str/bytes method would make, its arguments): 0 for methods that can't outgrow their input.
    `join`'s iterable comes back as a list, so that the estimate and the join see the same items. Refuses the
    methods that would run superlinearly long."""
    size = len(text)
    if name in _CHECKED_METHODS:
        _check_text_method(text, name, args, kwargs)
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
