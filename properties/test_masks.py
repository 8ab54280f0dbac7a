"""Masks, causal attention and relative-position biases: only what they allow of the symmetry survives.

These laws need the keyword arguments mask=, causal= and bias= (the reference takes them); they are skipped
for implementations that do not.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from numpy.typing import NDArray

from properties import broken as b
from properties.checks import LawViolation, assert_close
from properties.implementation import Implementation
from properties.meta import assert_law_fails
from properties.problem import AttentionProblem
from properties.strategies import (
    attention_problems,
    bias_witnesses,
    dimensions,
    problems_with_a_position,
    problems_with_circulant_biases,
    problems_with_masks,
)

pytestmark = pytest.mark.semantics
Array = NDArray[np.float64]
# Changed inputs are multiplied by up to this much: huge, yet every logit stays far from overflow.
HUGE = 1e6


def masked_problem(problem: AttentionProblem, changed: NDArray[np.bool_], scale: float) -> AttentionProblem:
    """The problem with the input columns flagged in `changed` replaced by scale * (their values + 1)."""
    X = problem.X.copy()
    X[:, changed] = scale * (X[:, changed] + 1.0)
    return problem.replace(X=X)


@given(case=problems_with_a_position())
def test_causal_outputs_do_not_depend_on_later_inputs(
    implementation: Implementation, case: tuple[AttentionProblem, int, float]
) -> None:
    """With causal=True, x'_j for j <= n does not change when any input x_m with m > n changes, even to huge
    values: key m is invisible to query j < m."""
    implementation.require("causal")
    problem, n, scale = case
    later = np.arange(problem.N) > n
    before = implementation(problem, causal=True)
    after = implementation(masked_problem(problem, later, scale), causal=True)
    prefix = problem.with_columns(np.arange(n + 1))  # only these columns take part in the outputs compared
    bounds = implementation.bounds(prefix, max(before.eps, after.eps))
    assert_close(after.X_prime[:, : n + 1], before.X_prime[:, : n + 1], (bounds + bounds).x_prime,
                 what=f"causal outputs 0..{n} after changing the inputs after {n}")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.keywords_ignored, b.mask_as_large_negative_bias])
def test_causal_outputs_do_not_depend_on_later_inputs_catches(bug: Any) -> None:
    assert_law_fails(test_causal_outputs_do_not_depend_on_later_inputs, implementation=b.broken(bug))


@given(problem=attention_problems(dimensions(min_n=2)), data=st.data())
def test_causal_attention_is_consistent_with_its_prefixes(
    implementation: Implementation, problem: AttentionProblem, data: st.DataObject
) -> None:
    """f(X[:, :t], causal) = f(X, causal)[:, :t]: a causal model's outputs for a prefix ignore what follows."""
    implementation.require("causal")
    t = data.draw(st.integers(1, problem.N - 1), label="prefix length t")
    prefix = problem.with_columns(np.arange(t))
    whole, part = implementation(problem, causal=True), implementation(prefix, causal=True)
    bounds = implementation.bounds(prefix, max(whole.eps, part.eps))
    assert_close(part.X_prime, whole.X_prime[:, :t], (bounds + bounds).x_prime, what=f"causal prefix of length {t}")


@pytest.mark.meta
def test_causal_prefixes_catch_an_ignored_mask() -> None:
    assert_law_fails(test_causal_attention_is_consistent_with_its_prefixes, implementation=b.broken(b.keywords_ignored))


@given(problem=attention_problems())
def test_causal_equals_the_explicit_lower_triangular_mask(
    implementation: Implementation, problem: AttentionProblem
) -> None:
    """causal=True is mask[m, n] = (m <= n): key m visible to query n iff m <= n."""
    implementation.require("causal", "mask")
    triangle = np.tri(problem.N, dtype=bool).T
    causal, masked = implementation(problem, causal=True), implementation(problem, mask=triangle)
    bounds = implementation.bounds(problem, max(causal.eps, masked.eps))
    assert_close(causal.X_prime, masked.X_prime, (bounds + bounds).x_prime, what="causal=True against the mask")


@pytest.mark.meta
def test_causal_equals_the_explicit_mask_catches_the_transposed_triangle() -> None:
    assert_law_fails(test_causal_equals_the_explicit_lower_triangular_mask,
                     implementation=b.broken(b.causal_upper_triangle))  # fmt: skip


@given(case=problems_with_masks())
def test_masked_keys_influence_nothing(
    implementation: Implementation, case: tuple[AttentionProblem, NDArray[np.bool_], NDArray[np.bool_], float]
) -> None:
    """Changing inputs whose keys are hidden from query n (mask[m, n] False), even to huge values, leaves
    x'_n unchanged, for every query n that sees a key and is not itself among the changed inputs."""
    implementation.require("mask")
    problem, mask, changed, scale = case
    unaffected = ~changed & ~(mask & changed[:, None]).any(axis=0) & mask.any(axis=0)
    assume(unaffected.any())
    before = implementation(problem, mask=mask)
    after = implementation(masked_problem(problem, changed, scale), mask=mask)
    bounds = implementation.bounds(problem, max(before.eps, after.eps))
    assert_close(after.X_prime[:, unaffected], before.X_prime[:, unaffected], (bounds + bounds).x_prime[:, unaffected],
                 what="outputs of queries that cannot see the changed inputs")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize(
    "bug", [b.keywords_ignored, b.mask_as_large_negative_bias, b.hidden_logits_filled_with_minus_20]
)
def test_masked_keys_influence_nothing_catches(bug: Any) -> None:
    assert_law_fails(test_masked_keys_influence_nothing, implementation=b.broken(bug))


@given(case=problems_with_masks())
def test_attentions_are_distributions_over_the_visible_keys(
    implementation: Implementation, case: tuple[AttentionProblem, NDArray[np.bool_], NDArray[np.bool_], float]
) -> None:
    """For every query n that sees a key: attentions[m, n] = 0 where key m is hidden from it, and its column sums
    to 1 over the visible keys. (A query with no visible key follows a convention: test_conventions.py.)"""
    implementation.require("mask")
    problem, mask, _, _ = case
    result = implementation(problem, mask=mask)
    A = result.require_attentions()
    some = mask.any(axis=0)
    hidden = ~mask & some
    if (A[hidden] != 0).any():
        m, n = (int(i) for i in np.argwhere((A != 0) & hidden)[0])
        raise LawViolation(f"attentions[{m}, {n}] = {float(A[m, n])!r}, but key {m} is hidden from query {n}")
    tolerance = implementation.bounds(problem, result.eps).column_sum[some]
    assert_close(A[:, some].sum(axis=0), np.ones(int(some.sum())), tolerance,
                 what="columns of attentions with a visible key must sum to 1")  # fmt: skip


@pytest.mark.meta
def test_attentions_over_visible_keys_catches_missing_renormalisation() -> None:
    assert_law_fails(test_attentions_are_distributions_over_the_visible_keys,
                     implementation=b.broken(b.mask_without_renormalising))  # fmt: skip


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


@pytest.mark.meta
@pytest.mark.parametrize(
    "law", [test_masked_keys_influence_nothing, test_attentions_are_distributions_over_the_visible_keys]
)
def test_a_nan_convention_passes_the_mask_laws(law: Any) -> None:
    """No false alarm: NaN for a query that sees no key is a convention (test_conventions.py), not a semantic error."""
    law(implementation=b.broken(b.nan_for_queries_without_keys))
