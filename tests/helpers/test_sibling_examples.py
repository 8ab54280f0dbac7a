"""A law's later parametrisations replay the examples its first one met (properties/helpers/sibling_examples.py):
a sibling PASSes on them alone; anything else is decided by its own hypothesis run; a failure that run misses
still fails it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.database import InMemoryExampleDatabase
from hypothesis.errors import UnsatisfiedAssumption

from properties.helpers import hypothesis_internals as hi
from properties.helpers.sibling_examples import Kept, SiblingExamples

CALLS: list[tuple[str, int]] = []  # (the parametrisation, the drawn n) of every call of a law's body
DRAWN: list[int] = []  # every n a strategy below drew
QUICK = settings(max_examples=8, database=None, deadline=None)


def counted(n: int) -> int:
    DRAWN.append(n)
    return n


@QUICK
@example(n=-1)
@given(n=st.integers(0, 100).map(counted))
def law_that_holds(fixture: str, n: int) -> None:
    CALLS.append((fixture, n))
    assert n <= 100


@QUICK
@given(n=st.integers(0, 100).map(counted))
def law_that_fails_for_b_from_5(fixture: str, n: int) -> None:
    CALLS.append((fixture, n))
    assert fixture != "b" or n < 5, "n >= 5 breaks the law for b"


@QUICK
@given(n=st.integers(0, 100).map(counted))
def law_that_fails_at_1000(fixture: str, n: int) -> None:
    CALLS.append((fixture, n))
    assert n != 1000, "n = 1000 breaks the law"


@QUICK
@given(n=st.integers(0, 100).map(counted))
def law_that_b_rejects(fixture: str, n: int) -> None:
    CALLS.append((fixture, n))
    assume(fixture != "b" or n % 2 == 0)


@QUICK
@given(n=st.integers(0, 100).map(counted))
def law_that_fails_for_a(fixture: str, n: int) -> None:
    CALLS.append((fixture, n))
    assert fixture != "a", "a breaks the law"


@QUICK
@given(n=st.integers(0, 100).map(counted))
def law_that_skips_b(fixture: str, n: int) -> None:
    CALLS.append((fixture, n))
    if fixture == "b":
        pytest.skip("b takes no mask")


def call(plugin: SiblingExamples, law: Any, fixture: str) -> bool | None:
    """The plugin's hook on a stand-in for pytest's item of `law` with `fixture`."""
    item = SimpleNamespace(obj=law, funcargs={"fixture": fixture})
    return plugin.pytest_pyfunc_call(item)  # type: ignore[arg-type]


def calls_of(fixture: str) -> list[int]:
    return [n for f, n in CALLS if f == fixture]


@pytest.fixture(autouse=True)
def _clear() -> None:
    CALLS.clear()
    DRAWN.clear()


def test_a_sibling_meets_the_leaders_examples_without_drawing() -> None:
    """The leader runs as hypothesis runs it (its explicit example first); the sibling meets exactly its examples,
    in order, and nothing is drawn for it."""
    plugin = SiblingExamples()
    assert call(plugin, law_that_holds, "a") is True
    leader, drawn = calls_of("a"), len(DRAWN)
    assert leader[0] == -1 and len(leader) >= 1 + 8
    assert call(plugin, law_that_holds, "b") is True
    assert calls_of("b") == leader
    assert len(DRAWN) == drawn


def test_a_sibling_that_fails_on_a_kept_example_fails_as_its_own_run_shrinks_it() -> None:
    plugin = SiblingExamples()
    call(plugin, law_that_fails_for_b_from_5, "a")
    with pytest.raises(AssertionError, match="n >= 5") as failure:
        call(plugin, law_that_fails_for_b_from_5, "b")
    assert "n=5" in "".join(getattr(failure.value, "__notes__", []))  # hypothesis's shrunk counterexample


def test_a_failure_on_a_kept_example_that_the_siblings_own_run_misses_still_fails_it() -> None:
    """A kept n = 1000 (a leader's example its own strategies, 0 to 100, never draw): the sibling's own run holds,
    so it is rerun with that example as an explicit one, and fails on it."""
    plugin = SiblingExamples()
    plugin.kept[law_that_fails_at_1000] = Kept(("n",), [{"n": 7}, {"n": 1000}], completed=2)
    with pytest.raises(AssertionError, match="n = 1000 breaks") as failure:
        call(plugin, law_that_fails_at_1000, "b")
    assert 1000 not in [n for n in DRAWN], "its own run drew no 1000"
    assert "n=1000" in "".join(getattr(failure.value, "__notes__", []))


def test_a_sibling_that_rejects_an_example_the_leader_ran_runs_its_own_examples() -> None:
    """hypothesis counts only examples run to their end: one fewer than the leader's is not a PASS on the kept
    examples, so the sibling's own run (which draws) decides."""
    plugin = SiblingExamples()
    call(plugin, law_that_b_rejects, "a")
    assert any(n % 2 for n in calls_of("a")), "the test needs an odd n among the leader's examples"
    drawn = len(DRAWN)
    assert call(plugin, law_that_b_rejects, "b") is True
    assert len(DRAWN) > drawn


def test_after_a_leader_that_fails_each_sibling_runs_its_own_examples() -> None:
    plugin = SiblingExamples()
    with pytest.raises(AssertionError, match="a breaks"):
        call(plugin, law_that_fails_for_a, "a")
    drawn = len(DRAWN)
    assert call(plugin, law_that_fails_for_a, "b") is True
    assert len(DRAWN) > drawn


def test_a_skip_is_the_siblings_verdict() -> None:
    plugin = SiblingExamples()
    call(plugin, law_that_skips_b, "a")
    with pytest.raises(pytest.skip.Exception, match="no mask"):
        call(plugin, law_that_skips_b, "b")


def test_a_sibling_with_saved_examples_runs_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """hypothesis replays the failures its database saved before anything else: a sibling with some does too."""
    plugin = SiblingExamples()
    call(plugin, law_that_holds, "a")
    monkeypatch.setattr("properties.helpers.sibling_examples.has_saved_examples", lambda law: True)
    drawn = len(DRAWN)
    call(plugin, law_that_holds, "b")
    assert len(DRAWN) > drawn


def test_the_kept_examples_are_copies_taken_before_the_body_runs() -> None:
    kept = Kept(("n",))

    def body(fixture: str, n: list[int]) -> None:
        n.append(1)

    kept.wrap(body)("a", n=[0])
    kept.wrap(body)(fixture="a", n=[2])
    assert kept.examples == [{"n": [0]}, {"n": [2]}] and kept.completed == 2

    def rejecting(fixture: str, n: int) -> None:
        raise UnsatisfiedAssumption

    with pytest.raises(UnsatisfiedAssumption):
        kept.wrap(rejecting)("a", 3)
    assert kept.examples[-1] == {"n": 3} and kept.completed == 2


def test_a_kept_body_reads_as_the_body_to_hypothesis() -> None:
    """The wrapper has the body's digest, from which hypothesis keys the law's example database and seeds its
    derandomised run: the leader's failures are saved where its next run looks for them."""

    @QUICK
    @given(n=st.integers(0, 10))
    def law(n: int) -> None:
        pass

    seed = hi.derandomized_seed(law)
    with hi.wrapped_body(law, Kept(("n",)).wrap):
        assert hi.derandomized_seed(law) == seed


def test_a_law_that_failed_has_saved_examples(pytestconfig: pytest.Config) -> None:
    if pytestconfig.getoption("hypothesis_seed", None) is not None:
        pytest.skip("under --hypothesis-seed hypothesis saves no example")
    database = InMemoryExampleDatabase()

    @settings(QUICK, database=database)
    @given(n=st.integers(0, 10))
    def law(n: int) -> None:
        assert n < 3

    assert not hi.has_saved_examples(law)
    with hi.wrapped_body(law, Kept(("n",)).wrap), pytest.raises(AssertionError):
        law()
    assert hi.has_saved_examples(law)


def test_the_default_run_shares_and_a_plugin_option_turns_it_off(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.get_plugin("attention-sibling-examples") is not None
