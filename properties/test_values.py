"""Laws of the values: X' is linear in (omega_v, beta_v); degenerate sequences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from numpy.typing import NDArray

from properties.catalogues import mistakes as b
from properties.helpers.checks import LawViolation, assert_close, value_shift_error
from properties.helpers.implementations import Implementation
from properties.helpers.meta import assert_law_fails
from properties.helpers.problems import AttentionProblem
from properties.helpers.strategies import (
    problems_with_repeated_inputs,
    problems_with_second_values,
    problems_with_value_shifts,
)

pytestmark = pytest.mark.semantics
Array = NDArray[np.float64]


@given(case=problems_with_second_values())
def test_output_is_linear_in_the_value_weights_and_bias(
    implementation: Implementation, case: tuple[AttentionProblem, Array, Array, float, float]
) -> None:
    """f(a W1 + b W2) = a f(W1) + b f(W2) for W = (omega_v, beta_v): V enters X' = V A linearly (eq. 12.6)
    and the attentions do not depend on it."""
    problem, omega_v, beta_v, a, c = case
    second = problem.replace(omega_v=omega_v, beta_v=beta_v)
    mixed = problem.replace(omega_v=a * problem.omega_v + c * omega_v, beta_v=a * problem.beta_v + c * beta_v)
    f1, f2, f_mixed = implementation(problem), implementation(second), implementation(mixed)
    eps = max(f1.eps, f2.eps, f_mixed.eps)
    magnitudes = problem.replace(
        omega_v=abs(a) * np.abs(problem.omega_v) + abs(c) * np.abs(omega_v),
        beta_v=abs(a) * np.abs(problem.beta_v) + abs(c) * np.abs(beta_v),
    )
    expected = a * f1.X_prime + c * f2.X_prime
    tolerance = (
        2 * implementation.bounds(magnitudes, eps).x_prime  # f_mixed, and the rounding of the mixed weights
        + abs(a) * implementation.bounds(problem, eps).x_prime
        + abs(c) * implementation.bounds(second, eps).x_prime
        + 2 * eps * np.abs(expected)  # the law's own a f1 + b f2
    )
    assert_close(f_mixed.X_prime, expected, tolerance, what=f"X' must be linear in (omega_v, beta_v): a={a}, b={c}")


@pytest.mark.meta
def test_output_is_linear_in_the_value_weights_catches_residual() -> None:
    assert_law_fails(test_output_is_linear_in_the_value_weights_and_bias, implementation=b.broken(b.residual_added))


@given(case=problems_with_value_shifts())
def test_adding_to_the_value_bias_adds_to_every_output(
    implementation: Implementation, case: tuple[AttentionProblem, Array]
) -> None:
    """f(beta_v + c) = f(beta_v) + c 1^T: the columns of attentions sum to one (eqs. 12.3, 12.5)."""
    problem, c = case
    shifted = problem.replace(beta_v=problem.beta_v + c)
    before, after = implementation(problem), implementation(shifted)
    worst = value_shift_error(implementation, problem, c, before, after)
    if worst.ratio > 1.0:
        raise LawViolation(f"adding c to beta_v must add c to every column of X': {worst}")


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.values_without_bias, b.softmax_over_rows])
def test_adding_to_the_value_bias_catches(bug: object) -> None:
    assert_law_fails(test_adding_to_the_value_bias_adds_to_every_output, implementation=b.broken(bug))


@given(case=problems_with_repeated_inputs())
def test_identical_inputs_give_identical_outputs(
    implementation: Implementation, case: tuple[AttentionProblem, NDArray[np.intp]]
) -> None:
    """x_i = x_j implies x'_i = x'_j, and equal attention columns i, j and rows i, j (equivariance under the
    transposition of i and j, which leaves X unchanged)."""
    problem, index = case
    result = implementation(problem)
    bounds = implementation.bounds(problem, result.eps)
    same = index.reshape(-1, 1) == index.reshape(1, -1)
    for i, j in zip(*np.nonzero(np.triu(same, 1)), strict=True):
        assert_close(
            result.X_prime[:, j],
            result.X_prime[:, i],
            (bounds + bounds).x_prime[:, i],
            what=f"inputs {i} and {j} are equal, so must their outputs be",
        )
        if result.attentions is not None:
            A = result.attentions
            tolerance = 2 * bounds.attentions.ravel()
            assert_close(A[:, j], A[:, i], tolerance[i], what=f"attention columns {i} and {j} (equal queries)")
            assert_close(A[j, :], A[i, :], tolerance, what=f"attention rows {i} and {j} (equal keys)")


@pytest.mark.meta
def test_identical_inputs_give_identical_outputs_catches_positional_bias() -> None:
    assert_law_fails(test_identical_inputs_give_identical_outputs, implementation=b.broken(b.positional_bias))


@pytest.mark.meta
def test_adding_to_the_value_bias_catches_missing_biases() -> None:
    assert_law_fails(
        test_adding_to_the_value_bias_adds_to_every_output, implementation=b.broken(b.without_biases, "scaled")
    )
