"""Meta-testing: a law must fail on a deliberately broken implementation, and fail as a law fails."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from hypothesis import HealthCheck, Phase, settings

from properties.helpers.checks import leaves
from properties.helpers.hypothesis_internals import (
    draws,
    explicit_examples_of,
    is_hypothesis_test,
    replay,
    rerun,
    settings_of,
    strategies_of,
)

# A meta-test needs one failing example, not a minimal one: no shrinking, no database, and enough
# examples that a bug showing on a fair share of problems is found in every run.
META_EXAMPLES = 300
# The meta-tests of one law share its drawn examples, drawn in batches on first need (most mistakes show within
# the first few examples, a few need dozens) and replayed on each broken implementation until its first failure:
# a law with seven meta-tests is drawn for once, not seven times (drawing is most of a meta-test's cost).
BATCHES = (10, 40, META_EXAMPLES - 50)

# Set by `recording()`: assert_law_fails then notes which law a meta-test aims at which broken implementation,
# without running it (properties/catalogues/registry.py lists the mistakes each law catches from these notes).
Aim = tuple[Callable[..., Any], dict[str, Any]]
_AIMS: ContextVar[list[Aim] | None] = ContextVar("meta_aims", default=None)


@contextmanager
def recording() -> Iterator[list[Aim]]:
    """Within this block assert_law_fails records (law, arguments) instead of running the law."""
    aims: list[Aim] = []
    token = _AIMS.set(aims)
    try:
        yield aims
    finally:
        _AIMS.reset(token)


def _without_shrinking(law: Callable[..., Any]) -> Callable[..., Any]:
    """The same law with the same strategies and its own explicit examples (first), run until its first failure."""
    parent = settings_of(law)
    quick = settings(
        parent,
        phases=[Phase.explicit, Phase.generate],
        database=None,
        max_examples=max(META_EXAMPLES, parent.max_examples),
        report_multiple_bugs=False,
    )
    return rerun(law, quick, explicit_examples_of(law))


def shares_draws(law: Callable[..., Any]) -> bool:
    """Whether the law's drawn arguments can be drawn ahead and replayed (st.data() objects live in one run)."""
    return not any(repr(strategy) == "data()" for strategy in strategies_of(law).values())


def batch_sizes(law: Callable[..., Any]) -> tuple[int, ...]:
    """BATCHES, and a last batch up to the law's own number of examples when its profile draws more (thorough)."""
    beyond = settings_of(law).max_examples - META_EXAMPLES
    return BATCHES + ((beyond,) if beyond > 0 else ())


@functools.cache
def drawn_batch(law: Callable[..., Any], index: int) -> tuple[dict[str, Any], ...]:
    """The law's `index`-th batch of batch_sizes(law)[index] drawn examples: derandomised by (law, index), so that
    every run and every meta-test of the law meets the same problems."""
    chosen = settings(
        settings_of(law),
        max_examples=batch_sizes(law)[index],
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    return tuple(draws(law, chosen, seed_of=f"{law.__module__}.{law.__name__}/{index}"))


def _on_shared_draws(law: Callable[..., Any], arguments: dict[str, Any]) -> None:
    """Run the law's explicit examples, then its shared batches, until the first failure (which propagates).
    Each example is a deep copy: a broken implementation that writes into its inputs spoils no other meta-test."""
    replay(law, explicit_examples_of(law), **arguments)
    for index in range(len(batch_sizes(law))):
        for drawn in drawn_batch(law, index):
            replay(law, [copy.deepcopy(drawn)], **arguments)


def only_recording() -> bool:
    """Whether meta-tests are being read for their aims (inside `recording()`): a meta-test that checks more than
    assert_law_fails (a fixed example on its own, say) returns early then."""
    return _AIMS.get() is not None


def assert_law_fails(law: Callable[..., Any], **arguments: Any) -> None:
    """Run the law (a hypothesis test, or a test on fixed inputs) with `arguments` (e.g. implementation=broken)
    and demand that it fails.

    The failure must be an AssertionError (a LawViolation, an ImplementationFailed, or a plain assert),
    or a group of them; anything else (a skip, an error in the battery, a health check) fails the meta-test.
    Inside `recording()` it only records the law and the arguments.
    """
    aims = _AIMS.get()
    if aims is not None:
        aims.append((law, arguments))
        return
    try:
        if not is_hypothesis_test(law):  # a law on fixed inputs (the goldens): one call
            law(**arguments)
        elif shares_draws(law):
            _on_shared_draws(law, arguments)
        else:
            _without_shrinking(law)(**arguments)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:
        if all(isinstance(leaf, AssertionError) for leaf in leaves(error)):
            return
        raise AssertionError(f"{law.__name__} did not fail as a law fails: {error!r}") from error
    broken = ", ".join(f"{k}={getattr(v, 'name', v)!s}" for k, v in arguments.items())
    raise AssertionError(f"{law.__name__} holds for the broken {broken}: this law has no teeth there")


def convention_pair_ids(pairs: list[tuple[Callable[..., Any], Callable[..., Any]]]) -> list[str]:
    """Test ids for (law, convention) pairs of a no-false-alarm meta-test: the convention's first word and the
    law's name, e.g. "nan-an_all_true_mask_changes_nothing"."""
    return [f"{convention.__name__.split('_')[0]}-{law.__name__.removeprefix('test_')}" for law, convention in pairs]
