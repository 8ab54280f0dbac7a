"""Hygiene: an implementation leaves its inputs alone, is deterministic, keeps no state between calls, and does
not warn on ordinary inputs."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import assume, given
from numpy.typing import NDArray

from properties.catalogues import mistakes as b
from properties.helpers.checks import (
    LawViolation,
    check_returned_results_survive_later_calls,
    supported,
    value_shift_error,
)
from properties.helpers.implementations import Implementation, Multihead, Softmax
from properties.helpers.meta import assert_law_fails
from properties.helpers.problems import AttentionOptions, AttentionProblem, MultiheadProblem
from properties.helpers.strategies import (
    attention_problems,
    logit_matrices,
    multihead_problems,
    problems_with_options,
    problems_with_value_shifts,
)

pytestmark = pytest.mark.hygiene


@given(problem=attention_problems())
def test_inputs_are_never_modified(implementation: Implementation, problem: AttentionProblem) -> None:
    """After a call, every argument holds exactly the bits it was given."""
    result = implementation(problem)
    if result.modified:
        raise LawViolation(f"the call modified its argument(s) {', '.join(result.modified)} in place")


@pytest.mark.meta
def test_inputs_are_never_modified_catches_in_place_centring() -> None:
    assert_law_fails(test_inputs_are_never_modified, implementation=b.broken(b.mutates_inputs))


@given(problem=attention_problems())
def test_equal_inputs_give_bitwise_equal_outputs(implementation: Implementation, problem: AttentionProblem) -> None:
    """Two calls with equal inputs return the same bits (same dtype, shape and values)."""
    if not implementation(problem).bitwise_equal(implementation(problem)):
        raise LawViolation("two calls with equal inputs returned different bits")


@pytest.mark.meta
def test_equal_inputs_give_bitwise_equal_outputs_catches_random_summation_order() -> None:
    assert_law_fails(test_equal_inputs_give_bitwise_equal_outputs, implementation=b.broken(b.nondeterministic_order))


@given(case=problems_with_value_shifts(at_least=0.5))
def test_a_call_does_not_depend_on_earlier_calls(
    implementation: Implementation, case: tuple[AttentionProblem, NDArray[np.float64]]
) -> None:
    """Called on p, then on p' (p with beta_v + c, same shapes), then on p again: f(p') = f(p) + c 1^T as for a
    fresh call, and the second f(p) is bitwise the first. A result cached by shape, or any state carried from
    one call to the next, breaks one or the other."""
    problem, c = case
    shifted = problem.replace(beta_v=problem.beta_v + c)
    first = implementation(problem)
    after = implementation(shifted)
    again = implementation(problem)
    worst = value_shift_error(implementation, problem, c, first, after)
    if worst.ratio > 1.0:
        raise LawViolation(
            f"a call right after another on a same-shaped problem returned a stale or shifted result: {worst}"
        )
    if not again.bitwise_equal(first):
        raise LawViolation("calling again on the first problem, after another call, returned different bits")


@pytest.mark.meta
def test_a_call_does_not_depend_on_earlier_calls_catches_cache_by_shape() -> None:
    b._CACHE.clear()
    assert_law_fails(test_a_call_does_not_depend_on_earlier_calls, implementation=b.broken(b.cached_by_shape))


@given(case=problems_with_value_shifts(at_least=0.5))
def test_a_returned_result_is_not_changed_by_later_calls(
    implementation: Implementation, case: tuple[AttentionProblem, NDArray[np.float64]]
) -> None:
    """The arrays a call returned (X', attentions) keep their values when the function is called again on another
    problem of the same shapes (beta_v + c, queries doubled): no output buffer is reused across calls."""
    problem, c = case
    later = problem.replace(beta_v=problem.beta_v + c, omega_q=2 * problem.omega_q, beta_q=2 * problem.beta_q)
    check_returned_results_survive_later_calls(lambda: implementation(problem), lambda: implementation(later),
                                               "X' and attentions")  # fmt: skip


@pytest.mark.meta
def test_a_returned_result_is_not_changed_catches_a_reused_buffer() -> None:
    assert_law_fails(test_a_returned_result_is_not_changed_by_later_calls,
                     implementation=b.broken(b.reuses_its_output_buffer))  # fmt: skip


@pytest.mark.meta
def test_a_returned_result_is_not_changed_catches_a_kernel_reusing_its_buffer() -> None:
    assert_law_fails(test_a_returned_result_is_not_changed_by_later_calls,
                     implementation=b.broken_kernel(b.kernel_reuses_its_output_buffer))  # fmt: skip


@given(case=problems_with_options())
def test_ordinary_inputs_raise_no_runtime_warning(
    implementation: Implementation, case: tuple[AttentionProblem, AttentionOptions]
) -> None:
    """On inputs within the semantic range (logits up to 64), under any options that leave every query a key to
    see, a call emits no RuntimeWarning: numpy warns when an operation overflows, divides by zero or makes a NaN,
    and no correct computation of these outputs needs to (underflow, which a correct softmax may meet, is
    silent under numpy's defaults)."""
    problem, options = case
    options = supported(implementation, options)
    assume(options.sees_a_key(problem.N).all())  # a query that sees no key follows a convention of its own
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        implementation(problem, **options.keywords())
    for warning in caught:
        if issubclass(warning.category, RuntimeWarning):
            raise LawViolation(
                f"the call warned {warning.category.__name__}: {warning.message} ({warning.filename}:{warning.lineno})"
            )


@pytest.mark.meta
def test_ordinary_inputs_raise_no_runtime_warning_catches_a_mask_as_log_visibility() -> None:
    assert_law_fails(test_ordinary_inputs_raise_no_runtime_warning,
                     implementation=b.broken(b.mask_as_the_log_of_the_visibility))  # fmt: skip


# --- Every convention: the softmax and multi-head attention under test too (the row kernel is the implementation) ---


@given(data=logit_matrices())
def test_a_returned_softmax_is_not_changed_by_later_calls(softmax: Softmax, data: NDArray[np.float64]) -> None:
    """The weights a call returned keep their values when the softmax is called again on other logits of the same
    shape (1 added to the first row): no output buffer is reused across calls."""
    later = data.copy()
    later[0] += 1.0
    check_returned_results_survive_later_calls(lambda: softmax(data), lambda: softmax(later), "the softmax")


@pytest.mark.meta
def test_a_returned_softmax_is_not_changed_catches_a_reused_buffer() -> None:
    assert_law_fails(test_a_returned_softmax_is_not_changed_by_later_calls,
                     softmax=b.broken_softmax(b.softmax_reuses_its_output_buffer))  # fmt: skip


@given(problem=multihead_problems())
def test_a_returned_multihead_output_is_not_changed_by_later_calls(
    multihead: Multihead, problem: MultiheadProblem
) -> None:
    """The X' a call returned keeps its values when multi-head attention is called again on another problem of the
    same shapes (X + 1): no output buffer is reused across calls."""
    later = replace(problem, X=problem.X + 1.0)
    check_returned_results_survive_later_calls(lambda: multihead(problem.X, list(problem.heads), problem.omega_c),
                                               lambda: multihead(later.X, list(later.heads), later.omega_c),
                                               "multi-head X'")  # fmt: skip


@pytest.mark.meta
def test_a_returned_multihead_output_is_not_changed_catches_a_reused_buffer() -> None:
    assert_law_fails(test_a_returned_multihead_output_is_not_changed_by_later_calls,
                     multihead=b.broken_multihead(b.multihead_reuses_its_output_buffer))  # fmt: skip
