"""Every touch of hypothesis's internals, in one module (tests/helpers/test_hypothesis_internals.py checks each
against the installed hypothesis).

A law decorated with `@given` carries what the battery needs to rerun it differently (without shrinking for a
meta-test, on shared examples for the false-alarm test and for grading, counting examples for a benchmark): its
strategies (`law.hypothesis._given_kwargs`, private), a build context to replay its body in (`BuildContext`,
private), its undecorated body (`law.hypothesis.inner_test`, the hook hypothesis documents for plugins that wrap
the body), its settings (`law._hypothesis_internal_use_settings`, private) and its explicit examples
(`law.hypothesis_explicit_examples`, private); hypothesis also seeds the global random generators around each
example (`deterministic_PRNG`, private), draws constants of local modules now and then (`_get_local_constants`,
private), seeds a derandomised run from the body's digest (`function_digest`, private) and keys its example
database with the same digest (`ConjectureRunner.database_key`, `.secondary`, private). Nothing else in
properties/, regression/ or tests/ reads them (the checker's verdict recorder wraps `inner_test` itself, the
documented hook).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from hypothesis import example, given, seed, settings
from hypothesis.control import BuildContext
from hypothesis.errors import UnsatisfiedAssumption
from hypothesis.internal.conjecture.data import ConjectureData
from hypothesis.internal.entropy import deterministic_PRNG
from hypothesis.strategies import SearchStrategy


def is_hypothesis_test(law: Callable[..., Any]) -> bool:
    """Whether `law` is decorated with hypothesis's @given."""
    return getattr(law, "hypothesis", None) is not None


def strategies_of(law: Callable[..., Any]) -> dict[str, SearchStrategy[Any]]:
    """The keyword strategies of @given (empty for a test on fixed inputs)."""
    if not is_hypothesis_test(law):
        return {}
    return dict(law.hypothesis._given_kwargs)  # type: ignore[attr-defined]


def body_of(law: Callable[..., Any]) -> Callable[..., Any]:
    """The undecorated body of a hypothesis test (its handle's inner_test); `law` itself for a test on fixed inputs."""
    if not is_hypothesis_test(law):
        return law
    inner: Callable[..., Any] = law.hypothesis.inner_test  # type: ignore[attr-defined]
    return inner


def settings_of(law: Callable[..., Any]) -> settings:
    """The settings the law was decorated with, else the current profile's."""
    chosen = getattr(law, "_hypothesis_internal_use_settings", None)
    return chosen if isinstance(chosen, settings) else settings()


def explicit_examples_of(law: Callable[..., Any]) -> list[dict[str, Any]]:
    """The keyword arguments of the law's explicit `@example`s, in order (the battery gives examples by keyword)."""
    cases = getattr(law, "hypothesis_explicit_examples", [])
    positional = [case for case in cases if case.args]
    if positional:
        raise ValueError(f"{law.__name__}: an @example with positional arguments {positional[0].args!r}")
    return [dict(case.kwargs) for case in cases]


def fresh_body(law: Callable[..., Any]) -> Callable[..., Any]:
    """The law's undecorated body wrapped afresh with its signature and name: hypothesis marks a function it has
    decorated once (settings, explicit @example cases), so a new @given must start from a clean function."""
    inner = body_of(law)

    def body(*args: Any, **kwargs: Any) -> Any:
        return inner(*args, **kwargs)

    body.__signature__ = inspect.signature(inner)  # type: ignore[attr-defined]
    body.__name__ = body.__qualname__ = law.__name__
    return body


def rerun(
    law: Callable[..., Any],
    chosen: settings,
    examples: list[dict[str, Any]] | tuple[dict[str, Any], ...] = (),
) -> Callable[..., Any]:
    """The law as a new hypothesis test: its strategies and body, under `chosen` settings, with `examples` (keyword
    arguments of its strategies) run before any drawn one (hypothesis runs them last given first)."""
    test = chosen(fresh_body(law))
    for keywords in examples:
        test = example(**keywords)(test)
    return given(**strategies_of(law))(test)


def replay(
    law: Callable[..., Any], examples: list[dict[str, Any]] | tuple[dict[str, Any], ...], **arguments: Any
) -> int:
    """Call the law's body on each example (keyword arguments of its strategies) with `arguments` (its fixtures
    and parameters), in order, each inside a build context of its own (hypothesis.control.BuildContext, private, so
    that note() and reject() work), as hypothesis runs an explicit example but without its engine (about 2 ms a
    run, most of the cost of replaying two examples on a cheap law): the first failure propagates; an example the
    body rejects counts as passed, as hypothesis counts a rejected explicit example. Returns the number of examples
    the body ran to its end (the rejected ones not counted)."""
    body = body_of(law)
    completed = 0
    for keywords in examples:
        try:
            with BuildContext(ConjectureData.for_choices([]), wrapped_test=law):
                body(**arguments, **keywords)
        except UnsatisfiedAssumption:
            continue
        completed += 1
    return completed


def deterministic_prng() -> AbstractContextManager[None]:
    """The seeding hypothesis gives each example it runs (hypothesis.internal.entropy.deterministic_PRNG, private):
    the global generators of `random` and `numpy.random` seeded alike, and restored after."""
    return deterministic_PRNG()


def derandomized_seed(law: Callable[..., Any]) -> int:
    """The seed of the random generator hypothesis gives the law's run under `derandomize`
    (`Random(int_from_bytes(function_digest(test)))`, hypothesis.core.get_random_for_wrapped_test, private): a run
    seeded with it draws the law's own examples."""
    from hypothesis.internal.compat import int_from_bytes
    from hypothesis.internal.reflection import function_digest

    return int(int_from_bytes(function_digest(body_of(law))))


def has_saved_examples(law: Callable[..., Any]) -> bool:
    """Whether the law's example database holds examples its next run replays first: the failures of an earlier run
    (hypothesis keys them by `function_digest` of the body, which hypothesis's pytest plugin makes distinct for each
    parametrisation, plus `.secondary`; core.StateForActualGivenExecution.run_engine, engine.ConjectureRunner,
    private). False without a database."""
    from hypothesis.internal.reflection import function_digest

    database = settings_of(law).database
    if database is None:
        return False
    key = getattr(law, "_hypothesis_internal_database_key", None) or function_digest(body_of(law))
    return any(True for _ in database.fetch(key)) or any(True for _ in database.fetch(key + b".secondary"))


def local_constants_digest() -> str:
    """A digest of the constants hypothesis has collected from the local modules loaded so far
    (hypothesis.internal.conjecture.providers._get_local_constants, private), which it draws now and then: the
    same seed draws the same examples only under the same constants (a TARGET file's own numbers among them)."""
    from hypothesis.internal.conjecture.providers import _get_local_constants

    constants = _get_local_constants()
    kinds = (int, float, bytes, str)
    text = repr([sorted(repr(value) for value in constants.set_for_type(kind)) for kind in kinds])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def draws(law: Callable[..., Any], chosen: settings, *, seed_of: Hashable = None) -> list[dict[str, Any]]:
    """The keyword arguments the law's strategies generate under `chosen` settings (its body does not run), from
    the random seed `seed_of` when one is given."""
    drawn: list[dict[str, Any]] = []

    def collect(**kwargs: Any) -> None:
        drawn.append(kwargs)

    test = given(**strategies_of(law))(chosen(collect))
    if seed_of is not None:
        test = seed(seed_of)(test)
    test()
    return drawn


@contextmanager
def wrapped_body(law: Callable[..., Any], wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Iterator[None]:
    """Within this block the law's body is `wrap(body)` (hypothesis's inner_test hook), restored after."""
    handle = law.hypothesis  # type: ignore[attr-defined]
    inner = handle.inner_test
    handle.inner_test = wrap(inner)
    try:
        yield
    finally:
        handle.inner_test = inner
