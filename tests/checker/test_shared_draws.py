"""The grading worker's shared draws (properties/checker/shared_draws.py): a law PASSes on its shared examples
alone; anything else is decided by the law's own hypothesis run; a failure that run misses still FAILs."""

from __future__ import annotations

import unittest
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import Phase, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from properties.checker import shared_draws
from properties.checker.shared_draws import SharedDraws
from properties.helpers import hypothesis_internals

CALLS: list[int] = []
ITEMS: list[SimpleNamespace] = []
QUICK = settings(max_examples=5, database=None, derandomize=True, deadline=None)


@QUICK
@example(n=-1)
@given(n=st.integers(0, 10))
def law_that_holds(fixture: str, n: int) -> None:
    CALLS.append(n)
    assert n <= 10


@QUICK
@given(n=st.integers(0, 10))
def law_that_fails_only_at_1000(fixture: str, n: int) -> None:
    CALLS.append(n)
    assert n != 1000, "n = 1000 breaks the law"


@QUICK
@given(n=st.integers(0, 100))
def law_that_fails_from_5(fixture: str, n: int) -> None:
    CALLS.append(n)
    assert n < 5, "n >= 5 breaks the law"


@QUICK
@given(n=st.just(3))
def law_that_rejects(fixture: str, n: int) -> None:
    CALLS.append(n)
    assume(n != 3)


@QUICK
@given(n=st.integers(0, 10))
def law_that_skips(fixture: str, n: int) -> None:
    CALLS.append(n)
    pytest.skip("the function takes no mask")


def call(shared: SharedDraws, law: Any) -> bool | None:
    """The plugin's hook on a stand-in for pytest's item of `law` with the fixture "f"."""
    CALLS.clear()
    item = SimpleNamespace(obj=law, funcargs={"fixture": "f"}, stash=pytest.Stash())
    ITEMS.append(item)
    return shared.pytest_pyfunc_call(item)  # type: ignore[arg-type]


def test_a_law_that_holds_on_its_shared_examples_passes_on_them_and_later_workers_read_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its explicit example, then max_examples drawn ones (in BATCHES), each run once, and no hypothesis run; a
    second worker of the run replays the same examples from the run's directory without drawing."""
    assert call(SharedDraws(tmp_path, None), law_that_holds) is True
    first = list(CALLS)
    assert first[0] == -1 and len(first) == 1 + 5
    assert list(tmp_path.glob("*.pickle"))

    def no_drawing(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("drew again")

    monkeypatch.setattr(shared_draws, "draws", no_drawing)
    assert call(SharedDraws(tmp_path, None), law_that_holds) is True
    assert first == CALLS


def test_workers_under_other_local_constants_do_not_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """hypothesis mixes in the constants of local modules (a TARGET file's own numbers): a worker whose constants
    differ draws for itself instead of replaying another's examples."""
    assert call(SharedDraws(tmp_path, None), law_that_holds) is True
    monkeypatch.setattr(shared_draws, "local_constants_digest", lambda: "another file's numbers")
    drawn: list[str] = []
    real = hypothesis_internals.draws

    def counting(*args: Any, **kwargs: Any) -> Any:
        drawn.append(kwargs["seed_of"])
        return real(*args, **kwargs)

    monkeypatch.setattr(shared_draws, "draws", counting)
    assert call(SharedDraws(tmp_path, None), law_that_holds) is True
    assert len(drawn) == len(shared_draws.BATCHES)


def test_the_examples_depend_on_the_law_and_the_seed_only(tmp_path: Path) -> None:
    """Two workers that draw for themselves (no directory, or each its own) meet the same examples; --seed changes
    them."""
    call(SharedDraws(None, 1), law_that_holds)
    one = list(CALLS)
    call(SharedDraws(tmp_path, 1), law_that_holds)
    assert one == CALLS
    call(SharedDraws(None, 2), law_that_holds)
    assert len(CALLS) == len(one) and one != CALLS


def test_the_shared_examples_are_those_the_laws_own_run_draws(tmp_path: Path) -> None:
    """The same seed (derandomised here): a law that holds meets, shared, exactly the examples its own hypothesis
    run meets, explicit ones first, in the same order; so its verdict is the one that run would give."""
    CALLS.clear()
    law_that_holds(fixture="f")
    own = list(CALLS)
    call(SharedDraws(tmp_path, None), law_that_holds)
    assert own == CALLS
    call(SharedDraws(tmp_path, None), law_that_holds)
    assert own == CALLS  # read back from the run's directory


def test_a_failing_shared_example_leaves_the_verdict_to_hypothesis_which_shrinks_it(tmp_path: Path) -> None:
    """The law's own run finds the failure again, shrinks it and replays the minimal example last (the call whose
    exception the verdict recorder reports)."""
    with pytest.raises(AssertionError, match="n >= 5"):
        call(SharedDraws(tmp_path, None), law_that_fails_from_5)
    assert CALLS[-1] == 5
    assert shared_draws.UNSHRUNK not in ITEMS[-1].stash


def test_a_failure_that_the_laws_own_run_misses_still_fails_on_the_shared_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shared examples the law's own draws do not reach (n = 1000 here, planted): the law's run passes, then the
    law is rerun with the shared example as an explicit one, and FAILs on it."""
    monkeypatch.setattr(SharedDraws, "batch", lambda self, law, index: [{"n": 1000}] if index else [{"n": 1}])
    with pytest.raises(AssertionError, match="n = 1000"):
        call(SharedDraws(tmp_path, None), law_that_fails_only_at_1000)
    assert CALLS[:2] == [1, 1000] and CALLS[-1] == 1000
    assert all(0 <= n <= 10 for n in CALLS[2:-1])  # the law's own run, which held
    assert ITEMS[-1].stash[shared_draws.UNSHRUNK]  # the report says so


def test_a_rejected_shared_example_is_not_a_pass(tmp_path: Path) -> None:
    """An example the law rejects (or the function sets aside) checked nothing: the law's own run decides, here
    unsatisfiable, as it would be without shared draws."""
    with pytest.raises(Unsatisfiable):
        call(SharedDraws(tmp_path, None), law_that_rejects)
    assert len(CALLS) > 1


def test_a_skip_is_the_laws_verdict_at_its_first_example(tmp_path: Path) -> None:
    with pytest.raises(pytest.skip.Exception, match="no mask"):
        call(SharedDraws(tmp_path, None), law_that_skips)
    assert len(CALLS) == 1


@settings(QUICK, phases=[Phase.explicit])
@example(n=1)
@given(n=st.integers(0, 10))
def law_of_explicit_examples_only(fixture: str, n: int) -> None:
    CALLS.append(n)


@settings(QUICK, phases=[Phase.explicit])
@given(n=st.integers(0, 10))
def law_without_any_example(fixture: str, n: int) -> None:
    CALLS.append(n)


def test_a_law_that_generates_nothing_meets_only_its_explicit_examples_and_none_is_no_pass(tmp_path: Path) -> None:
    """The law's own phases decide: explicit examples only, then nothing is drawn; with no example at all, the
    law's own run decides (never a PASS on nothing replayed)."""
    assert call(SharedDraws(tmp_path, None), law_of_explicit_examples_only) is True
    assert CALLS == [1]  # its explicit example, nothing drawn: what its own run checks
    shared = SharedDraws(tmp_path, None)
    with pytest.raises(unittest.SkipTest):  # hypothesis's verdict on a law told to run no example
        call(shared, law_without_any_example)
    assert CALLS == [] and not shared.drawn


def test_a_test_that_is_not_a_hypothesis_law_is_left_to_pytest(tmp_path: Path) -> None:
    assert call(SharedDraws(tmp_path, None), call) is None


@pytest.mark.slow
def test_a_files_verdicts_do_not_depend_on_the_class_it_is_graded_with(tmp_path: Path) -> None:
    """A notebook graded alone, and after another in the same run (which drew the shared examples it replays):
    the same verdicts, reasons and counterexamples, law by law."""
    from properties.checker.examples import write_notebook
    from properties.checker.grading import Job, Options, grade

    mistaken = write_notebook(tmp_path / "transposed.ipynb", "transposed")
    solved = write_notebook(tmp_path / "solved.ipynb", "solved")
    options = Options(only=("semantics",))

    def job(path: Path) -> Job:
        return Job(str(path), str(path), None)

    (alone,) = grade([job(mistaken)], options, 1, lambda _: None)
    _, together = grade([job(solved), job(mistaken)], options, 1, lambda _: None)

    def verdicts(graded: Any) -> list[tuple[str, str, str, str, Any]]:
        return [(s.function, law.law, law.status, law.reason, law.counterexample)
                for s in graded.subjects for law in s.laws]  # fmt: skip

    assert any(status == "FAIL" for _, _, status, _, _ in verdicts(alone))
    assert verdicts(alone) == verdicts(together)


def test_a_directory_that_cannot_be_written_leaves_the_draws_in_the_worker(tmp_path: Path) -> None:
    """A run's directory gone or read-only costs the sharing, never the verdict."""
    gone = tmp_path / "removed by the parent"
    shared = SharedDraws(gone, None)
    assert call(shared, law_that_holds) is True
    first = list(CALLS)
    assert call(shared, law_that_holds) is True and first == CALLS
    assert len(shared.drawn) == len(shared_draws.BATCHES)  # drawn once, kept in the worker
    assert not gone.exists()


def test_the_draws_are_kept_by_battery_and_options_and_old_ones_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ATTENTION_DRAWS_CACHE/<fingerprint>/<options>: the same battery and options meet the same directory run after
    run, other options another, and every option set the same hypothesis storage of the battery's version; an unused
    cache of another battery is removed after DRAWS_KEPT_DAYS; "off" keeps nothing."""
    import os
    import time

    from properties.checker import grading

    monkeypatch.setenv("ATTENTION_DRAWS_CACHE", str(tmp_path))
    stale, recent = tmp_path / "0123456789abcdef", tmp_path / "fedcba9876543210"
    not_ours = tmp_path / "photos"  # in a directory the user chose, nothing but our own is removed
    for directory in (stale, recent, not_ours):
        directory.mkdir()
    old = time.time() - (grading.DRAWS_KEPT_DAYS + 1) * 86400
    os.utime(stale, (old, old))
    os.utime(not_ours, (old, old))
    with grading.draws_directory(grading.Options()) as first:
        (Path(first) / "kept.pickle").write_bytes(b"")
    with grading.draws_directory(grading.Options()) as again:
        assert again == first and (Path(again) / "kept.pickle").exists()
    with grading.draws_directory(grading.Options(profile="ci")) as other:
        assert other != first
    assert Path(first).parent.parent == tmp_path and Path(first).parent.name == grading.battery_fingerprint()
    storage = grading.hypothesis_storage(first)
    assert storage == grading.hypothesis_storage(other) and storage.parent == Path(first).parent
    assert not stale.exists() and recent.exists() and not_ours.exists()
    monkeypatch.setenv("ATTENTION_DRAWS_CACHE", "off")
    with grading.draws_directory(grading.Options()) as scratch:
        assert not Path(scratch).is_relative_to(tmp_path)
        run = Path(scratch).parent  # the run's own: its storage goes with it
        assert run.name.startswith("attention-draws-") and grading.hypothesis_storage(scratch).parent == run
    assert not Path(scratch).exists() and not run.exists()


def test_the_fingerprint_follows_the_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another strategy or law (any source of the battery or the reference) is another cache."""
    import importlib.util

    from properties.checker import grading

    (tmp_path / "strategies.py").write_text("SIDE = 4\n")
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name: SimpleNamespace(submodule_search_locations=[str(tmp_path)]))  # fmt: skip
    before = grading.battery_fingerprint()
    assert grading.battery_fingerprint() == before
    (tmp_path / "strategies.py").write_text("SIDE = 5\n")
    assert grading.battery_fingerprint() != before
