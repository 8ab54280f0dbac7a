"""Checks shared by several laws: a measurement that returns numbers, and an assertion that wraps it
(as e3nn's equivariance_error and assert_equivariant do)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from properties.implementation import Implementation, Result
from properties.measures import Discrepancy, LawViolation, assert_at_most, discrepancy
from properties.problem import AttentionProblem


def equivariance_error(implementation: Implementation, problem: AttentionProblem, p: NDArray[np.intp]) -> Discrepancy:
    """How far f(X P) is from f(X) P, in units of the forward-error bound of the two evaluations."""
    original, permuted = implementation(problem), implementation(problem.with_columns(p))
    bounds = implementation.bounds(problem, max(original.eps, permuted.eps))
    return discrepancy(permuted.X_prime, original.X_prime[:, p], (bounds + bounds).x_prime[:, p])


def assert_equivariant(
    implementation: Implementation, problem: AttentionProblem, p: NDArray[np.intp], *, what: str = "X'"
) -> None:
    """Raise LawViolation unless f(X P) = f(X) P within tolerance, reporting the worst entry."""
    worst = equivariance_error(implementation, problem, p)
    if worst.ratio > 1.0:
        raise LawViolation(f"{what} of the inputs permuted by {p.tolist()} must be {what} permuted alike: {worst}")


def assert_in_value_hull(implementation: Implementation, problem: AttentionProblem, result: Result) -> None:
    """Raise LawViolation unless min_m V_dm <= X'_dn <= max_m V_dm for every d, n (within the X' bound)."""
    V = problem.values()
    tolerance = implementation.bounds(problem, result.eps).x_prime
    assert_at_most(V.min(axis=1, keepdims=True), result.X_prime, tolerance,
                   what="X' must not fall below the smallest value of its row")  # fmt: skip
    assert_at_most(result.X_prime, V.max(axis=1, keepdims=True), tolerance,
                   what="X' must not exceed the largest value of its row")  # fmt: skip


def value_shift_error(
    implementation: Implementation, problem: AttentionProblem, c: NDArray[np.float64], before: Result, after: Result
) -> Discrepancy:
    """How far f(beta_v + c), given as `after`, is from f(beta_v) + c 1^T (`before` + c), in tolerance units."""
    shifted = problem.replace(beta_v=problem.beta_v + c)
    eps = max(before.eps, after.eps)
    expected = before.X_prime + c
    tolerance = (implementation.bounds(problem, eps) + implementation.bounds(shifted, eps)).x_prime
    return discrepancy(after.X_prime, expected, tolerance + eps * np.abs(expected))
