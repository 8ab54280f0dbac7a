"""Laws of a backward pass, by what the forward's own laws imply for its derivative: the directional
derivative of the forward under test (of its output, and of its attentions under the notebook's contract), the
values' and keys' sums, the query/key gauge, the scale, and the chain rule through the notebook's projections.

They run on the `backward` fixture: --backward TARGET (with the forward --impl TARGET it differentiates), else
the bundled reference's (the row kernel's backward, and the notebook's unscaled vjp read in rows). Every law
is stated for rows (B, H, N, E) and gradients of phi = <d_out, out>; its tolerance comes from
properties/helpers/backward.py (`gradient_bounds`, `central_difference_step`), derived in float64 arithmetic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray

from properties.catalogues import mistakes as b
from properties.helpers.backward import Backward, GradientProblem, NotebookBackward
from properties.helpers.checks import assert_close
from properties.helpers.gradient_checks import (
    EPS64,
    Directions,
    check_directional_derivative,
    check_key_sums,
    check_the_chain_rule,
    check_value_sums,
    per_kv_head,
)
from properties.helpers.meta import assert_law_fails
from properties.helpers.strategies import (
    gradient_problems,
    gradient_problems_with_directions,
    gradient_problems_with_positions,
    gradient_problems_with_second_cotangents,
)

pytestmark = pytest.mark.gradients
Array = NDArray[np.float64]


@given(case=gradient_problems_with_directions())
def test_gradients_are_the_directional_derivatives_of_the_forward(
    backward: Backward, case: tuple[GradientProblem, Directions]
) -> None:
    """<dq, δq> + <dk, δk> + <dv, δv> = d/dt <d_out, f(q + tδq, k + tδk, v + tδv)> at t = 0 for every direction,
    f the forward under test (with its mask, causal and scale keywords): the definition of the gradient."""
    check_directional_derivative(backward, *case)


@pytest.mark.meta
@pytest.mark.parametrize(
    "bug",
    [
        b.backward_without_the_rowsum_term,
        b.backward_dk_without_the_scale,
        b.backward_dq_scaled_twice,
        b.backward_dv_with_P_not_its_transpose,
        b.backward_forgets_the_causal_mask,
        b.backward_forgets_the_key_padding_mask,
        b.backward_from_unscaled_logits,
    ],
)
def test_gradients_are_the_directional_derivatives_catches(bug: Any) -> None:
    assert_law_fails(test_gradients_are_the_directional_derivatives_of_the_forward, backward=b.broken_backward(bug))


@given(case=gradient_problems_with_directions(weights=True, scale=False, bias=True))
def test_gradients_are_the_directional_derivatives_of_the_output_and_the_attentions(
    backward: Backward, case: tuple[GradientProblem, Directions]
) -> None:
    """With a cotangent dA of the attentions too (the notebook's d_attentions), the gradients are those of
    <d_X_prime, X_prime> + <dA, attentions>: <dq, δq> + <dk, δk> + <dv, δv> = d/dt (<d_out, f(...)> +
    <d_weights, P(...)>) at t = 0, P the forward's weights (its attentions, transposed); with the forward's bias
    of the logits given to both, when drawn and taken."""
    backward.require_notebook("d_attentions")
    check_directional_derivative(backward, *case)


@pytest.mark.meta
@pytest.mark.parametrize(
    "bug", [b.notebook_vjp_ignores_d_attentions, b.notebook_vjp_without_the_scale], ids=lambda bug: bug.__name__
)
def test_the_attentions_cotangent_law_catches(bug: Any) -> None:
    law = test_gradients_are_the_directional_derivatives_of_the_output_and_the_attentions
    assert_law_fails(law, backward=b.broken_notebook_backward(bug))


@pytest.mark.meta
def test_the_directional_derivative_catches_a_notebook_vjp_without_the_scale() -> None:
    law = test_gradients_are_the_directional_derivatives_of_the_forward
    assert_law_fails(law, backward=b.broken_notebook_backward(b.notebook_vjp_without_the_scale))


@given(case=gradient_problems_with_positions())
def test_the_cotangents_of_X_the_biases_and_the_positions_follow_from_the_projections(
    backward: Backward, case: tuple[GradientProblem, Array, str]
) -> None:
    """The chain rule through Q = omega_q (X + Pi) + beta_q 1^T (likewise K; V from X + Pi when
    positional_mode="input", else from X): at X + Pi = I_N, dQ = d omega_q and dK = d omega_k, so d beta = d omega 1
    and d Pi = omega_q^T d omega_q + omega_k^T d omega_k (+ omega_v^T d omega_v, and d beta_v = d omega_v 1, when
    the values see Pi: "input", where dX = d Pi); under "query_key" V = omega_v X, so (dX - d Pi) X^T =
    omega_v^T d omega_v. With a bias of the logits (S = s K^T Q + bias), d omega_q = s omega_k d bias and
    d omega_k = s omega_q d bias^T."""
    problem, positional, mode = case
    backward.require_notebook("positional", "positional_mode")
    assert isinstance(backward, NotebookBackward)
    check_the_chain_rule(backward, backward.adapt(problem), positional, mode)


@pytest.mark.meta
@pytest.mark.parametrize(
    "bug",
    [b.notebook_vjp_forgets_the_positional_gradient, b.notebook_vjp_dX_without_the_values_path],
    ids=lambda bug: bug.__name__,
)
def test_the_chain_rule_catches(bug: Any) -> None:
    law = test_the_cotangents_of_X_the_biases_and_the_positions_follow_from_the_projections
    assert_law_fails(law, backward=b.broken_notebook_backward(bug))


@given(problem=gradient_problems(mask=False))
def test_the_value_gradients_sum_to_the_output_cotangents(backward: Backward, problem: GradientProblem) -> None:
    """sum_s dv[s] = sum_l d_out[l] for every batch element and head when every query sees a key: each query's
    weights sum to one, so adding c to every value adds c to every output (sum over a group's query heads
    under enable_gqa)."""
    check_value_sums(backward, problem)


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.backward_dv_with_P_not_its_transpose, b.backward_groups_from_their_first_head])
def test_the_value_gradients_sum_catches(bug: Any) -> None:
    assert_law_fails(test_the_value_gradients_sum_to_the_output_cotangents, backward=b.broken_backward(bug))


@given(case=gradient_problems_with_second_cotangents())
def test_every_gradient_is_linear_in_the_output_cotangent(
    backward: Backward, case: tuple[GradientProblem, Array, float, float]
) -> None:
    """g(alpha d_out + beta d_out') = alpha g(d_out) + beta g(d_out') for g = dq, dk and dv: the backward is the
    transposed Jacobian applied to d_out (the combination is exact on the grid)."""
    problem, second, alpha, beta = case
    problem = backward.adapt(problem)
    combined = problem.replace(d_out=alpha * problem.d_out + beta * second)
    one, two, both = backward(problem), backward(problem, d_out=second), backward(combined)
    eps = max(one.eps, two.eps, both.eps)
    b1, b2, b3 = (backward.bounds(p, eps) for p in (problem, problem.replace(d_out=second), combined))
    for name, g1, g2, g3, e1, e2, e3 in zip(
        ("d_query", "d_key", "d_value"), one.as_float64(), two.as_float64(), both.as_float64(), b1, b2, b3,
        strict=False,
    ):  # fmt: skip
        expected = alpha * g1 + beta * g2
        tolerance = e3 + abs(alpha) * e1 + abs(beta) * e2 + 2 * EPS64 * np.abs(expected)
        assert_close(g3, expected, tolerance, what=f"{name} of {alpha} d_out + {beta} d_out'")


@pytest.mark.meta
def test_every_gradient_is_linear_catches_clipping() -> None:
    law = test_every_gradient_is_linear_in_the_output_cotangent
    assert_law_fails(law, backward=b.broken_backward(b.backward_clips_d_out))


@given(problem=gradient_problems())
def test_the_key_gradients_sum_to_zero(backward: Backward, problem: GradientProblem) -> None:
    """sum_s dk[s] = 0 for every batch element and head: adding one vector to every key adds a constant to each
    query's logits and changes no output (the forward's key-bias invariance)."""
    check_key_sums(backward, problem)


@pytest.mark.meta
def test_the_key_gradients_sum_to_zero_catches_the_missing_rowsum_term() -> None:
    law = test_the_key_gradients_sum_to_zero
    assert_law_fails(law, backward=b.broken_backward(b.backward_without_the_rowsum_term))


@given(problem=gradient_problems())
def test_query_and_key_gradients_balance(backward: Backward, problem: GradientProblem) -> None:
    """<dq, q> = <dk, k> for every batch element and key/value head (its group's query heads together):
    scaling the queries by t and the keys by 1/t changes no logit, so d/dt at t = 1 is zero."""
    problem = backward.adapt(problem)
    gradients = backward(problem)
    dq, dk, _ = gradients.as_float64()
    bounds = backward.bounds(problem, gradients.eps)
    G = problem.group
    query_side = per_kv_head((dq * problem.query).sum(axis=(2, 3)), G)
    key_side = (dk * problem.key).sum(axis=(2, 3))
    tolerance = (
        per_kv_head((np.abs(problem.query) * bounds.d_query).sum(axis=(2, 3)), G)
        + (np.abs(problem.key) * bounds.d_key).sum(axis=(2, 3))
        + (dq[0, 0].size * G + 1) * EPS64 * per_kv_head(np.abs(dq * problem.query).sum(axis=(2, 3)), G)
        + (dk[0, 0].size + 1) * EPS64 * np.abs(dk * problem.key).sum(axis=(2, 3))
    )
    assert_close(query_side, key_side, tolerance, what="<dq, q> against <dk, k> per batch element and head")


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.backward_dk_without_the_scale, b.backward_dq_scaled_twice])
def test_query_and_key_gradients_balance_catches(bug: Any) -> None:
    assert_law_fails(test_query_and_key_gradients_balance, backward=b.broken_backward(bug))


@given(problem=gradient_problems(), alpha=st.sampled_from((0.25, 0.5, 2.0, 4.0)))
def test_multiplying_the_scale_multiplies_the_query_gradient(
    backward: Backward, problem: GradientProblem, alpha: float
) -> None:
    """backward(q, k, v, scale = alpha s) = (alpha dq', dk', dv') with (dq', dk', dv') = backward(alpha q, k, v,
    scale = s): the logits s (alpha q) k^T and (alpha s) q k^T are the same, and q enters through them only."""
    backward.require("scale")
    problem = backward.adapt(problem)
    s = backward.scale(problem.E, problem.scale)
    first = problem.replace(scale=alpha * s)
    second = problem.replace(query=alpha * problem.query, scale=s)
    one, two = backward(first), backward(second)
    eps = max(one.eps, two.eps)
    b1, b2 = backward.bounds(first, eps), backward.bounds(second, eps)
    factors = (alpha, 1.0, 1.0)
    for name, g1, g2, e1, e2, f in zip(
        ("d_query", "d_key", "d_value"), one.as_float64(), two.as_float64(), b1, b2, factors, strict=False
    ):
        assert_close(g1, f * g2, e1 + f * e2 + EPS64 * np.abs(f * g2),
                     what=f"{name} at scale {alpha} s against {f} x {name} at queries x {alpha}")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.backward_dk_without_the_scale, b.backward_dq_scaled_twice])
def test_multiplying_the_scale_catches(bug: Any) -> None:
    assert_law_fails(test_multiplying_the_scale_multiplies_the_query_gradient, backward=b.broken_backward(bug))
