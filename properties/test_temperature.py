"""Temperature laws: sharpening the queries sharpens every attention column; zero queries attend uniformly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, note
from numpy.typing import NDArray

from properties import broken as b
from properties.checks import assert_at_most, assert_close, entropy
from properties.implementation import Implementation
from properties.meta import assert_law_fails
from properties.problem import AttentionProblem
from properties.strategies import MAX_QUERY_GAIN, attention_problems, problems_with_temperatures
from properties.tolerances import FLOAT64_EPS

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


# Columns whose two largest logits are at least GAP apart (after sharpening) put all but exp(-GAP) of their
# weight on the largest: exp(-60) ~ 1e-26, far below any tolerance here. Sharpening stops where a logit
# could reach LARGEST_LOGIT, so that no softmax, shifted or not, overflows (exp(600) ~ 4e260).
GAP = 60.0
LARGEST_LOGIT = 600.0  # and the queries grow by at most MAX_QUERY_GAIN (tiny logits cannot be sharpened at will)


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
    logits = problem.logits(implementation.scale(problem.D_q))
    bounds = implementation.bounds(problem, FLOAT64_EPS)
    ordered = np.sort(logits, axis=0)
    gaps = ordered[-1] - ordered[-2] if problem.N > 1 else np.full(1, np.inf)
    certain = gaps > 2 * bounds.logit_error
    if not certain.any():
        return
    largest = float(bounds.logit_bound.max())
    t = min(GAP / float(gaps[certain].min()), LARGEST_LOGIT / largest, MAX_QUERY_GAIN) if problem.N > 1 else 1.0
    certain &= t * gaps >= GAP
    sharp = problem.replace(omega_q=t * problem.omega_q, beta_q=t * problem.beta_q)
    result = implementation(sharp)
    sharp_bounds = implementation.bounds(sharp, result.eps)
    # The implementation's own logits are rounded in its dtype: only gaps beyond both roundings are certain.
    certain &= gaps > 2 * (bounds.logit_error + implementation.bounds(problem, result.eps).logit_error)
    winners = np.argmax(logits, axis=0)
    expected = problem.values()[:, winners]
    tolerance = (sharp_bounds + sharp_bounds).x_prime + sharp_bounds.value_bound * problem.N * np.exp(-GAP)
    columns = np.flatnonzero(certain)
    note(f"t = {t:.6g}; judged columns {columns.tolist()}; their best keys {winners[columns].tolist()}")
    assert_close(
        result.X_prime[:, columns],
        expected[:, columns],
        tolerance[:, columns],
        what=f"with queries sharpened by t={t:.6g}, x'_n must be the value of the best-matching key",
    )


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.uniform_attention, b.transposed_logits])
def test_sharp_queries_select_the_best_matching_value_catches(bug: object) -> None:
    assert_law_fails(test_sharp_queries_select_the_best_matching_value, implementation=b.broken(b.x_prime_only(bug)))
