"""Meta-testing: a law must fail on a deliberately broken implementation, and fail as a law fails."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from hypothesis import Phase, example, given, settings

from properties.helpers.checks import leaves

# A meta-test needs one failing example, not a minimal one: no shrinking, no database, and enough
# examples that a bug showing on a fair share of problems is found in every run.
META_EXAMPLES = 300

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


def law_body(law: Callable[..., Any]) -> Callable[..., Any]:
    """The hypothesis test `law`'s undecorated body (its handle's inner_test), wrapped afresh with the law's
    signature and name: hypothesis marks a function it has decorated once (settings, explicit @example cases),
    so a new @given must start from a clean function."""
    inner = law.hypothesis.inner_test  # type: ignore[attr-defined]

    def body(*args: Any, **kwargs: Any) -> Any:
        return inner(*args, **kwargs)

    body.__signature__ = inspect.signature(inner)  # type: ignore[attr-defined]
    body.__name__ = body.__qualname__ = law.__name__
    return body


def _without_shrinking(law: Callable[..., Any]) -> Callable[..., Any]:
    """The same law with the same strategies and its own explicit examples (first), run until its first failure."""
    parent = getattr(law, "_hypothesis_internal_use_settings", None) or settings()
    quick = settings(
        parent,
        phases=[Phase.explicit, Phase.generate],
        database=None,
        max_examples=max(META_EXAMPLES, parent.max_examples),
        report_multiple_bugs=False,
    )
    test = quick(law_body(law))
    for case in getattr(law, "hypothesis_explicit_examples", []):
        test = example(*case.args, **case.kwargs)(test)
    return given(**law.hypothesis._given_kwargs)(test)  # type: ignore[attr-defined]


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
        if getattr(law, "hypothesis", None) is None:  # a law on fixed inputs (the goldens): one call
            law(**arguments)
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
