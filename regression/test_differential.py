"""Differential check: the implementation under test against an independent 50-digit computation."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from properties.catalogues import mistakes as b
from properties.helpers.checks import assert_at_most
from properties.helpers.implementations import Implementation
from properties.helpers.meta import assert_law_fails
from properties.helpers.problems import AttentionProblem
from properties.helpers.strategies import (
    TWO_SLABS_N,
    attention_problems,
    dimensions,
    long_examples,
    long_sequence_example,
    long_sequence_problems,
)
from properties.helpers.tolerances import dtype_of
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
    dtype = dtype_of(result.eps)
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


@functools.lru_cache(maxsize=64)
def exact_columns(problem: AttentionProblem, scaled: bool, columns: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Columns `columns` of X' and of attentions to ~1e-45 relative, from a 50-digit computation restricted to
    those queries (the keys and values of every input still enter). Cached by problem object: a replayed
    example (tests/catalogues/test_correct.py) is computed once."""
    queries = problem.with_columns(np.asarray(columns, dtype=np.intp))
    X_prime, attentions = self_attention_exact(
        *(to_decimal(a.tolist()) for a in problem.arrays()), scaled=scaled, queries=to_decimal(queries.X.tolist())
    )
    return np.array(to_float(X_prime)).reshape(problem.D_v, len(columns)), np.array(to_float(attentions))


@st.composite
def long_sequence_problems_with_queries(draw: st.DrawFn) -> tuple[AttentionProblem, tuple[int, ...]]:
    """A long-sequence problem and up to three of its queries to check exactly, the last one always among them
    (it lies in the last, partial block of every tile size)."""
    problem = draw(long_sequence_problems())
    others = draw(st.lists(st.integers(0, problem.N - 1), min_size=2, max_size=2), label="queries checked")
    return problem, tuple(sorted({problem.N - 1, *others}))


@settings(max_examples=long_examples())
@given(case=long_sequence_problems_with_queries())
# 953: the first query of the reference's second slab (2^20 // 1100 rows a slab).
@example(case=(long_sequence_example(TWO_SLABS_N), (0, 953, 1099)))
def test_long_sequences_agree_with_a_50_digit_computation(
    implementation: Implementation, case: tuple[AttentionProblem, tuple[int, ...]]
) -> None:
    """The differential check above for N from 15 to 700, on three drawn queries (the last among them):
    |f(X) - exact| <= 2 |naive(X) - exact| + the forward-error bound of one evaluation."""
    problem, checked = case
    columns = np.asarray(checked, dtype=np.intp)
    result = implementation(problem)
    exact_X, exact_A = exact_columns(problem, implementation.kind == "scaled", checked)
    naive_X, naive_A = naive_result(problem, implementation.scale(problem.D_q), dtype_of(result.eps))
    bounds = implementation.bounds(problem, result.eps)
    assert_at_most(
        np.abs(result.X_prime[:, columns] - exact_X),
        2 * np.abs(naive_X[:, columns] - exact_X),
        bounds.x_prime[:, columns],
        what=f"|X' - exact| (queries {columns.tolist()}) exceeds twice the naive error plus the rounding floor",
    )
    if result.attentions is not None:
        assert_at_most(
            np.abs(result.attentions[:, columns] - exact_A),
            2 * np.abs(naive_A[:, columns] - exact_A),
            np.broadcast_to(bounds.attentions[:, columns], exact_A.shape),
            what=f"|attentions - exact| (queries {columns.tolist()}) exceeds twice the naive error plus the floor",
        )


@pytest.mark.meta
@pytest.mark.filterwarnings("ignore:Generating overly large repr")  # a long example prints as ~35 kB of code
@pytest.mark.parametrize("bug", [b.blocked_dropping_the_tail_block, b.blocked_reusing_the_first_query_block])
def test_long_sequences_agree_with_a_50_digit_computation_catches(bug: object) -> None:
    assert_law_fails(test_long_sequences_agree_with_a_50_digit_computation, implementation=b.broken(bug))
