"""Laws of sliding windows, window_size=(left, right) (FlashAttention; jax's local_window_size): query n sees key m
iff -right <= rel <= left, rel = n + S - L - m under the bottom-right alignment (n - m top-left), -1 leaving a side
unbounded. The strategy draws sides 0 to 3 and up to max(L, S) + 1, so the band's edges and one past them are
reached on small and block-boundary lengths.

They run on the `flash` fixture (properties/test_cross_attention.py says which target); expected values are the
definition in float64 with the band computed here (flash_convention.visibility).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from properties.catalogues import correct
from properties.catalogues.mistakes import kernels as m
from properties.helpers.checks import assert_close
from properties.helpers.flash_convention import (
    FlashImplementation,
    FlashProblem,
    closest,
    exact_attention,
    judged,
    window_readings,
)
from properties.helpers.flash_strategies import (
    Windowed,
    problems_with_keys_outside_a_window,
    problems_with_windows,
    rectangular_problems,
)
from properties.helpers.meta import assert_law_fails

pytestmark = [pytest.mark.semantics, pytest.mark.filterwarnings("ignore:Generating overly large repr")]


@given(case=problems_with_windows())
def test_a_window_equals_the_explicit_band(flash: FlashImplementation, case: Windowed) -> None:
    """f(q, k, v, window_size=(left, right)) is attention over the keys with -right <= rel(n, m) <= left (the band
    mask, computed here for the declared alignment); a query whose band holds no key is a convention, not judged
    here (test_a_query_that_sees_no_key_gets_a_zero_output). A side of -1 is
    unbounded; FlashAttention 2's reading, a right side of -1 (or >= S) as S when left >= 0 (finite: it hides keys
    only when L > S + 1), is accepted query by query (a convention, FLASH-CONVENTIONS.md (d))."""
    flash.require("window_size")
    problem, window = case
    result = flash.call(problem, window_size=window)
    scale = flash.default_scale(problem)
    bound = flash.bounds(problem, scale, result.eps).out
    readings = window_readings(problem.L, problem.S, window, alignment=flash.alignment)
    candidates = [exact_attention(problem, scale, visible=seen)[0] for seen in readings]
    expected = closest(result.out, candidates, bound)
    assert_close(judged(result.out, expected, *readings), expected, bound,
                 what=f"out with window_size={window} (L={problem.L}, S={problem.S}, {flash.alignment})")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize(
    "bug", [m.flash_window_left_off_by_one, m.flash_window_right_off_by_one, m.flash_window_unbounded_as_zero]
)
def test_a_window_equals_the_explicit_band_catches(bug: Any) -> None:
    assert_law_fails(test_a_window_equals_the_explicit_band, flash=m.broken_flash(bug))


@given(case=st.data())
def test_outputs_do_not_depend_on_keys_outside_the_window(flash: FlashImplementation, case: st.DataObject) -> None:
    """Replacing the keys and values outside query n's window (by larger random ones) leaves out[:, n] unchanged."""
    flash.require("window_size")
    problem, window, n, changed = case.draw(problems_with_keys_outside_a_window(flash.alignment))
    before, after = flash.call(problem, window_size=window), flash.call(changed, window_size=window)
    scale = flash.default_scale(problem)
    bound = flash.bounds(problem, scale, before.eps) + flash.bounds(changed, scale, after.eps)
    assert_close(after.out[:, n], before.out[:, n], bound.out[:, n],
                 what=f"out[:, {n}] after changing the keys outside window_size={window}")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("bug", [m.flash_window_left_off_by_one, m.flash_window_right_off_by_one])
def test_outputs_do_not_depend_on_keys_outside_the_window_catches(bug: Any) -> None:
    assert_law_fails(test_outputs_do_not_depend_on_keys_outside_the_window, flash=m.broken_flash(bug))


@pytest.mark.meta
def test_the_window_laws_leave_a_query_that_sees_no_key_to_the_conventions() -> None:
    """No false alarm on jax's choice: a query whose window holds no key gets the mean of all values."""
    flash = correct.as_flash(correct.flash_mean_for_queries_without_keys)
    test_a_window_equals_the_explicit_band(flash=flash)
    test_outputs_do_not_depend_on_keys_outside_the_window(flash=flash)


@given(problem=rectangular_problems())
def test_the_window_unbounded_on_the_left_and_zero_on_the_right_equals_causal(
    flash: FlashImplementation, problem: FlashProblem
) -> None:
    """f(window_size=(-1, 0)) = f(causal=True): the causal mask is the window that sees the whole past and no
    future, in one alignment for both."""
    flash.require("window_size", "causal")
    windowed, causal = flash.call(problem, window_size=(-1, 0)), flash.call(problem, causal=True)
    bound = flash.bounds(problem, flash.default_scale(problem), max(windowed.eps, causal.eps)) * 2
    assert_close(windowed.out, causal.out, bound.out, what="out with window_size=(-1, 0) against causal=True")


@pytest.mark.meta
def test_the_causal_window_catches_a_window_aligned_top_left() -> None:
    law = test_the_window_unbounded_on_the_left_and_zero_on_the_right_equals_causal
    assert_law_fails(law, flash=m.broken_flash(m.flash_window_top_left))


@given(problem=rectangular_problems())
def test_the_window_unbounded_on_both_sides_changes_nothing(flash: FlashImplementation, problem: FlashProblem) -> None:
    """f(window_size=(-1, -1)) = f(): a window unbounded on both sides is no mask."""
    flash.require("window_size")
    windowed, plain = flash.call(problem, window_size=(-1, -1)), flash.call(problem)
    bound = flash.bounds(problem, flash.default_scale(problem), max(windowed.eps, plain.eps)) * 2
    assert_close(windowed.out, plain.out, bound.out, what="out with window_size=(-1, -1) against no window")


@pytest.mark.meta
def test_the_unbounded_window_catches_minus_one_read_as_zero() -> None:
    law = test_the_window_unbounded_on_both_sides_changes_nothing
    assert_law_fails(law, flash=m.broken_flash(m.flash_window_unbounded_as_zero))
