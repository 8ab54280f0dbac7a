"""Differential check: the implementation under test against an independent 50-digit computation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from properties import broken as b
from properties.checks import assert_at_most
from properties.implementation import Implementation
from properties.meta import assert_law_fails
from properties.problem import AttentionProblem
from properties.strategies import attention_problems, dimensions
from regression.exact import self_attention_exact, to_decimal, to_float

pytestmark = pytest.mark.semantics


def exact_result(problem: AttentionProblem, scaled: bool) -> tuple[np.ndarray, np.ndarray]:
    """X' and attentions to ~1e-45 relative: the truth, for every practical purpose."""
    X_prime, attentions = self_attention_exact(*(to_decimal(a.tolist()) for a in problem.arrays()), scaled=scaled)
    return np.array(to_float(X_prime)).reshape(problem.D_v, problem.N), np.array(to_float(attentions))


def naive_result(problem: AttentionProblem, scale: float, dtype: type[np.floating]) -> tuple[np.ndarray, np.ndarray]:
    """The textbook computation in `dtype`: Q, K, V, shifted exp, normalise, V A."""
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = (a.astype(dtype) for a in problem.arrays())
    Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
    logits = (K.T @ Q) * dtype(scale)
    weights = np.exp(logits - logits.max(axis=0, keepdims=True))
    A = weights / weights.sum(axis=0, keepdims=True)
    return V @ A, A


@settings(max_examples=max(10, settings().max_examples // 2))  # 50-digit arithmetic is slow
@given(problem=attention_problems(dimensions(max_side=4)))
def test_output_agrees_with_a_50_digit_computation(implementation: Implementation, problem: AttentionProblem) -> None:
    """|f(X) - exact| <= 2 |naive(X) - exact| + the forward-error bound of one evaluation, entry by entry.

    As in FlashAttention's tests: the naive computation in the same precision shows how much rounding this
    very problem causes; twice that admits any implementation that rounds differently but as well. The floor,
    the forward-error bound of tolerances.ErrorBounds, covers entries that the naive computation happens to
    get exactly right: no correct implementation exceeds it. The differential check thus flags only errors
    no rounding explains, whatever law they break.
    """
    result = implementation(problem)
    dtype = np.float32 if result.eps > np.finfo(np.float64).eps else np.float64
    exact_X, exact_A = exact_result(problem, implementation.kind == "scaled")
    naive_X, naive_A = naive_result(problem, implementation.scale(problem.D_q), dtype)
    bounds = implementation.bounds(problem, result.eps)
    assert_at_most(
        np.abs(result.X_prime - exact_X),
        2 * np.abs(naive_X - exact_X),
        bounds.x_prime,
        what="|X' - exact| exceeds twice the naive computation's error plus the rounding floor",
    )
    if result.attentions is not None:
        assert_at_most(
            np.abs(result.attentions - exact_A),
            2 * np.abs(naive_A - exact_A),
            np.broadcast_to(bounds.attentions, exact_A.shape),
            what="|attentions - exact| exceeds twice the naive error plus the rounding floor",
        )


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.uniform_attention, b.scale_by_sqrt_D, b.values_without_bias])
def test_output_agrees_with_a_50_digit_computation_catches(bug: object) -> None:
    assert_law_fails(test_output_agrees_with_a_50_digit_computation, implementation=b.broken(b.x_prime_only(bug)))
