"""data/template_budget.py: the per-render step and time budget, the loop wrapper that ticks it once per item, and
the code generator that sends every loop and every built list, dict, tuple and `~` through the environment."""

from __future__ import annotations

import math
import sys
import threading
import time
from typing import Any

import pytest
from jinja2 import Environment

from tunewise.data.template_budget import BoundedCodeGenerator, Budget, Counted, State
from tunewise.data.template_sizes import LimitExceeded, references, weigh


def test_the_budget_allows_its_steps_then_stops_the_run():
    budget = Budget(60, 2)
    budget.tick()
    budget.tick()
    with pytest.raises(LimitExceeded, match="^loop iterations and calls exceed the limit of 2$") as caught:
        budget.tick()
    assert not caught.value.per_record  # the template's logic: stop the run


def test_the_budget_stops_at_its_deadline():
    budget = Budget(0.01, 1000)
    budget.tick()
    time.sleep(0.02)
    with pytest.raises(LimitExceeded, match=r"^rendering exceeded 0\.01 s \(limit\)$"):
        budget.tick()


def test_a_counted_loop_ticks_once_per_item_and_stops_within_the_budget():
    budget = Budget(60, 10)
    assert list(Counted(["a", "b", "c"], budget)) == ["a", "b", "c"]
    assert budget.left == 7
    seen = []
    with pytest.raises(LimitExceeded, match="limit of 10"):
        seen.extend(Counted(range(10**9), budget))  # would run for minutes without the budget
    assert len(seen) == 7


def test_a_counted_loop_has_the_length_of_its_items_without_consuming_them():
    budget = Budget(60, 10)
    assert len(Counted([1, 2, 3], budget)) == 3 and budget.left == 10
    with pytest.raises(TypeError):
        len(Counted(iter([1, 2]), budget))  # an iterator has no length, in a loop or not


def test_a_counted_loop_kept_in_a_value_weighs_what_it_iterates():
    items = ["x" * 500] * 4
    counted = Counted(items, Budget(60, 10))
    assert tuple(references(counted)) == (items,)
    assert weigh([counted], 10**6) > 2000


def test_outside_a_render_the_budget_is_unbounded_and_each_thread_has_its_own():
    state = State()
    assert state.budget.seconds == math.inf and state.budget.steps == sys.maxsize
    mine = Budget(1, 1)
    state.budget = mine
    seen: list[Budget] = []
    thread = threading.Thread(target=lambda: seen.append(state.budget))
    thread.start()
    thread.join()
    assert state.budget is mine and seen[0] is not mine and seen[0].steps == sys.maxsize


class _Recording(Environment):
    """Compiles with the bounded code generator and records what the generated code hands to the environment."""

    code_generator_class = BoundedCodeGenerator

    def __init__(self) -> None:
        super().__init__()
        self.loops: list[Any] = []
        self.built: list[tuple[Any, str]] = []

    def counted(self, items: Any) -> Any:
        self.loops.append(items)
        return items

    def fit(self, value: Any, what: str) -> Any:
        self.built.append((value, what))
        return value


def test_the_code_generator_routes_loops_and_built_values_through_the_environment():
    source = (
        "{% for a, b in pairs %}{{ (a, b) }}{% endfor %}"
        "{% for x in items %}{{ [x] }}{{ {'k': x} }}{{ x ~ '!' }}{% endfor %}"
    )
    env = _Recording()
    output = env.from_string(source).render(pairs=[(1, 2)], items=["p", "q"])
    assert output == Environment().from_string(source).render(pairs=[(1, 2)], items=["p", "q"])
    assert env.loops == [[(1, 2)], ["p", "q"]]
    whats = [what for _, what in env.built]
    assert whats == ["a tuple", "a list", "a dict", "'~'", "a list", "a dict", "'~'"]  # not the loop's target
    assert env.built[0][0] == (1, 2) and env.built[-1][0] == "q!"
