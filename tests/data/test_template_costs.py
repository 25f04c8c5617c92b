"""data/template_costs.py: what a filter or a str/bytes method would make, checked before it runs, and the single
calls refused before they run superlinearly long (quadratic strip, backward searches, punycode, colliding keys)."""

from __future__ import annotations

import pytest
from jinja2 import Environment
from jinja2.filters import do_unique

from tunewise.data.template_costs import (
    FILTER_SIZES,
    HASH_COLLISIONS,
    PUNYCODE_CHARS,
    STRIP_PAIRS,
    WRAP_COPIES,
    check_hashing,
    check_pairs,
    checked_fromkeys,
    checked_pairs,
    checked_unique,
    filter_sizes,
    text_method_size,
)
from tunewise.data.template_limits import TemplateLimits
from tunewise.data.template_sizes import LimitExceeded

# Unequal ints that all hash to 0 (an int hashes to itself modulo 2**61 - 1).
COLLIDING = [i * (2**61 - 1) for i in range(1, HASH_COLLISIONS + 3)]


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


def test_the_unique_filter_refuses_colliding_keys_and_otherwise_filters_as_jinjas():
    unique, env = checked_unique(do_unique), Environment()
    assert list(unique(env, iter(["a", "A", "b"]))) == list(do_unique(env, ["a", "A", "b"])) == ["a", "b"]
    assert list(unique(env, [{"k": 1}, {"k": 1}, {"k": 2}], attribute="k")) == [{"k": 1}, {"k": 2}]
    with pytest.raises(LimitExceeded, match=f"the unique filter on {HASH_COLLISIONS + 1} unequal values") as caught:
        unique(env, COLLIDING)
    assert caught.value.per_record
    with pytest.raises(LimitExceeded, match="the unique filter on"):  # the keys an attribute picks are checked
        unique(env, [{"k": key} for key in COLLIDING], attribute="k")


def test_strip_with_chars_is_refused_past_its_pairs_limit_as_a_method_and_as_the_trim_filter():
    side = int(STRIP_PAIRS**0.5)
    assert FILTER_SIZES["trim"]("a" * side, "b" * side) == side  # exactly at the limit: fine
    with pytest.raises(LimitExceeded, match=f"the trim filter on {side} characters with a {side + 1}-character"):
        FILTER_SIZES["trim"]("a" * side, "b" * (side + 1))
    with pytest.raises(LimitExceeded, match=rf"^strip\(\) on {side} characters"):
        text_method_size("a" * side, "strip", ("b" * (side + 1),), {}, 10**7)


def test_wordwrap_refuses_one_long_word_not_a_long_text_of_short_words():
    longest = int(WRAP_COPIES**0.5)
    short_words = ("x" * 9 + " ") * (longest // 5)  # twice as long as the longest word allowed, in short words
    assert FILTER_SIZES["wordwrap"](short_words, 1) == 2 * len(short_words) + 1  # one break per character at most
    with pytest.raises(LimitExceeded, match=f"wordwrap filter on a word of {longest + 1} characters at width 1"):
        FILTER_SIZES["wordwrap"]("x" * (longest + 1), 1)
    assert FILTER_SIZES["wordwrap"]("x" * (longest + 1), 1, break_long_words=False) > longest  # no re-slicing


def test_idna_is_refused_both_ways_and_punycode_only_when_encoding():
    long_text, long_bytes = "é" * (PUNYCODE_CHARS + 1), b"a" * (PUNYCODE_CHARS + 1)
    with pytest.raises(LimitExceeded, match=rf"encode\(\) to idna on {PUNYCODE_CHARS + 1} characters"):
        text_method_size(long_text, "encode", (), {"encoding": "idna"}, 10**7)
    with pytest.raises(LimitExceeded, match=rf"decode\(\) from idna on {PUNYCODE_CHARS + 1} characters"):
        text_method_size(long_bytes, "decode", ("idna",), {}, 10**7)
    assert text_method_size(long_bytes, "decode", ("punycode",), {}, 10**7) == (0, ("punycode",))
    assert text_method_size(long_text, "encode", ("no-such-codec",), {}, 10**7)[0] == 0  # the call raises its own
    assert text_method_size("é" * PUNYCODE_CHARS, "encode", ("punycode",), {}, 10**7)[0] == 0  # at the limit: fine
