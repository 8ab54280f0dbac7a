"""The parametrisations of a law meet the examples its first one met: drawn once, checked on each.

pytest runs a law once per parametrisation (the default run: once per reference function, scaled and unscaled, and
each gradient law once per backward pass too), and every parametrisation of a law has the same strategies. Drawing
is most of a law's cost (hypothesis builds each example choice by choice), so the first parametrisation of a law
that runs in a process (its leader) runs as hypothesis runs it, and the examples its body meets are kept (each a
deep copy, taken before the body runs). A later parametrisation (a sibling) replays them, in order, each a deep copy
under hypothesis's per-example seeding of the global random generators, without the engine.

A sibling PASSes if it holds on every kept example, running to its end at least as many of them as its leader did
(hypothesis counts an example only when it runs to its end). Anything else (a failure, an example rejected or set
aside, an error) runs the sibling as hypothesis runs it, whose verdict and shrunk counterexample are the sibling's;
if that run holds although a kept example failed (its own draws went elsewhere), the sibling is rerun with that
example as an explicit one, so that it fails on it. A skip raised by the sibling is its verdict.

Nothing is shared for a law that draws interactively (st.data()), after a leader that did not pass, or for a sibling
with examples in hypothesis's database (an earlier failure, which its own run replays first). Each sibling still
meets as many examples as its own run would, from the same strategies and the same seed (the session's random one,
or --hypothesis-seed, under which its own run would draw exactly these). `-p no:attention-sibling-examples` turns
this off; the grading worker does, since its own SharedDraws shares across functions and processes.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from properties.helpers.checks import OBSERVED, leaves
from properties.helpers.hypothesis_internals import (
    deterministic_prng,
    has_saved_examples,
    is_hypothesis_test,
    replay,
    rerun,
    settings_of,
    strategies_of,
    wrapped_body,
)
from properties.helpers.implementations import SET_ASIDE
from properties.helpers.meta import shares_draws

PLUGIN_NAME = "attention-sibling-examples"
Example = dict[str, Any]


@dataclass
class Kept:
    """The examples a law's body met in one run, in order, and how many of them it ran to their end."""

    drawn: tuple[str, ...]  # the names of the law's drawn arguments
    examples: list[Example] = field(default_factory=list)
    completed: int = 0

    def wrap(self, inner: Callable[..., Any]) -> Callable[..., Any]:
        """`inner` (the law's body), keeping a deep copy of the drawn arguments of each call before it runs. The
        wrapper has the body's name, source and attributes, so hypothesis gives the run the same database key and
        derandomised seed as without it."""
        names = list(inspect.signature(inner).parameters)

        @functools.wraps(inner)
        def body(*args: Any, **kwargs: Any) -> Any:
            given = {**dict(zip(names, args, strict=False)), **kwargs}  # an explicit example comes by position
            self.examples.append(copy.deepcopy({name: value for name, value in given.items() if name in self.drawn}))
            result = inner(*args, **kwargs)
            self.completed += 1  # not reached when the body rejects the example or fails
            return result

        return body


class SiblingExamples:
    """pytest plugin: a law's later parametrisations replay the examples its first one met (module doc)."""

    def __init__(self) -> None:
        self.kept: dict[Callable[..., Any], Kept | None] = {}  # law -> its leader's examples (None: not passed)

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> bool | None:
        if (replayable := law_and_arguments(pyfuncitem)) is None:
            return None  # pytest calls it
        law, arguments = replayable
        if law not in self.kept:
            self.kept[law] = None  # stays None unless the leader passes
            leader = Kept(tuple(strategies_of(law)))
            with wrapped_body(law, leader.wrap):
                law(**arguments)
            self.kept[law] = leader
            return True
        kept = self.kept[law]
        failing: Example | None = None
        if kept is not None and not has_saved_examples(law):
            held, failing, completed = replay_examples(law, kept.examples, arguments)
            if held and completed >= max(kept.completed, 1):  # never a PASS on no example
                return True
        own_run(law, arguments, failing)
        return True


def law_and_arguments(item: pytest.Function) -> tuple[Callable[..., Any], dict[str, Any]] | None:
    """The item's law and the arguments pytest gives it (fixtures, parameters), if its examples can be kept and
    replayed: a hypothesis test that draws no st.data()."""
    law = item.obj
    if not is_hypothesis_test(law) or not shares_draws(law):
        return None
    return law, {name: item.funcargs[name] for name in inspect.signature(law).parameters}


def own_run(
    law: Callable[..., Any],
    arguments: dict[str, Any],
    failing: Example | None,
    before_rerun: Callable[[], None] = lambda: None,
) -> None:
    """Run the law as hypothesis runs it (its verdict, its shrunk counterexample); if that holds although `failing`
    (a replayed example) failed, call `before_rerun` and rerun it with that example as an explicit one."""
    OBSERVED.clear()  # what the law saw is counted from the run that decides its verdict
    SET_ASIDE.clear()
    law(**arguments)
    if failing is not None:  # its own draws missed the failure a replayed example found
        before_rerun()
        rerun(law, settings_of(law), [failing])(**arguments)


def replay_examples(
    law: Callable[..., Any], examples: list[Example], arguments: dict[str, Any]
) -> tuple[bool, Example | None, int]:
    """Replay the examples on the law, each a deep copy under hypothesis's per-example seeding of the global random
    generators, until the first that fails: (True, None, n) if none failed, n of them running to their end (the
    others rejected); (False, the example, n) if one failed as a law fails (an AssertionError, or a group of them);
    (False, None, n) after anything else (another error). A skip propagates."""
    completed = 0
    for example in examples:
        try:
            with deterministic_prng():
                completed += replay(law, [copy.deepcopy(example)], **arguments)
        except (KeyboardInterrupt, SystemExit, pytest.skip.Exception):
            raise
        except BaseException as error:
            assertion = all(isinstance(leaf, AssertionError) for leaf in leaves(error))
            return False, example if assertion else None, completed
    return True, None, completed
