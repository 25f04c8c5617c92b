"""Bounded Jinja2: a user's template (prompt.template, a model's chat template) cannot hang or exhaust memory.

Jinja's sandbox stops escapes to Python internals, not work: `range(10**9)`, nested loops, `10 ** 10 ** 10`,
`'ab' * 4000000000` or a string doubled in a loop run until the machine gives out. This environment adds bounds:

- work: every loop iteration, call and filter ticks a per-render budget (a step count and a wall-clock deadline).
  The checks are cooperative, inside the sandbox's own hooks, so nothing has to kill a thread; the only code that
  runs between two ticks is straight-line template code or one built-in operation, and those are bounded by size.
- size: no string or container may grow past `output_chars`. Operations that can multiply their input in one
  C call (`*`, `**`, `%`, `format`, `center`, `join`, `replace`, `indent`, `wordwrap`, `tojson`, ...) are checked
  before they run; everything else that builds a value (`+`, `~`, list and dict literals, calls, filters, captured
  blocks, the output) is checked when it is built, so no value that is too big survives to be multiplied again.
  Objects that hold values (a cycler, a loop, a filter's generator, a bound method) weigh what they hold.
- superlinear calls: one call that would run for seconds on a value within the size limit (`urlize`, `wordwrap`,
  `strip(chars)`, `rfind`, punycode, a deep `pprint`, colliding keys in `unique`) is refused before it runs.
- nesting: blocks and brackets deeper than `nesting` are refused before Jinja's recursive parser sees them.

Limits a record's size can reach (output and value sizes) raise `RecordTooLong` (a `RenderError`): that record is
rejected as too long. Limits that only the template's logic reaches (time, steps, range, number size, nesting) raise
`ConfigError`: the run stops. The counting is in template_budget, value measures in template_sizes, and the checks
made before one filter or method call in template_costs.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import BuiltinMethodType, MethodType
from typing import Any

from jinja2.environment import Template
from jinja2.exceptions import TemplateError
from jinja2.filters import make_attrgetter
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum, pass_environment, pass_eval_context
from markupsafe import Markup

from tunewise.data.template_budget import BoundedCodeGenerator, Budget, Counted, State
from tunewise.data.template_costs import (
    checked_fromkeys,
    checked_pairs,
    checked_unique,
    filter_sizes,
    text_method_size,
)
from tunewise.data.template_sizes import (
    WEIGHED,
    LimitExceeded,
    SizedEscapeFormatter,
    SizedFormatter,
    nesting_depth,
    printf_size,
    weigh,
    weigh_made,
)
from tunewise.errors import ConfigError, RenderError


@dataclass(frozen=True)
class TemplateLimits:
    """Per render. Far above any real prompt or chat template (those render in microseconds, kilobytes, 10 levels)."""

    seconds: float = 2.0  # wall clock
    output_chars: int = 1_000_000  # the output, and any string or container built on the way
    range_items: int = 100_000  # one range()
    steps: int = 1_000_000  # loop iterations + calls + filters
    nesting: int = 50  # blocks + brackets in the source (Python's own parser stops near 100 indents/200 parens)
    int_bits: int = 4096  # a number built by * or ** (about 1,200 digits)
    source_chars: int = 100_000  # the template itself: compiling 1 MB of template takes a minute (chat ones: ~5 KB)
    urlize_chars: int = 3_000  # the urlize filter's input: it is quadratic in one call (10,000 characters: 2 s)
    chat_messages: int = 1_000  # one chat record: each assistant turn renders the turns before it again (n x n)


DEFAULT_LIMITS = TemplateLimits()


_monotonic = time.monotonic
_QUOTED = {op: f"'{op}'" for op in ("*", "**", "%")}


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment with limits on time, steps, sizes and nesting (see the module docstring).

    Use `template(source, what)` to compile and `render(template, what, variables)` to render: errors come out
    as one-line ConfigError/RenderError naming `what` (e.g. "prompt.template") and the limit hit."""

    code_generator_class = BoundedCodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, limits: TemplateLimits = DEFAULT_LIMITS, **options: Any) -> None:
        super().__init__(**options)
        self.limits = limits
        self._state = State()
        self.globals["range"] = self._range
        self.globals["lipsum"] = self._lipsum
        originals = dict(self.filters)
        for name, size in filter_sizes(limits).items():
            originals[name] = self._prechecked(originals[name], size, f"the {name} filter")
        originals["format"] = self._prechecked(  # `value % args`, unsandboxed in jinja
            originals["format"], lambda value, *a, **kw: printf_size(str(value), kw or a, limits.output_chars), "'%'"
        )
        for name, func in {**originals, **self._replacements(originals)}.items():
            self.add_filter(name, func)

    def add_filter(self, name: str, func: Callable[..., Any]) -> None:
        """Registers a filter that ticks the budget and whose result is size-checked."""
        state, fit, label, limit = self._state, self.fit, f"the {name} filter", self.limits.output_chars

        @functools.wraps(func)  # keeps jinja_pass_arg (pass_context & co.)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            budget = state.budget  # budget.tick(), inlined: filters run in every loop of every template
            budget.left -= 1
            if budget.left < 0 or _monotonic() > budget.deadline:
                budget.tick()
            result = func(*args, **kwargs)
            return result if type(result) is str and len(result) <= limit else fit(result, label)

        self.filters[name] = guarded

    # -- entry points ------------------------------------------------------------------------------

    def template(self, source: str, what: str) -> Template:
        if len(source) > self.limits.source_chars:
            raise ConfigError(f"{what}: {len(source)} characters exceed the limit of {self.limits.source_chars}")
        depth = nesting_depth(self, source)
        if depth > self.limits.nesting:
            raise ConfigError(f"{what}: nesting {depth} deep exceeds the limit of {self.limits.nesting}")
        try:
            return self.from_string(source)
        except TemplateError as exc:
            raise ConfigError(f"{what}: line {getattr(exc, 'lineno', '?')}: {exc}") from None
        except (RecursionError, SyntaxError, MemoryError) as exc:  # e.g. a 500-long attribute chain, 21 nested loops
            why = exc.msg if isinstance(exc, SyntaxError) else "Python's recursion limit"  # Python's own limits
            raise ConfigError(f"{what}: too deeply nested to compile ({why})") from None

    def render(self, template: Template, what: str, variables: Mapping[str, Any]) -> str:
        """Renders within the limits; other template errors (undefined, sandbox) propagate for the caller to word."""
        state = self._state
        outer, state.budget = state.budget, Budget(self.limits.seconds, self.limits.steps)
        try:
            return template.render(variables)  # the output goes through `concat`, bounded
        except LimitExceeded as exc:
            raise exc.as_error(what) from None
        except RecursionError:  # a recursive macro
            raise ConfigError(f"{what}: recursion too deep while rendering") from None
        except MemoryError:  # a bound missed something; still one line, still this record
            raise RenderError(f"{what}: out of memory while rendering") from None
        finally:
            state.budget = outer

    # -- hooks the compiled template calls -----------------------------------------------------------

    def concat(self, parts: Iterable[str]) -> str:  # type: ignore[override]  # every buffer and the output
        # A buffer (a macro's, a captured block's) or the output's generator. Listing first is safe: each part is
        # a value already bounded, and there are at most `steps` of them; only the join could be huge.
        parts = parts if isinstance(parts, list) else list(parts)
        if sum(map(len, parts)) > self.limits.output_chars:
            raise LimitExceeded(f"output exceeds the limit of {self.limits.output_chars} characters", per_record=True)
        return "".join(parts)

    def counted(self, items: Any) -> Counted:
        return Counted(items, self._state.budget)

    def fit(self, value: Any, what: str) -> Any:
        """Passes a built value through if it is within the size limit."""
        limit = self.limits.output_chars
        if type(value) is str or isinstance(value, str):
            self.expect(len(value), what)
        elif isinstance(value, WEIGHED) and weigh_made(value, limit) > limit:
            raise LimitExceeded(f"{what} exceeds the limit of {limit} characters", per_record=True)
        return value

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = self._state.budget  # macro recursion, loop(...) and method calls all tick here
        budget.left -= 1
        if budget.left < 0 or _monotonic() > budget.deadline:
            budget.tick()
        kind, target = type(obj), obj
        if kind is BuiltinMethodType or kind is MethodType:  # 'x'.center, Markup('x').center, (1).to_bytes
            owner = obj.__self__
            if isinstance(owner, (str, bytes)):
                size, args = text_method_size(owner, obj.__name__, args, kwargs, self.limits.output_chars)
                self.expect(size, f"{obj.__name__}()")
            elif type(owner) is int and obj.__name__ == "to_bytes":
                self.expect(args[0] if args and isinstance(args[0], int) else 0, "to_bytes()")
            elif owner is dict and obj.__name__ == "fromkeys":  # colliding keys would take n x n
                target = checked_fromkeys
        elif kind is LoopContext and args:  # a recursive loop's next level
            args = (self.counted(args[0]), *args[1:])
        elif obj is dict or (isinstance(obj, type) and issubclass(obj, Namespace)):  # both make a dict of pairs
            target = functools.partial(checked_pairs, obj)
        result = super().call(context, target, *args, **kwargs)
        if type(result) is str and len(result) <= self.limits.output_chars:
            return result  # the common case, without building a name
        return self.fit(result, f"{getattr(obj, '__name__', None) or getattr(obj, 'name', None) or 'a call'}()")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "+":  # chat templates add strings all the time: the short way for those
            result = left + right
            if type(result) is str and len(result) <= self.limits.output_chars:
                return result
            return self.fit(result, "'+'")
        if operator == "*":
            self._check_multiply(left, right)
        elif operator == "**" and type(left) in (int, bool) and type(right) in (int, bool) and right > 0 and left:
            # bits of left ** right; for exponents past float range, a lower bound in integers
            bits = right * math.log2(abs(left)) if right < 2**53 else right * (abs(left).bit_length() - 1)
            if bits > self.limits.int_bits:
                size = int(bits) if bits < 10**15 else f"2**{int(bits).bit_length() - 1}"  # not a 400-digit count
                raise LimitExceeded(
                    f"'**' would make a number of about {size} bits, over the limit of {self.limits.int_bits}"
                )
        elif operator == "%" and isinstance(left, (str, bytes)):
            fmt = left if isinstance(left, str) else left.decode("latin-1")  # b'%999999999d' pads the same way
            self.expect(printf_size(fmt, right, self.limits.output_chars), "'%'")
        return self.fit(self.binop_table[operator](left, right), _QUOTED[operator])

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # Jinja's own wrapper with a formatter that checks widths, and a bound on fields x arguments.
        if not isinstance(value, (MethodType, BuiltinMethodType)) or value.__name__ not in ("format", "format_map"):
            return None
        f_self = value.__self__
        if not isinstance(f_self, str):
            return None
        str_type, is_format_map = type(f_self), value.__name__ == "format_map"
        escaped = isinstance(f_self, Markup)
        formatter = SizedEscapeFormatter(self, escape=f_self.escape) if escaped else SizedFormatter(self)

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                kwargs, args = args[0], ()
            # every field may print every argument (`'{0}{0}{0}'`): fields x arguments bounds the output
            self.expect(len(f_self) + f_self.count("{") * weigh((args, kwargs), self.limits.output_chars), "format()")
            return str_type(formatter.vformat(f_self, args, kwargs))

        return functools.update_wrapper(wrapper, value)

    # -- checks --------------------------------------------------------------------------------------

    def expect(self, size: int, what: str) -> None:
        """Refuses an operation that would make `size` characters, before it runs."""
        if size > self.limits.output_chars:
            raise LimitExceeded(
                f"{what} would make {size} characters, over the limit of {self.limits.output_chars}", per_record=True
            )

    def _check_multiply(self, left: Any, right: Any) -> None:
        if isinstance(left, int) and isinstance(right, int):
            bits = left.bit_length() + right.bit_length()
            if bits > self.limits.int_bits:
                raise LimitExceeded(f"'*' would make a number of {bits} bits, over the limit of {self.limits.int_bits}")
            return
        seq, times = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(times, int) and times > 0 and isinstance(seq, (str, bytes, list, tuple)):
            self.expect(weigh(seq, self.limits.output_chars) * times, "'*'")

    # -- filters that must see their input before the work ------------------------------------------

    def _prechecked(self, func: Callable[..., Any], size: Callable[..., int], what: str) -> Callable[..., Any]:
        skip = int(hasattr(func, "jinja_pass_arg"))  # the context/environment argument isn't the filter's

        @functools.wraps(func)
        def checked(*args: Any, **kwargs: Any) -> Any:
            self.expect(size(*args[skip:], **kwargs), what)
            return func(*args, **kwargs)

        return checked

    def _replacements(self, originals: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
        replaced = {"join": self._join(originals["join"]), "sum": self._sum(originals["sum"])}
        return {**replaced, "tojson": self._tojson(), "unique": checked_unique(originals["unique"])}

    def _join(self, original: Callable[..., Any]) -> Callable[..., Any]:
        @pass_eval_context
        def join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
            if attribute is not None:
                value = map(make_attrgetter(eval_ctx.environment, attribute), value)
            items, limit = list(value), self.limits.output_chars
            size = len(str(d)) * len(items)
            for item in items:  # labels|join(', ') runs per record: skip weigh() for plain strings
                size += len(item) if type(item) is str else weigh(item, limit)
            self.expect(size, "the join filter")
            return original(eval_ctx, items, d)

        return join

    def _sum(self, original: Callable[..., Any]) -> Callable[..., Any]:
        @pass_environment
        def sum_(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
            if attribute is not None:
                iterable = map(make_attrgetter(environment, attribute), iterable)
            items = list(iterable)
            if isinstance(start, (list, tuple)) and all(type(i) is type(start) for i in items):
                # sum() of lists copies the total once per item: n x total work. Chain them instead (same result).
                self.expect(sum(weigh(i, self.limits.output_chars) for i in [start, *items]), "the sum filter")
                return type(start)(itertools.chain(start, *items))
            return original(environment, items, start=start)

        return sum_

    def dumps(self, value: Any, **options: Any) -> str:
        """json.dumps, streamed so that an indent or a deep value stops at the limit instead of after."""
        chunks, total, limit = [], 0, self.limits.output_chars
        indent = options.get("indent")
        self.expect(len(indent) if isinstance(indent, str) else indent or 0, "a JSON indent")  # built up front
        for chunk in json.JSONEncoder(**options).iterencode(value):
            total += len(chunk)
            if total > limit:
                raise LimitExceeded(f"JSON exceeds the limit of {limit} characters", per_record=True)
            chunks.append(chunk)
        return "".join(chunks)

    def _tojson(self) -> Callable[..., Any]:
        @pass_eval_context
        def tojson(eval_ctx: Any, value: Any, indent: Any = None) -> Markup:
            policies = eval_ctx.environment.policies  # our policies: json.dumps with sort_keys, as jinja's default
            options = {**policies["json.dumps_kwargs"], **({"indent": indent} if indent is not None else {})}
            text = self.dumps(value, **options)  # then exactly jinja's htmlsafe_json_dumps
            return Markup(
                text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("'", "\\u0027")
            )

        return tojson

    # -- globals -------------------------------------------------------------------------------------

    def _range(self, *args: int) -> range:
        items = range(*args)
        try:
            size = len(items)
        except OverflowError:  # more than sys.maxsize items
            size = (items.stop - items.start) // items.step
        if size > self.limits.range_items:
            raise LimitExceeded(f"range of {size} items exceeds the limit of {self.limits.range_items}")
        return items

    def _lipsum(self, n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
        self.expect(n * max * 12, "lipsum()")  # words of up to ~12 characters
        return generate_lorem_ipsum(n, html, min, max)
