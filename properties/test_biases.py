"""Biases: an additive bias on the logits. A bias constant down each column changes nothing; with constant logits
the bias alone sets the weights; circulant biases keep equivariance under cyclic shifts and generic biases break it.

One topic a module: every law of the bias option is here (its combinations with a mask or causal included).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from numpy.typing import NDArray

from properties.catalogues import mistakes as b
from properties.helpers.checks import (
    LawViolation,
    assert_close,
    call,
    option_bounds,
    supported,
)
from properties.helpers.exact import softmax_columns
from properties.helpers.implementations import Implementation
from properties.helpers.meta import assert_law_fails, convention_pair_ids
from properties.helpers.problems import AttentionOptions, AttentionProblem
from properties.helpers.strategies import (
    bias_witnesses,
    problems_with_circulant_biases,
    problems_with_constant_logits,
    problems_with_options_and_column_shifts,
)

pytestmark = pytest.mark.semantics
Array = NDArray[np.float64]
Case = tuple[AttentionProblem, AttentionOptions]


@given(case=problems_with_options_and_column_shifts())
def test_a_bias_constant_down_each_column_changes_nothing(
    implementation: Implementation, case: tuple[AttentionProblem, AttentionOptions, Array]
) -> None:
    """f(X; B + 1 c^T) = f(X; B): adding c_n to every logit of query n changes nothing (the softmax is over the
    keys of a column, eq. 12.5), whatever the other options. A bias read along the wrong axis breaks this."""
    implementation.require("bias")
    problem, options, c = case
    options = supported(implementation, options)
    bias = np.zeros((problem.N, problem.N)) if options.bias is None else options.bias
    shifted = options.replace(bias=bias + c)
    first, second = call(implementation, problem, options), call(implementation, problem, shifted)
    eps = max(first.eps, second.eps)
    seen = options.sees_a_key(problem.N)
    tolerance = (
        option_bounds(implementation, problem, options, eps) + option_bounds(implementation, problem, shifted, eps)
    ).x_prime
    assert_close(second.X_prime[:, seen], first.X_prime[:, seen], tolerance[:, seen],
                 what="X' after adding one constant per query down each column of the bias")  # fmt: skip


@pytest.mark.meta
def test_a_bias_constant_down_each_column_catches_a_transposed_bias() -> None:
    assert_law_fails(test_a_bias_constant_down_each_column_changes_nothing, implementation=b.broken(b.bias_transposed))


@given(case=problems_with_constant_logits())
def test_with_constant_logits_the_bias_alone_sets_the_weights(implementation: Implementation, case: Case) -> None:
    """With omega_q = omega_k = 0 every logit is beta_k^T beta_q, the same for every key, so
    X' = V softmax_cols(bias) over the visible keys: the bias is added to the scaled logits, key m's to row m."""
    implementation.require("bias")
    problem, options = case
    options = supported(implementation, options)
    assert options.bias is not None
    result = call(implementation, problem, options)
    seen = options.sees_a_key(problem.N)
    weights = softmax_columns(options.bias, options.visible(problem.N))
    expected = options.without_positions(problem).values() @ weights
    bounds = option_bounds(implementation, problem, options, result.eps)
    assert_close(result.X_prime[:, seen], expected[:, seen], (bounds + bounds).x_prime[:, seen],
                 what="X' with constant logits against V softmax_cols(bias)")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize(
    "bug",
    [b.bias_before_the_scale, b.bias_rows_reversed, b.bias_ignored_with_a_mask, b.seen_keys_along_the_wrong_axis],
)
def test_with_constant_logits_the_bias_alone_sets_the_weights_catches(bug: Any) -> None:
    assert_law_fails(test_with_constant_logits_the_bias_alone_sets_the_weights, implementation=b.broken(bug))


@given(case=problems_with_circulant_biases())
def test_circulant_biases_keep_equivariance_under_cyclic_shifts(
    implementation: Implementation, case: tuple[AttentionProblem, Array, int]
) -> None:
    """With a circulant bias (relative positions on a ring), f(X C; B) = f(X; B) C for every cyclic shift C."""
    implementation.require("bias")
    problem, bias, shift = case
    p = np.roll(np.arange(problem.N), -shift)
    original = implementation(problem, bias=bias)
    shifted = implementation(problem.with_columns(p), bias=bias)
    bounds = implementation.bounds(problem, max(original.eps, shifted.eps)).with_logit_offset(float(np.abs(bias).max()))
    assert_close(shifted.X_prime, original.X_prime[:, p], (bounds + bounds).x_prime[:, p],
                 what=f"X' with a circulant bias, inputs shifted cyclically by {shift}")  # fmt: skip


@pytest.mark.meta
def test_circulant_biases_keep_equivariance_catches_reversed_bias() -> None:
    assert_law_fails(test_circulant_biases_keep_equivariance_under_cyclic_shifts,
                     implementation=b.broken(b.bias_rows_reversed))  # fmt: skip


@given(witness=bias_witnesses())
def test_generic_biases_break_equivariance_under_permutations(
    implementation: Implementation, witness: tuple[AttentionProblem, Array, NDArray[np.intp], Array]
) -> None:
    """With a bias that is not invariant under the transposition P, f(X P; B) != f(X; B) P, by a margin.

    With omega_q = omega_k = 0 the attentions are a = softmax_cols(B), whatever X. Column j of
    f(X P) - f(X) P is V w_j with w_j[m] = a[p^-1(m), j] - a[m, p(j)], which sums to 0, so V w_j =
    omega_v X w_j and |V w_j|_2 >= sigma_min(omega_v X) |w_j|_2 (omega_v X has full column rank).
    """
    implementation.require("bias")
    problem, bias, p, a = witness
    inverse = np.argsort(p)
    w = a[inverse, :] - a[:, p]
    sigma = float(np.linalg.svd(problem.omega_v @ problem.X, compute_uv=False).min())
    margin = sigma * float(np.linalg.norm(w, axis=0).max())
    assume(margin >= 1e-6)  # B nearly invariant under P: no loss to see
    original, permuted = implementation(problem, bias=bias), implementation(problem.with_columns(p), bias=bias)
    bounds = implementation.bounds(problem, max(original.eps, permuted.eps)).with_logit_offset(
        float(np.abs(bias).max())
    )
    difference = float(np.linalg.norm(permuted.X_prime - original.X_prime[:, p], axis=0).max())
    # sigma and a are float64 law-side values, exact to far below 1e-12 relative at these sizes.
    tolerance = 2 * float(np.linalg.norm((bounds + bounds).x_prime, axis=0).max()) + 1e-12 * margin
    if not difference >= margin - tolerance:
        raise LawViolation(
            f"f(X P; B) - f(X; B) P has largest column norm {difference:.6g} for the transposition {p.tolist()}; "
            f"the bias must make it at least {margin:.6g}"
        )


@pytest.mark.meta
def test_generic_biases_break_equivariance_catches_an_ignored_bias() -> None:
    assert_law_fails(
        test_generic_biases_break_equivariance_under_permutations, implementation=b.broken(b.keywords_ignored)
    )


# Each law judges the queries that see a key only: an implementation with another convention for the others
# (test_conventions.py) passes them all, being wrong in the convention alone.
NO_FALSE_ALARMS = [
    (test_a_bias_constant_down_each_column_changes_nothing, b.nan_for_queries_without_keys),
    (test_with_constant_logits_the_bias_alone_sets_the_weights, b.nan_for_queries_without_keys),
]


@pytest.mark.meta
@pytest.mark.parametrize(
    ("law", "convention"),
    NO_FALSE_ALARMS,
    ids=convention_pair_ids(NO_FALSE_ALARMS),
)
def test_other_conventions_pass_the_bias_laws(law: Any, convention: Any) -> None:
    """No false alarm: a correct implementation with another convention for queries without keys passes."""
    law(implementation=b.broken(convention))
