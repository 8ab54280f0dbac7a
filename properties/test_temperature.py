"""Temperature laws: sharpening the queries sharpens every attention column; zero queries attend uniformly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from numpy.typing import NDArray

from properties.catalogues import mistakes as b
from properties.helpers.checks import (
    assert_at_most,
    assert_close,
    check_sharp_queries_select_the_best_matching_value,
    entropy,
)
from properties.helpers.implementations import Implementation
from properties.helpers.meta import assert_law_fails
from properties.helpers.problems import AttentionProblem
from properties.helpers.strategies import attention_problems, problems_with_temperatures

pytestmark = pytest.mark.semantics
Array = NDArray[np.float64]


@given(case=problems_with_temperatures())
def test_sharper_queries_never_flatten_attention(
    implementation: Implementation, case: tuple[AttentionProblem, float]
) -> None:
    """Multiplying omega_q and beta_q by t >= 1 multiplies the logits by t: no column's largest weight falls
    (1 / sum_m exp(t (L_m - max L)) grows with t) and no column's entropy rises (dH/dt = -t Var(L) <= 0).

    Tolerance: each weight has relative error at most r_n (tolerances), so the largest weight moves by r_n
    and the entropy by at most sum_m r_n a_m (|log a_m| + 1) <= r_n (log N + 1), in each evaluation.
    """
    problem, t = case
    sharp = problem.replace(omega_q=t * problem.omega_q, beta_q=t * problem.beta_q)
    before, after = implementation(problem), implementation(sharp)
    eps = max(before.eps, after.eps)
    r = (implementation.bounds(problem, eps) + implementation.bounds(sharp, eps)).attentions.ravel()
    A, A_sharp = before.require_attentions(), after.require_attentions()
    assert_at_most(
        A.max(axis=0),
        A_sharp.max(axis=0),
        r,
        what=f"the largest weight of a column must not fall when the queries are multiplied by t={t}",
    )
    assert_at_most(
        entropy(A_sharp),
        entropy(A),
        r * (np.log(problem.N) + 1),
        what=f"the entropy of a column must not rise when the queries are multiplied by t={t}",
    )


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.query_norm_squared_scale, b.softmax_over_rows])
def test_sharper_queries_never_flatten_attention_catches(bug: object) -> None:
    assert_law_fails(test_sharper_queries_never_flatten_attention, implementation=b.broken(bug))


@given(problem=attention_problems())
def test_zero_queries_attend_uniformly(implementation: Implementation, problem: AttentionProblem) -> None:
    """omega_q = 0 and beta_q = 0 give Q = 0, logits 0, attentions = 1/N everywhere and every column of X'
    equal to the mean value vector (1/N) sum_m v_m."""
    zero = problem.replace(omega_q=np.zeros_like(problem.omega_q), beta_q=np.zeros_like(problem.beta_q))
    result = implementation(zero)
    bounds = implementation.bounds(zero, result.eps)
    mean_value = np.broadcast_to(zero.values().mean(axis=1, keepdims=True), result.X_prime.shape)
    assert_close(
        result.X_prime,
        mean_value,
        (bounds + bounds).x_prime,
        what="with zero queries every output must be the mean of the values",
    )
    if result.attentions is not None:
        uniform = np.full((problem.N, problem.N), 1.0 / problem.N)
        assert_close(
            result.attentions,
            uniform,
            np.broadcast_to(bounds.attentions, uniform.shape),
            what="with zero queries every attention weight must be 1/N",
        )


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.positional_bias, b.values_without_bias])
def test_zero_queries_attend_uniformly_catches(bug: object) -> None:
    assert_law_fails(test_zero_queries_attend_uniformly, implementation=b.broken(bug))


@given(problem=attention_problems())
def test_sharp_queries_select_the_best_matching_value(
    implementation: Implementation, problem: AttentionProblem
) -> None:
    """As t grows, softmax(t L) tends to the indicator of argmax_m L_mn, so x'_n tends to v_m* (hard attention).

    The law-side logits are exact to k u l_n; a column whose top two logits are closer than twice that (a tie,
    within rounding) is not judged. The queries are sharpened by t so that the smallest certain gap becomes
    GAP (or as far as the logits stay below LARGEST_LOGIT); the other weights then total at most
    N exp(-GAP) in every column whose gap reached GAP, and only those columns are judged.
    """
    check_sharp_queries_select_the_best_matching_value(implementation, problem)


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.uniform_attention, b.transposed_logits])
def test_sharp_queries_select_the_best_matching_value_catches(bug: object) -> None:
    assert_law_fails(test_sharp_queries_select_the_best_matching_value, implementation=b.broken(b.x_prime_only(bug)))
