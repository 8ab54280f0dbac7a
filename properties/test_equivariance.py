"""Permutation equivariance of self-attention (book eq. 12.18 and section 12.2.2)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from numpy.typing import NDArray

from properties.catalogues import mistakes as b
from properties.helpers.checks import (
    assert_close,
    check_output_is_equivariant_under_column_permutations,
)
from properties.helpers.implementations import Implementation
from properties.helpers.meta import assert_law_fails
from properties.helpers.problems import AttentionProblem
from properties.helpers.strategies import problems_with_permutations

pytestmark = pytest.mark.semantics


@given(case=problems_with_permutations())
def test_output_is_equivariant_under_column_permutations(
    implementation: Implementation, case: tuple[AttentionProblem, NDArray[np.intp]]
) -> None:
    """f(X P) = f(X) P for every permutation matrix P: permuting the inputs permutes the outputs (eq. 12.18)."""
    check_output_is_equivariant_under_column_permutations(implementation, case)


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.positional_bias, b.bias_tiled_for_three_inputs])
def test_output_is_equivariant_catches(bug: object) -> None:
    assert_law_fails(test_output_is_equivariant_under_column_permutations, implementation=b.broken(bug))


@given(case=problems_with_permutations())
def test_attentions_are_equivariant_under_column_permutations(
    implementation: Implementation, case: tuple[AttentionProblem, NDArray[np.intp]]
) -> None:
    """attentions(X P) = P^T attentions(X) P: keys and queries are permuted together."""
    problem, p = case
    original, permuted = implementation(problem), implementation(problem.with_columns(p))
    A, A_permuted = original.require_attentions(), permuted.require_attentions()
    bounds = implementation.bounds(problem, max(original.eps, permuted.eps))
    tolerance = np.broadcast_to((bounds + bounds).attentions[:, p], A.shape)
    assert_close(
        A_permuted,
        A[np.ix_(p, p)],
        tolerance,
        what=f"attentions of the inputs permuted by {p.tolist()} must be P^T attentions P",
    )


@pytest.mark.meta
def test_attentions_are_equivariant_catches_positional_bias() -> None:
    assert_law_fails(
        test_attentions_are_equivariant_under_column_permutations, implementation=b.broken(b.positional_bias)
    )
