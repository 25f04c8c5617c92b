"""Counting a bounded render's work: the per-render step and time budget, the loop wrapper that ticks it, and the
code generator that routes loops and value building through tunewise.data.template_limits' environment."""

from __future__ import annotations

import copy
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator

from tunewise.data.template_sizes import HOLDERS, LimitExceeded

_monotonic = time.monotonic


class Budget:
    __slots__ = ("deadline", "left", "seconds", "steps")

    def __init__(self, seconds: float, steps: int) -> None:
        self.seconds, self.steps, self.left = seconds, steps, steps
        self.deadline = time.monotonic() + seconds

    def tick(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise LimitExceeded(f"loop iterations and calls exceed the limit of {self.steps}")
        if time.monotonic() > self.deadline:
            raise LimitExceeded(f"rendering exceeded {self.seconds:g} s (limit)")


class State(threading.local):
    # Outside `render` (a bare template.render()) the size bounds still hold; time and steps are not counted.
    budget = Budget(math.inf, sys.maxsize)


class Counted:
    """What a for-loop iterates: each item ticks the budget, so nested loops can't run 10**10 times."""

    __slots__ = ("_budget", "_items")

    def __init__(self, items: Any, budget: Budget) -> None:
        self._items, self._budget = items, budget

    def __iter__(self) -> Iterator[Any]:
        budget = self._budget
        for item in self._items:
            budget.left -= 1  # budget.tick(), inlined: this runs once per iteration of every loop
            if budget.left < 0 or _monotonic() > budget.deadline:
                budget.tick()
            yield item

    def __len__(self) -> int:  # loop.length without consuming the items (TypeError for iterators, as before)
        return len(self._items)


HOLDERS[Counted] = lambda counted: (counted._items,)  # a loop object kept in a value holds what it iterates


class BoundedCodeGenerator(CodeGenerator):
    """Routes the constructs that have no sandbox hook through the environment: loops and value building."""

    def visit_For(self, node: nodes.For, frame: Any) -> None:
        counted = copy.copy(node)  # the parsed tree stays as it was
        counted.iter = nodes.Call(nodes.EnvironmentAttribute("counted"), [node.iter], [], None, None)
        super().visit_For(counted, frame)

    def visit_Call(self, node: nodes.Call, frame: Any, forward_caller: bool = False) -> None:
        if isinstance(node.node, nodes.EnvironmentAttribute) and node.node.name == "counted":  # only ours make these
            self.write("environment.counted(")  # a direct call: the sandbox's call() has nothing to check here
            self.visit(node.args[0], frame)
            self.write(")")
        else:
            super().visit_Call(node, frame, forward_caller=forward_caller)

    def _fitted(self, visit: Callable[..., None], node: nodes.Node, frame: Any, what: str) -> None:
        self.write("environment.fit(")
        visit(node, frame)
        self.write(f", {what!r})")

    def visit_Concat(self, node: nodes.Concat, frame: Any) -> None:
        self._fitted(super().visit_Concat, node, frame, "'~'")

    def visit_List(self, node: nodes.List, frame: Any) -> None:
        self._fitted(super().visit_List, node, frame, "a list")

    def visit_Dict(self, node: nodes.Dict, frame: Any) -> None:
        self._fitted(super().visit_Dict, node, frame, "a dict")

    def visit_Tuple(self, node: nodes.Tuple, frame: Any) -> None:
        if node.ctx != "load":  # a target: `{% for a, b in ... %}`
            super().visit_Tuple(node, frame)
        else:
            self._fitted(super().visit_Tuple, node, frame, "a tuple")
