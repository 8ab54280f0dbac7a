"""Every generation switch (options.Generation: --square, ...) is honoured by every strategy and every fixed
example: the strategies are found by introspection of properties/helpers/strategies.py, the fixed examples from
the laws' explicit examples, so that a new one cannot escape."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import properties.helpers.strategies as strategies
from properties.helpers.options import GENERATION, Generation
from properties.helpers.problems import AttentionProblem, BatchedProblem

pytestmark = pytest.mark.meta

# What each switch promises of every AttentionProblem drawn or fixed while it is on.
PROMISES: dict[str, Callable[[AttentionProblem], bool]] = {
    "square": lambda problem: problem.D == problem.D_q == problem.D_v,
}
# Strategies that need arguments: built from what a strategy above them drew (sizes, a problem), never drawn alone.
NEEDS_ARGUMENTS = {"head_on": "a head for an X and Dimensions drawn by dimensions(), which honours --square"}


def problems_in(value: Any) -> Iterator[AttentionProblem]:
    """Every AttentionProblem in a drawn value (tuples, lists, a BatchedProblem's slots)."""
    if isinstance(value, AttentionProblem):
        yield value
    elif isinstance(value, BatchedProblem):
        for slot in value.slots:
            yield from slot
    elif isinstance(value, tuple | list):
        for item in value:
            yield from problems_in(item)


def problem_strategies() -> list[str]:
    """The strategies of helpers/strategies.py that draw AttentionProblems (by their return annotations)."""
    names = []
    for name, function in vars(strategies).items():
        if not callable(function) or getattr(function, "__module__", "") != strategies.__name__:
            continue
        returned = str(inspect.signature(function).return_annotation)
        if "SearchStrategy" in returned and "Problem" in returned and "Multihead" not in returned:
            names.append(name)
    return names


def test_every_switch_has_a_promise() -> None:
    assert {field.name for field in dataclasses.fields(Generation)} == set(PROMISES)


@pytest.mark.parametrize("switch", sorted(PROMISES))
@pytest.mark.parametrize("name", problem_strategies())
def test_every_strategy_honours_every_switch(name: str, switch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten draws of the strategy with the switch on: every problem keeps the switch's promise."""
    if name in NEEDS_ARGUMENTS:
        return
    function = getattr(strategies, name)
    required = [p for p in inspect.signature(function).parameters.values()
                if p.default is p.empty and p.name != "draw" and p.kind is not p.VAR_KEYWORD]  # fmt: skip
    assert not required, f"{name} needs {required}: list it in NEEDS_ARGUMENTS with the reason it cannot escape"
    monkeypatch.setattr(GENERATION, switch, True)
    broken: list[AttentionProblem] = []

    @settings(max_examples=10, derandomize=True, database=None, suppress_health_check=list(HealthCheck), deadline=None)
    @given(st.data())
    def draw(data: st.DataObject) -> None:
        broken.extend(p for p in problems_in(data.draw(function())) if not PROMISES[switch](p))

    draw()
    assert not broken, f"{name} drew {len(broken)} problems that break --{switch}: {broken[0]!r}"[:500]


FIXED_EXAMPLES = """
import importlib, pkgutil
import properties
from properties.helpers.options import GENERATION
GENERATION.{switch} = True
from properties.helpers.problems import AttentionProblem
from tests.helpers.test_generation_switches import PROMISES, problems_in
broken, seen = [], 0
for module in pkgutil.iter_modules(properties.__path__):
    if not module.name.startswith("test_"):
        continue
    laws = importlib.import_module("properties." + module.name)
    for name, law in vars(laws).items():
        for explicit in getattr(law, "hypothesis_explicit_examples", []):
            for problem in problems_in(list(explicit.kwargs.values())):
                seen += 1
                if not PROMISES["{switch}"](problem):
                    broken.append(f"{{name}}: D={{problem.D}}, D_q={{problem.D_q}}, D_v={{problem.D_v}}")
print(seen)
assert not broken, broken
"""


@pytest.mark.slow
@pytest.mark.parametrize("switch", sorted(PROMISES))
def test_every_fixed_example_honours_every_switch(switch: str) -> None:
    """With the switch on before the law modules are imported (as the plugin sets it at configure time), every
    explicit example of every law keeps the switch's promise."""
    script = FIXED_EXAMPLES.format(switch=switch)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert int(completed.stdout.split()[-1]) > 10, "too few fixed examples found: is the search still right?"
