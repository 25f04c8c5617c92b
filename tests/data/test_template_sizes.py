"""data/template_sizes.py: estimates of what a template operation would make, checked before it runs, and the
errors a limit becomes (a record too long, or a template error that stops the run)."""

from __future__ import annotations

import pytest
from jinja2 import Environment

from tunewise.data.template_limits import TemplateLimits
from tunewise.data.template_sizes import (
    FILTER_SIZES,
    HASH_COLLISIONS,
    PUNYCODE_CHARS,
    LimitExceeded,
    RecordTooLong,
    check_hashing,
    check_pairs,
    checked_fromkeys,
    checked_pairs,
    filter_sizes,
    nesting,
    nesting_depth,
    number,
    printf_size,
    text_method_size,
    weigh,
    weigh_made,
)
from tunewise.errors import ConfigError, RenderError

# Unequal ints that all hash to 0 (an int hashes to itself modulo 2**61 - 1).
COLLIDING = [i * (2**61 - 1) for i in range(1, HASH_COLLISIONS + 3)]


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


def test_check_pairs_refuses_work_that_grows_with_both_sizes():
    check_pairs("strip()", 100, "ab", 1000)  # 200 pairs: fine
    with pytest.raises(LimitExceeded, match=r"strip\(\) on 100 characters with a 20-character argument") as caught:
        check_pairs("strip()", 100, "a" * 20, 1000)
    assert caught.value.per_record


def test_colliding_hash_keys_are_refused_before_a_set_or_dict_is_made():
    check_hashing(range(10_000), "fromkeys()")  # distinct hashes: fine
    check_hashing([[1], [2]], "fromkeys()")  # unhashable: the call raises its own error
    with pytest.raises(LimitExceeded, match=f"fromkeys\\(\\) on {HASH_COLLISIONS + 1} unequal values"):
        check_hashing(COLLIDING, "fromkeys()")
    with pytest.raises(LimitExceeded, match=r"^dict\(\) on"):
        checked_pairs(dict, [(k, 0) for k in COLLIDING])
    assert checked_pairs(dict, [("a", 1)], b=2) == {"a": 1, "b": 2}
    assert checked_fromkeys(["a", "b"], 0) == {"a": 0, "b": 0}


def test_text_method_sizes_and_the_calls_refused_before_they_run():
    assert text_method_size("ab", "center", (100,), {}, 1000) == (100, (100,))
    assert text_method_size("aXa", "replace", ("a", "bbb"), {}, 1000)[0] == 3 + 2 * 2
    size, (items,) = text_method_size(",", "join", (iter(["a", "b"]),), {}, 1000)
    assert items == ["a", "b"] and size == 1 * 2 + 2
    assert text_method_size("abc", "upper", (), {}, 1000) == (0, ())
    with pytest.raises(LimitExceeded, match=r"rfind\(\) on 100000 characters"):
        text_method_size("a" * 100_000, "rfind", ("a" * 10_000,), {}, 10**7)
    with pytest.raises(LimitExceeded, match=rf"encode\(\) to punycode on {PUNYCODE_CHARS + 1} characters"):
        text_method_size("é" * (PUNYCODE_CHARS + 1), "encode", ("punycode",), {}, 10**7)


def test_filter_sizes_estimate_and_refuse_by_the_limits():
    sizes = filter_sizes(TemplateLimits(urlize_chars=100, int_bits=64))
    assert FILTER_SIZES["center"]("x", 500) == 500
    assert sizes["indent"]("a\nb", 4) == 3 + 2 * 4
    assert sizes["urlize"]("x" * 10) > 10
    with pytest.raises(LimitExceeded, match="the urlize filter on 101 characters, over the limit of 100"):
        sizes["urlize"]("x" * 101)
    with pytest.raises(LimitExceeded, match="the int filter would make a number of about 400 bits") as caught:
        sizes["int"]("f" * 100, base=16)
    assert caught.value.per_record  # the record's text: reject the record
    with pytest.raises(LimitExceeded, match="the round filter") as caught:
        sizes["round"](1.5, 100)
    assert not caught.value.per_record  # the template's own number: stop the run
