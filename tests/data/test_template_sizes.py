"""data/template_sizes.py: how big a value prints, how much a printf field can make, how deep a template nests, and
the errors a limit becomes (a record too long, or a template error that stops the run)."""

from __future__ import annotations

from jinja2 import Environment

from tunewise.data.template_sizes import (
    LimitExceeded,
    RecordTooLong,
    nesting,
    nesting_depth,
    number,
    printf_size,
    weigh,
    weigh_made,
)
from tunewise.errors import ConfigError, RenderError


def test_a_limit_a_record_can_reach_is_a_record_too_long_else_a_config_error():
    record = LimitExceeded("output exceeds the limit of 10 characters", per_record=True).as_error("prompt.template")
    assert isinstance(record, RecordTooLong) and isinstance(record, RenderError)
    assert str(record) == record.reason == "prompt.template: output exceeds the limit of 10 characters"
    config = LimitExceeded("range of 5 items exceeds the limit of 2").as_error("prompt.template")
    assert type(config) is ConfigError and str(config) == "prompt.template: range of 5 items exceeds the limit of 2"


def test_weigh_counts_about_the_printed_size_and_stops_past_the_limit():
    assert weigh("abc", 100) == 3
    assert weigh(["ab", "cd"], 100) == 7  # 2 strings + 2 separators + 1
    assert weigh({"k": "vv"}, 100) == 6
    shared = ["x" * 10]
    assert weigh([shared, shared], 100) > 2 * 10  # a list referenced twice prints twice
    assert weigh(["y" * 1000] * 10**6, 50) > 50  # past the limit: stops early, never walks a million items


def test_weigh_made_counts_a_filters_list_argument_by_its_length():
    items = ["x" * 100] * 5

    def generator(values):
        yield from values

    assert weigh_made(generator(items), 10**6) == 1 + len(items) + 1
    assert weigh_made("plain", 100) == 5


def test_nesting_depth_of_values_and_of_template_source():
    assert nesting([[[]]], 100) == 2 and nesting({"a": [1]}, 100) == 2 and nesting("x", 100) == 0
    env = Environment()
    assert nesting_depth(env, "{% for x in y %}{% if x %}{{ x }}{% endif %}{% endfor %}") == 2
    assert nesting_depth(env, "{{ ((1)) }}") == 2
    assert nesting_depth(env, "{% set s %}{{ [1] }}{% endset %}") == 2
    assert nesting_depth(env, "{% if x %}{{ ((1 }}") == 0  # a syntax error: compiling reports it with its line


def test_number_and_printf_size():
    assert number("123") == 123 and number("9" * 5000) == 10**10
    assert printf_size("%10d", 1, 1000) == 10
    assert printf_size("%*d", (999, 1), 1000) == 999
    assert printf_size("%s-%s", ("ab", "cd"), 1000) >= len("ab-cd")
