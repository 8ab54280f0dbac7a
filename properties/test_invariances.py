"""Invariances of self-attention: convex hull, key bias, query/key gauge, and the scale law.

One topic a module: the "under every option" generalisation of a law here (doubling D_q) is here too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, note
from numpy.typing import NDArray

from attention import scaled_dot_product_self_attention
from properties.catalogues import mistakes as b
from properties.helpers.checks import (
    assert_close,
    call,
    check_outputs_lie_in_the_convex_hull_of_the_values,
    option_bounds,
    require_some_option,
    stacked_queries_and_keys,
    supported,
)
from properties.helpers.implementations import Implementation
from properties.helpers.meta import assert_law_fails, convention_pair_ids
from properties.helpers.problems import AttentionOptions, AttentionProblem
from properties.helpers.strategies import (
    attention_problems,
    problems_with_gauges,
    problems_with_options,
    problems_with_second_key_bias,
)

pytestmark = pytest.mark.semantics
Case = tuple[AttentionProblem, AttentionOptions]


@given(problem=attention_problems())
def test_outputs_lie_in_the_convex_hull_of_the_values(
    implementation: Implementation, problem: AttentionProblem
) -> None:
    """min_m V_dm <= X'_dn <= max_m V_dm: each output is a convex combination of the values (eq. 12.3)."""
    check_outputs_lie_in_the_convex_hull_of_the_values(implementation, problem)


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.softmax_over_rows, b.values_without_bias])
def test_outputs_lie_in_the_convex_hull_catches(bug: object) -> None:
    assert_law_fails(test_outputs_lie_in_the_convex_hull_of_the_values, implementation=b.broken(bug))


@given(case=problems_with_second_key_bias())
def test_output_does_not_depend_on_the_key_bias(
    implementation: Implementation, case: tuple[AttentionProblem, NDArray[np.float64]]
) -> None:
    """f(beta_k) = f(beta_k'): beta_k adds beta_k^T q_n to every logit of column n, which the softmax removes."""
    problem, beta_k = case
    other = problem.replace(beta_k=beta_k)
    first, second = implementation(problem), implementation(other)
    eps = max(first.eps, second.eps)
    bounds = implementation.bounds(problem, eps) + implementation.bounds(other, eps)
    assert_close(second.X_prime, first.X_prime, bounds.x_prime, what="X' must not change with beta_k")
    if first.attentions is not None and second.attentions is not None:
        assert_close(
            second.attentions,
            first.attentions,
            np.broadcast_to(bounds.attentions, (problem.N, problem.N)),
            what="attentions must not change with beta_k",
        )


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.transposed_logits, b.query_bias_on_keys, b.softmax_over_rows])
def test_output_does_not_depend_on_the_key_bias_catches(bug: object) -> None:
    assert_law_fails(test_output_does_not_depend_on_the_key_bias, implementation=b.broken(bug))


@given(case=problems_with_gauges())
def test_output_is_invariant_under_query_key_gauge_transformations(
    implementation: Implementation,
    case: tuple[AttentionProblem, NDArray[np.float64], NDArray[np.float64]],
) -> None:
    """(M omega_q, M beta_q, M^-T omega_k, M^-T beta_k) gives the same output: K^T M^-1 M Q = K^T Q.

    M is invertible with an exact inverse (strategies.unimodular_pairs). The transformed weights are rounded
    in float64; their magnitudes |M| Qhat and |M^-T| Khat, which bound that rounding too, set the tolerance.
    """
    problem, M, M_inverse = case
    gauged = problem.replace(
        omega_q=M @ problem.omega_q,
        beta_q=M @ problem.beta_q,
        omega_k=M_inverse.T @ problem.omega_k,
        beta_k=M_inverse.T @ problem.beta_k,
    )
    first, second = implementation(problem), implementation(gauged)
    eps = max(first.eps, second.eps)
    # Bounds of the gauged problem computed from |M| |omega_q| etc.: they dominate its true magnitudes.
    magnitudes = problem.replace(
        omega_q=np.abs(M) @ np.abs(problem.omega_q),
        beta_q=np.abs(M) @ np.abs(problem.beta_q),
        omega_k=np.abs(M_inverse.T) @ np.abs(problem.omega_k),
        beta_k=np.abs(M_inverse.T) @ np.abs(problem.beta_k),
    )
    bounds = implementation.bounds(problem, eps) + implementation.bounds(magnitudes, eps)
    assert_close(
        second.X_prime,
        first.X_prime,
        bounds.x_prime,
        what="X' must not change when queries are transformed by M and keys by M^-T",
    )


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.keys_from_query_weights, b.query_bias_on_keys])
def test_output_is_invariant_under_query_key_gauge_catches(bug: object) -> None:
    assert_law_fails(test_output_is_invariant_under_query_key_gauge_transformations, implementation=b.broken(bug))


@given(problem=attention_problems())
def test_doubling_the_query_key_dimension_scales_the_logits_as_the_scale_demands(
    implementation: Implementation, problem: AttentionProblem
) -> None:
    """Stacking [omega_q; omega_q], [omega_k; omega_k] (and the biases) doubles D_q and K^T Q. The result
    must equal that of multiplying omega_q and beta_q by c, where c = 2 / sqrt(2) = sqrt(2) for scaled
    attention (eq. 12.9: the scale 1/sqrt(D_q) must follow D_q, not D) and c = 2 for unscaled attention.
    """
    c = np.sqrt(2.0) if implementation.kind == "scaled" else 2.0
    stacked = stacked_queries_and_keys(problem)
    sharpened = problem.replace(omega_q=c * problem.omega_q, beta_q=c * problem.beta_q)
    note(f"stacked problem: D={stacked.D}, D_q={stacked.D_q}, D_v={stacked.D_v}")
    first, second = implementation(stacked), implementation(sharpened)
    eps = max(first.eps, second.eps)
    # The stacked problem's logit bound is 2 s' Khat^T Qhat = c s Khat^T Qhat: the same as the sharpened one's.
    bounds = implementation.bounds(sharpened, eps) + implementation.bounds(sharpened, eps)
    assert_close(
        first.X_prime[: problem.D_v],
        second.X_prime,
        bounds.x_prime,
        what=f"stacking queries and keys (D_q {problem.D_q} -> {stacked.D_q}) must equal "
        f"multiplying the queries by {c:.6g}",
    )


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.scale_by_sqrt_D, b.scale_hard_coded, b.scale_by_D_q])
def test_doubling_the_query_key_dimension_catches(bug: object) -> None:
    law = test_doubling_the_query_key_dimension_scales_the_logits_as_the_scale_demands
    assert_law_fails(law, implementation=b.broken(bug))


@pytest.mark.meta
def test_doubling_the_query_key_dimension_catches_scaled_function_checked_as_unscaled() -> None:
    assert_law_fails(
        test_doubling_the_query_key_dimension_scales_the_logits_as_the_scale_demands,
        implementation=b.broken(scaled_dot_product_self_attention, "unscaled"),
    )


@given(case=problems_with_options())
def test_doubling_the_query_key_dimension_scales_the_visible_logits_as_the_scale_demands(
    implementation: Implementation, case: Case
) -> None:
    """Under any options, stacking [omega_q; omega_q], [omega_k; omega_k] (and the biases) equals multiplying
    omega_q and beta_q by c = sqrt(2) (scaled: 1/sqrt(D_q) follows D_q, eq. 12.9) or c = 2 (unscaled), as
    test_doubling_the_query_key_dimension_scales_the_logits_as_the_scale_demands without options: the scale
    law on the paths the options switch on. Needs X' only."""
    require_some_option(implementation)
    problem, options = case
    options = supported(implementation, options)
    c = np.sqrt(2.0) if implementation.kind == "scaled" else 2.0
    stacked = stacked_queries_and_keys(problem)
    if stacked.D != problem.D and options.positional is not None:  # --square stacks the inputs too
        options_stacked = options.replace(positional=np.vstack([options.positional, options.positional]))
    else:
        options_stacked = options
    sharpened = problem.replace(omega_q=c * problem.omega_q, beta_q=c * problem.beta_q)
    first, second = call(implementation, stacked, options_stacked), call(implementation, sharpened, options)
    seen = options.sees_a_key(problem.N)
    eps = max(first.eps, second.eps)
    # The stacked logits' bound s' (2 Khat^T Qhat) equals the sharpened one's c s Khat^T Qhat; the stacked problem
    # has D_q (and under --square D) more rounding steps, and its own bounds count them.
    tolerance = (
        option_bounds(implementation, stacked, options_stacked, eps).x_prime[: problem.D_v]
        + option_bounds(implementation, sharpened, options, eps).x_prime
    )
    what = f"stacking queries and keys (D_q {problem.D_q} -> {stacked.D_q}) against queries times {c:.6g}"
    assert_close(first.X_prime[: problem.D_v, seen], second.X_prime[:, seen], tolerance[:, seen], what=what)


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.masked_path_unscaled])
def test_doubling_the_query_key_dimension_under_every_option_catches(bug: Any) -> None:
    law = test_doubling_the_query_key_dimension_scales_the_visible_logits_as_the_scale_demands
    assert_law_fails(law, implementation=b.broken(bug))


# Each law judges the queries that see a key only: an implementation with another convention for the others
# (test_conventions.py) passes them all, being wrong in the convention alone.
NO_FALSE_ALARMS = [
    (
        test_doubling_the_query_key_dimension_scales_the_visible_logits_as_the_scale_demands,
        b.nan_for_queries_without_keys,
    ),
]


@pytest.mark.meta
@pytest.mark.parametrize(
    ("law", "convention"),
    NO_FALSE_ALARMS,
    ids=convention_pair_ids(NO_FALSE_ALARMS),
)
def test_other_conventions_pass_the_doubling_laws(law: Any, convention: Any) -> None:
    """No false alarm: a correct implementation with another convention for queries without keys passes."""
    law(implementation=b.broken(convention))


@pytest.mark.meta
def test_doubling_the_query_key_dimension_catches_a_scale_by_sqrt_D_v() -> None:
    assert_law_fails(
        test_doubling_the_query_key_dimension_scales_the_logits_as_the_scale_demands,
        implementation=b.broken(b.scale_by_sqrt_D_v, "scaled"),
    )
