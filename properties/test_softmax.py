"""Laws of softmax_cols (book eq. 12.5), for the column softmax under test (the `softmax` fixture)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from numpy.typing import NDArray

from properties.catalogues import mistakes as b
from properties.helpers.checks import LawViolation, assert_at_most, assert_close, assert_finite
from properties.helpers.meta import assert_law_fails
from properties.helpers.strategies import logit_matrices, logits_with_column_shifts, matrices
from properties.helpers.tolerances import epsilon_of, softmax_error, sum_to_one_error

Array = NDArray[np.float64]
Softmax = Callable[[Array], Any]


def apply(softmax: Softmax, data: Array) -> Array:
    """softmax(copy of data), as a float array of the same shape."""
    result = np.asarray(softmax(data.copy()))
    if result.shape != data.shape:
        raise LawViolation(f"softmax_cols returned shape {result.shape} for input of shape {data.shape}")
    return result


@pytest.mark.semantics
@given(data=logit_matrices())
def test_softmax_columns_are_probability_distributions(softmax: Softmax, data: Array) -> None:
    """softmax_cols(z)[:, n] is a distribution: entries in [0, 1] that sum to 1 (eq. 12.5)."""
    result = apply(softmax, data)
    eps = epsilon_of(result.dtype)
    assert_at_most(0.0, result, 0.0, what="softmax entries must be >= 0")
    assert_at_most(result, 1.0, eps, what="softmax entries must be <= 1")
    assert_close(
        result.sum(axis=0),
        np.ones(data.shape[1]),
        sum_to_one_error(data.shape[0], eps, np.abs(data).max(axis=0)),
        what="softmax columns must sum to 1",
    )


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.row_softmax, b.exp_without_normalisation])
def test_softmax_columns_are_probability_distributions_catches(bug: Softmax) -> None:
    assert_law_fails(test_softmax_columns_are_probability_distributions, softmax=b.broken_softmax(bug))


@pytest.mark.semantics
@given(case=logits_with_column_shifts())
def test_softmax_ignores_a_constant_added_to_a_column(softmax: Softmax, case: tuple[Array, Array]) -> None:
    """softmax_cols(z + 1 c^T) = softmax_cols(z): exp(z_m + c) / sum_j exp(z_j + c) does not depend on c.

    Tolerance: the shifted logits are rounded by at most u (|z| + |c|), which moves each weight by twice
    that in relative terms, on top of softmax_error for each evaluation.
    """
    data, shift = case
    shifted = data + shift
    before, after = apply(softmax, data), apply(softmax, shifted)
    eps = epsilon_of(before.dtype, after.dtype)
    rounding = 2 * eps * (np.abs(data).max(axis=0, keepdims=True) + np.abs(shift))
    tolerance = softmax_error(data, eps) + softmax_error(shifted, eps) + rounding
    assert_close(
        after,
        before,
        np.broadcast_to(tolerance, data.shape),
        what="adding a constant to each column must not change the softmax",
    )


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.row_softmax, b.softmax_over_all_entries])
def test_softmax_ignores_a_constant_added_to_a_column_catches(bug: Softmax) -> None:
    assert_law_fails(test_softmax_ignores_a_constant_added_to_a_column, softmax=b.broken_softmax(bug))


@pytest.mark.semantics
@given(data=logit_matrices())
def test_softmax_preserves_order_within_a_column(softmax: Softmax, data: Array) -> None:
    """z_m < z_j implies softmax(z)_m <= softmax(z)_j: exp is increasing and the column shares one denominator."""
    result = apply(softmax, data)
    tolerance = softmax_error(data, epsilon_of(result.dtype))
    for n in range(data.shape[1]):
        order = np.argsort(data[:, n], kind="stable")
        z, a = data[order, n], result[order, n]
        strictly_increasing = z[1:] > z[:-1]
        assert_at_most(
            a[:-1][strictly_increasing],
            a[1:][strictly_increasing],
            tolerance[0, n],
            what=f"column {n}: a larger logit must not get a smaller weight",
        )


@pytest.mark.meta
def test_softmax_preserves_order_catches_negated_logits() -> None:
    assert_law_fails(test_softmax_preserves_order_within_a_column, softmax=b.broken_softmax(b.reversed_softmax))


@pytest.mark.robustness
@example(data=np.array([[1e5, 710.0, -1e308], [-1e5, 0.0, 1e308], [0.0, -710.0, 0.0]]))
@given(data=st.integers(1, 6).flatmap(lambda n: matrices(n, 3, bound=float(np.finfo(np.float64).max))))
def test_softmax_is_finite_for_every_finite_input(softmax: Softmax, data: Array) -> None:
    """For every finite z, however large its spread (up to +-1.8e308), softmax_cols(z) is finite and its
    columns sum to 1 (shift each column by its maximum before exponentiating), within the normalisation error
    of tolerances.sum_to_one_error: it grows with max |z| (a log-domain softmax rounds lse = M + log S by
    u |M|), so for |z| beyond ~1/u only finiteness is judged."""
    result = apply(softmax, data)
    assert_finite(result, what="softmax of finite logits")
    assert_close(
        result.sum(axis=0),
        np.ones(data.shape[1]),
        sum_to_one_error(data.shape[0], epsilon_of(result.dtype), np.abs(data).max(axis=0)),
        what="softmax columns must sum to 1 for large logits",
    )


@pytest.mark.meta
def test_softmax_is_finite_catches_the_notebooks_softmax() -> None:
    assert_law_fails(test_softmax_is_finite_for_every_finite_input, softmax=b.broken_softmax(b.notebook_softmax_cols))
