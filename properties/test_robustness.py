"""Robustness: logits of magnitude up to about 1e4 give finite outputs that still obey the laws."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from numpy.typing import NDArray

from properties import broken as b
from properties.checks import assert_close, assert_equivariant, assert_finite, assert_in_value_hull
from properties.implementation import Implementation
from properties.meta import assert_law_fails
from properties.problem import AttentionProblem
from properties.strategies import (
    TWO_SLABS_N,
    large_logit_problems,
    long_sequence_example,
    problems_with_permutations,
    with_queries_scaled,
)

pytestmark = pytest.mark.robustness


# Checked on every run, whatever hypothesis draws: logits of 1e4 and -1e4 in one column (exp overflows at ~710),
# two keys tied at the top (weights 1/2, so a wrong normalisation shows), values of one sign in the first row
# (so that a sign error leaves the convex hull).
HUGE_LOGITS = AttentionProblem(
    X=np.array([[1.0, -1.0, 1.0]]),
    omega_v=np.array([[1.0], [-2.0]]),
    omega_q=np.array([[100.0]]),
    omega_k=np.array([[100.0]]),
    beta_v=np.array([[3.0], [0.0]]),
    beta_q=np.zeros((1, 1)),
    beta_k=np.zeros((1, 1)),
)


@given(problem=large_logit_problems())
@example(problem=HUGE_LOGITS)
def test_large_logits_give_finite_outputs(implementation: Implementation, problem: AttentionProblem) -> None:
    """Logits up to ~1e4 (exp would overflow at ~710): X' and attentions stay finite (no NaN, no inf)."""
    result = implementation(problem)
    assert_finite(result.X_prime, what="X' for large logits")
    if result.attentions is not None:
        assert_finite(result.attentions, what="attentions for large logits")


@pytest.mark.meta
def test_large_logits_give_finite_outputs_catches_unshifted_softmax() -> None:
    assert_law_fails(test_large_logits_give_finite_outputs, implementation=b.broken(b.notebook_softmax))


# N = 1100 (the reference's two slabs of queries) with logits up to about 4e3: the shifted path on both slabs.
LONG_AND_LARGE = with_queries_scaled(long_sequence_example(TWO_SLABS_N), 64.0)


@given(problem=large_logit_problems())
@example(problem=HUGE_LOGITS)
@example(problem=LONG_AND_LARGE)
def test_large_logits_keep_outputs_in_the_convex_hull_of_the_values(
    implementation: Implementation, problem: AttentionProblem
) -> None:
    """With large logits, columns of attentions still sum to 1 and X' stays within [min_m V_dm, max_m V_dm]."""
    result = implementation(problem)
    assert_in_value_hull(implementation, problem, result)
    if result.attentions is not None:
        assert_close(
            result.attentions.sum(axis=0),
            np.ones(problem.N),
            implementation.bounds(problem, result.eps).column_sum,
            what="columns of attentions must sum to 1",
        )


@pytest.mark.meta
def test_large_logits_keep_outputs_in_the_convex_hull_catches_unshifted_softmax() -> None:
    assert_law_fails(
        test_large_logits_keep_outputs_in_the_convex_hull_of_the_values,
        implementation=b.broken(b.notebook_softmax),
    )


@given(case=problems_with_permutations(large_logit_problems()))
@example(case=(HUGE_LOGITS, np.array([2, 0, 1])))
def test_large_logits_keep_permutation_equivariance(
    implementation: Implementation, case: tuple[AttentionProblem, NDArray[np.intp]]
) -> None:
    """f(X P) = f(X) P (eq. 12.18) also when the logits are large."""
    problem, p = case
    assert_equivariant(implementation, problem, p, what="X' for large logits")


@pytest.mark.meta
def test_large_logits_keep_permutation_equivariance_catches_positional_bias() -> None:
    assert_law_fails(test_large_logits_keep_permutation_equivariance, implementation=b.broken(b.positional_bias))
