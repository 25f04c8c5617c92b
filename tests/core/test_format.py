"""One spelling per quantity (core/format.py): durations, metric values, counts, p-values, damaged values."""

from __future__ import annotations

import math

import pytest

from tunewise.core import format as fmt

HUGE = int("1" + "0" * 400)  # in a damaged file: no float holds it
DAMAGED = [None, "0.5", True, HUGE, [1], {"a": 1}]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (42.9, "42s"), (60, "1m00s"), (187.4, "3m07s"), (3725.6, "62m05s"), (5400, "90m00s"), (-5, "-5s")],
)
def test_a_duration_reads_as_the_console_run_table_prints_it(seconds: float, shown: str):
    assert fmt.duration(seconds) == shown


@pytest.mark.parametrize("value", [*DAMAGED, math.nan, math.inf])
def test_a_duration_that_is_not_a_finite_number_is_the_missing_marker(value: object):
    assert fmt.duration(value) == fmt.MISSING
    assert fmt.duration(value, missing="") == ""


def test_a_metric_has_four_decimals_and_non_finite_values_say_so():
    assert fmt.metric(0.8125) == "0.8125"
    assert fmt.metric(2 / 3) == "0.6667"
    assert fmt.metric(1) == "1.0000"  # an int in eval.json reads like the float it stands for
    assert [fmt.metric(v) for v in (math.nan, math.inf, -math.inf)] == ["nan", "inf", "-inf"]


@pytest.mark.parametrize("value", DAMAGED)
def test_every_number_formatter_gives_missing_for_what_is_no_number(value: object):
    for formatter in (fmt.metric, fmt.signed, fmt.seconds, fmt.duration):
        assert formatter(value, missing="?") == "?", formatter.__name__
    assert fmt.format_p_value(value) == fmt.MISSING and fmt.format_p(value) == f"p = {fmt.MISSING}"


def test_signed_differences_and_seconds_columns():
    assert (fmt.signed(0.025), fmt.signed(-0.1), fmt.signed(0)) == ("+0.0250", "-0.1000", "+0.0000")
    assert (fmt.seconds(3), fmt.seconds(0.04), fmt.seconds(12.345)) == ("3.0", "0.0", "12.3")


def test_counts_get_thousands_separators_and_anything_else_is_missing():
    assert (fmt.count(7), fmt.count(1234567), fmt.count(HUGE)[:6]) == ("7", "1,234,567", "10,000")
    assert [fmt.count(v) for v in (None, 3.0, "12", False)] == [fmt.MISSING] * 4
    assert fmt.count(None, missing="0") == "0"


def test_a_parameter_keeps_its_type_floats_in_significant_digits():
    assert [fmt.param(v) for v in (1e-5, 3e-4, 0.123456, 8, "cosine", True)] == [
        "1e-05",
        "0.0003",
        "0.1235",
        "8",
        "cosine",
        "True",
    ]
    assert fmt.param(None) == fmt.MISSING


def test_is_number_takes_what_converts_to_a_float():
    assert all(fmt.is_number(v) for v in (0, 1.5, math.nan, -math.inf, 10**300))
    assert not any(fmt.is_number(v) for v in DAMAGED)


@pytest.mark.parametrize(
    ("p", "resamples", "column", "statement"),
    [
        (1 / 1001, 1000, "≤ 0.001", "p ≤ 0.001"),  # the floor: no resample moved the difference as far
        (2 / 1001, 1000, "0.002", "p = 0.002"),
        (0.12, 1000, "0.120", "p = 0.120"),
        (1 / 201, 200, "≤ 0.005", "p ≤ 0.005"),  # floor 1/201 = 0.004975 rounded up, so the bound stays true
        (1 / 10_001, 10_000, "≤ 0.0001", "p ≤ 0.0001"),
        (3 / 10_001, 10_000, "0.0003", "p = 0.0003"),  # enough decimals to tell it from the floor
    ],
)
def test_p_values_show_the_floor_of_their_resamples(p: float, resamples: int, column: str, statement: str):
    assert fmt.format_p_value(p, resamples) == column
    assert fmt.format_p(p, resamples) == statement
    assert fmt.at_p_floor(p, resamples) == column.startswith("≤")


def test_a_p_read_back_from_json_still_counts_as_at_the_floor():
    stored = float(repr(1 / 1001))
    assert fmt.at_p_floor(stored * (1 + 1e-12), 1000) and not fmt.at_p_floor(1.01 / 1001, 1000)


@pytest.mark.parametrize("stored", [None, 0, -5, True, "1000", 2.5, 1 << 60])
def test_an_implausible_stored_resample_count_counts_as_the_default(stored: object):
    assert fmt.stored_resamples(stored) == fmt.BOOTSTRAP_RESAMPLES
    assert fmt.format_p_value(1 / 1001, stored) == "≤ 0.001"


def test_non_finite_p_values_are_shown_not_floored():
    assert [fmt.format_p_value(p) for p in (math.nan, math.inf, -math.inf)] == ["nan", "inf", "-inf"]
    assert fmt.format_p(math.nan) == "p = nan"


def test_the_floor_note_names_the_resamples_and_the_shown_bound():
    note = fmt.p_floor_note(1000)
    assert "from 1,000 paired-bootstrap resamples" in note and "below 1/1,001" in note and "p ≤ 0.001" in note
    assert "1/201" in fmt.p_floor_note(200) and "p ≤ 0.005" in fmt.p_floor_note(200)
    assert fmt.p_floor(1000) == 1 / 1001
