"""Checks for tunewise.data.template_limits that run before one operation does: how much a filter or a str/bytes
method would make, and refusals of single calls that would run superlinearly long (quadratic strip, backward
searches, long-word wrapping, punycode, colliding hash keys) on a value within the size limit."""

from __future__ import annotations

import codecs
import math
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from jinja2.filters import make_attrgetter
from jinja2.utils import pass_environment

from tunewise.data.template_sizes import LimitExceeded, nesting, weigh

if TYPE_CHECKING:
    from tunewise.data.template_limits import TemplateLimits


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
