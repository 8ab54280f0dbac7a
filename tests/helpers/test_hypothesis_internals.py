"""The one module that touches hypothesis's internals (properties/helpers/hypothesis_internals.py), against the
installed hypothesis: if an upgrade moves what it reads, these fail first, by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from properties.helpers import hypothesis_internals as hi

CALLS: list[tuple[str, int]] = []


@settings(max_examples=7, deadline=None)
@example(n=-3)
@given(n=st.integers(0, 5))
def law_like(fixture: str, n: int) -> None:
    """A hypothesis test shaped as the battery's laws: a fixture, one strategy by keyword, an explicit example."""
    CALLS.append((fixture, n))


def on_fixed_inputs(fixture: str) -> None:
    CALLS.append((fixture, 0))


QUICK = settings(database=None, derandomize=True, max_examples=4, suppress_health_check=list(HealthCheck))


def test_a_given_test_is_recognised_and_a_plain_one_is_not() -> None:
    assert hi.is_hypothesis_test(law_like)
    assert not hi.is_hypothesis_test(on_fixed_inputs)


def test_strategies_are_the_keywords_of_given() -> None:
    assert set(hi.strategies_of(law_like)) == {"n"}
    assert hi.strategies_of(on_fixed_inputs) == {}


def test_the_body_is_the_undecorated_function() -> None:
    CALLS.clear()
    hi.body_of(law_like)("f", n=42)  # outside hypothesis's range: the strategies do not run
    assert CALLS == [("f", 42)]
    assert hi.body_of(on_fixed_inputs) is on_fixed_inputs


def test_settings_and_explicit_examples_are_those_decorated() -> None:
    assert hi.settings_of(law_like).max_examples == 7
    assert hi.settings_of(on_fixed_inputs).max_examples == settings().max_examples
    assert hi.explicit_examples_of(law_like) == [{"n": -3}]
    assert hi.explicit_examples_of(on_fixed_inputs) == []


def test_a_rerun_uses_the_strategies_the_settings_and_the_given_examples_first() -> None:
    CALLS.clear()
    hi.rerun(law_like, settings(QUICK, phases=[Phase.explicit]), [{"n": 100}, {"n": 101}])(fixture="g")
    assert sorted(CALLS) == [("g", 100), ("g", 101)]
    CALLS.clear()
    hi.rerun(law_like, settings(QUICK, phases=[Phase.generate]))(fixture="h")
    assert CALLS and all(fixture == "h" and 0 <= n <= 5 for fixture, n in CALLS)
    assert hi.fresh_body(law_like).__name__ == "law_like"


def test_draws_are_the_strategies_values_without_running_the_body() -> None:
    CALLS.clear()
    drawn = hi.draws(law_like, settings(QUICK, phases=[Phase.generate]))
    assert drawn and all(set(d) == {"n"} and 0 <= d["n"] <= 5 for d in drawn)
    assert CALLS == []
    assert drawn == hi.draws(law_like, settings(QUICK, phases=[Phase.generate]))  # derandomised


def test_a_wrapped_body_sees_every_call_and_is_restored() -> None:
    seen: list[int] = []

    def wrap(inner: Callable[..., Any]) -> Callable[..., Any]:
        def body(*args: Any, **kwargs: Any) -> Any:
            seen.append(kwargs["n"])
            return inner(*args, **kwargs)

        return body

    with hi.wrapped_body(law_like, wrap):
        law_like(fixture="w")
    assert -3 in seen and len(seen) >= 2
    count = len(seen)
    law_like(fixture="w")
    assert len(seen) == count


def test_an_example_with_positional_arguments_is_refused() -> None:
    @example(1)
    @given(st.integers())
    def positional(n: int) -> None:
        pass

    with pytest.raises(ValueError, match="positional"):
        hi.explicit_examples_of(positional)


@given(n=st.integers())
def noting_law(fixture: str, n: int) -> None:
    """A law that notes, rejects some examples and fails on one, as the battery's laws may."""
    from hypothesis import note, reject

    note(f"n = {n}")
    if n < 0:
        reject()
    CALLS.append((fixture, n))
    assert n != 7, "n = 7 breaks the law"


def test_a_replay_calls_the_body_on_each_example_in_order_and_raises_its_failure() -> None:
    """note() and reject() work in a replay; a rejected example does not stop it (as hypothesis passes a rejected
    explicit example) and is not counted among those run to their end; the first failure propagates and stops the
    replay."""
    CALLS.clear()
    assert hi.replay(noting_law, [{"n": 1}, {"n": -1}, {"n": 2}], fixture="f") == 2
    assert CALLS == [("f", 1), ("f", 2)]
    CALLS.clear()
    with pytest.raises(AssertionError, match="n = 7 breaks the law"):
        hi.replay(noting_law, [{"n": 7}, {"n": 3}], fixture="g")
    assert CALLS == [("g", 7)]


def test_draws_from_a_seed_are_the_same_every_time_and_differ_between_seeds() -> None:
    chosen = settings(QUICK, derandomize=False, phases=[Phase.generate])
    first = hi.draws(law_like, chosen, seed_of="a")
    assert first == hi.draws(law_like, chosen, seed_of="a")
    assert first != hi.draws(law_like, settings(chosen, max_examples=50), seed_of="b")[: len(first)]


def test_deterministic_prng_seeds_the_global_generators_alike_and_restores_them() -> None:
    """What hypothesis does around each example it runs: numpy's and random's global generators (which student code
    uses: hence the legacy calls) give the same numbers in every such block, and continue afterwards as if it had not
    been."""
    import random

    from numpy import random as legacy

    legacy.seed(123)  # noqa: NPY002
    expected_after = legacy.random_sample()  # noqa: NPY002
    legacy.seed(123)  # noqa: NPY002
    with hi.deterministic_prng():
        first = (legacy.random_sample(), random.random())  # noqa: NPY002
    with hi.deterministic_prng():
        second = (legacy.random_sample(), random.random())  # noqa: NPY002
    assert first == second
    assert legacy.random_sample() == expected_after  # noqa: NPY002


def test_the_local_constants_digest_changes_with_a_local_modules_constants(tmp_path: Path) -> None:
    """hypothesis draws constants of local modules now and then: a module with a number of its own, once loaded,
    changes what may be drawn, and the digest."""
    import importlib.util
    import sys

    before = hi.local_constants_digest()
    assert before == hi.local_constants_digest()
    (tmp_path / "numbers_of_a_target.py").write_text("SPECIAL = 0.318309886183790671\n")
    spec = importlib.util.spec_from_file_location("numbers_of_a_target", tmp_path / "numbers_of_a_target.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["numbers_of_a_target"] = module
    try:
        spec.loader.exec_module(module)
        assert hi.local_constants_digest() != before
    finally:
        del sys.modules["numbers_of_a_target"]


SEEN: list[int] = []


@settings(max_examples=8, derandomize=True, database=None)
@given(n=st.integers(0, 1000))
def derandomized_law(n: int) -> None:
    SEEN.append(n)


def test_a_run_seeded_with_the_derandomized_seed_draws_the_laws_own_examples() -> None:
    SEEN.clear()
    derandomized_law()
    chosen = settings(hi.settings_of(derandomized_law), derandomize=False)
    drawn = hi.draws(derandomized_law, chosen, seed_of=hi.derandomized_seed(derandomized_law))
    assert [example["n"] for example in drawn] == SEEN
