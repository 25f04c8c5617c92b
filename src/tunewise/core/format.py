"""How tunewise spells a duration, a metric value, a count and a p-value: one text for console, views and HTML.

Every formatter takes what a run file may hold, damaged or not: a value that is not a number (None, a string, a
bool, an integer too large for a float) gives `missing`, which a console table passes as "" and an HTML page
leaves as its "—". A number is never turned into an exception.
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "—"
BOOTSTRAP_RESAMPLES = 1000  # what every tunewise comparison uses; also assumed for a difference that omits it


def is_number(value: Any) -> bool:
    """An int or float, not a bool, that converts to a float (NaN and infinity included; a 400-digit int not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def duration(seconds: Any, missing: str = MISSING) -> str:
    """`42s`, `3m07s` (whole seconds, truncated); minutes keep counting past the hour (`95m00s`)."""
    if not is_number(seconds) or not math.isfinite(seconds):
        return missing
    sign, whole = ("-" if seconds < 0 else ""), int(abs(seconds))
    minutes, secs = divmod(whole, 60)
    return f"{sign}{minutes}m{secs:02d}s" if minutes else f"{sign}{secs}s"


def seconds(value: Any, missing: str = MISSING) -> str:
    """A cell of a column headed "seconds": one decimal (`3.0`), so sub-second steps still show."""
    return f"{value:.1f}" if is_number(value) else missing


def metric(value: Any, missing: str = MISSING) -> str:
    """A metric value (accuracy, macro-F1, a loss): four decimals, `0.8125`; `nan` or `inf` as such."""
    return f"{value:.4f}" if is_number(value) else missing


def signed(value: Any, missing: str = MISSING) -> str:
    """A difference between two metric values: four decimals with its sign, `+0.0250`, `-0.1000`."""
    return f"{value:+.4f}" if is_number(value) else missing


def count(value: Any, missing: str = MISSING) -> str:
    """A whole number of things (examples, steps, parameters) with thousands separators: `1,234,567`."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else missing


def param(value: Any, missing: str = MISSING) -> str:
    """A configured value (a sweep parameter): floats in four significant digits, since they span decades
    (learning rates: `1e-05`, `0.0003`); anything else as written."""
    if value is None:
        return missing
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ---- p-values of paired-bootstrap differences ------------------------------------------------------------


def stored_resamples(value: Any) -> int:
    """The resample count a stored difference (eval.json, eval_matrix.json) records; BOOTSTRAP_RESAMPLES where
    it is absent or not a plausible count (a damaged file)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 1 << 53:
        return value
    return BOOTSTRAP_RESAMPLES


def p_floor(resamples: int) -> float:
    """The smallest p a paired bootstrap of `resamples` resamples can return: 1 / (resamples + 1), when no
    resample moved the difference as far as the observed one. The true p may be smaller still."""
    return 1 / (resamples + 1)


def at_p_floor(p: float, resamples: int) -> bool:
    # Up to rounding: a p read back from eval.json is the float the bootstrap computed, or its JSON repr.
    return p <= p_floor(resamples) * (1 + 1e-9)


def format_p_value(p: Any, resamples: Any = BOOTSTRAP_RESAMPLES, missing: str = MISSING) -> str:
    """The p of a table's p column: `0.012`, or `≤ 0.001` at the floor of `resamples` resamples (`p_floor`,
    rounded up to one significant digit so the bound stays true: 1/1001 shows as ≤ 0.001). "< 0.001" would
    claim more than the resamples show, "0.001" a precision they do not have. `resamples` may be read from a
    file: one that is not a plausible count counts as BOOTSTRAP_RESAMPLES (`stored_resamples`)."""
    if not is_number(p):
        return missing
    resamples = stored_resamples(resamples)
    floor = p_floor(resamples)
    exponent = math.floor(math.log10(floor))
    shown = math.ceil(floor / 10**exponent - 1e-9) * 10**exponent  # one significant digit, rounded up
    decimals = max(3, math.ceil(-math.log10(shown) - 1e-9))  # enough to show the floor
    if math.isfinite(p) and at_p_floor(p, resamples):
        return f"≤ {shown:.{decimals}f}"
    return f"{p:.{decimals}f}"


def format_p(p: Any, resamples: Any = BOOTSTRAP_RESAMPLES) -> str:
    """The p as a statement, `p = 0.012` or `p ≤ 0.001` (see `format_p_value`)."""
    value = format_p_value(p, resamples)
    return f"p {value}" if value.startswith("≤") else f"p = {value}"


def p_floor_note(resamples: int = BOOTSTRAP_RESAMPLES) -> str:
    """What a p at the floor means, for the footnote under a table of differences."""
    return (
        f"p: two-sided, from {count(resamples)} paired-bootstrap resamples, which cannot give a p below "
        f"1/{count(resamples + 1)}; p {format_p_value(p_floor(resamples), resamples)} means no resample moved the "
        "difference as far as observed, and the true p may be smaller still."
    )
