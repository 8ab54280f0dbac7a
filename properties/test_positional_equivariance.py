"""Which symmetry survives positions: without them self-attention is equivariant under every permutation
(eq. 12.18); absolute positions (section 12.4.1, eqs. 12.16-12.17) break it; positions that move with the
inputs restore it.

The battery adds the positions itself (X + Pi, mode "input") for any implementation; implementations that
take the keyword `positional=` are also checked in mode "query_key" (Pi for queries and keys only).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from numpy.typing import NDArray

from properties import broken as b
from properties.checks import LawViolation, assert_close
from properties.implementation import Implementation, Result
from properties.meta import assert_law_fails
from properties.problem import AttentionProblem
from properties.strategies import (
    attention_problems,
    position_sensitive_witnesses,
    problems_with_positions_and_permutations,
)

pytestmark = pytest.mark.semantics
Array = NDArray[np.float64]


def with_positions(implementation: Implementation, problem: AttentionProblem, Pi: Array, mode: str) -> Result:
    """f with positions Pi: X + Pi for mode "input" (any implementation), the keyword otherwise."""
    if mode == "input" and not implementation.accepts("positional"):
        return implementation(problem.replace(X=problem.X + Pi))
    implementation.require("positional", "positional_mode")
    return implementation(problem, positional=Pi, positional_mode=mode)


LEARNED = "learned"


@given(witness=position_sensitive_witnesses())
def test_absolute_positions_break_equivariance(
    implementation: Implementation, witness: tuple[AttentionProblem, Array]
) -> None:
    """With X = [x, x] and positions added to the inputs, x'_0 != x'_1, by a margin: equivariance (eq. 12.18)
    would force x'_0 = x'_1, since swapping two identical inputs changes nothing.

    Margin. With delta = pi_0 - pi_1 and z_n = s (k_0 - k_1)^T q_n, a_0n = sigmoid(z_n) and
    x'_0 - x'_1 = (a_00 - a_01) (v_0 - v_1) = (sigmoid(z_0) - sigmoid(z_1)) omega_v delta, where
    z_0 - z_1 = s delta^T omega_q^T omega_k delta = s (omega_q delta)^T M (omega_q delta) > 0. On [z_1, z_0] the
    sigmoid's slope is at least exp(-Z) / 4 with Z = max |z_n| <= 2 max|logit|, so
    |x'_0 - x'_1|_inf >= (z_0 - z_1) exp(-Z) / 4 |omega_v delta|_inf.
    """
    problem, Pi = witness
    positioned = problem.replace(X=problem.X + Pi)
    result = with_positions(implementation, problem, Pi, "input")
    s = implementation.scale(problem.D_q)
    delta = Pi[:, 0] - Pi[:, 1]
    gap = s * float((problem.omega_q @ delta) @ (problem.omega_k @ delta))
    bounds = implementation.bounds(positioned, result.eps)
    Z = 2 * float(bounds.logit_bound.max())
    # The law-side gap and omega_v delta are float64 sums of at most 2D + D_q products: k u relative.
    rounding = 1 - bounds.steps * bounds.eps
    margin = gap * rounding * np.exp(-Z) / 4 * float(np.abs(problem.omega_v @ delta).max()) * rounding
    difference = float(np.abs(result.X_prime[:, 0] - result.X_prime[:, 1]).max())
    tolerance = 2 * float(bounds.x_prime.max())
    note(f"logit gap difference {gap:.6g}, Z = {Z:.6g}, margin {margin:.6g}, measured {difference:.6g}")
    if not difference >= margin - tolerance:
        raise LawViolation(
            f"x'_0 and x'_1 differ by {difference:.6g} for identical inputs at distinct positions; the positions "
            f"must make them differ by at least {margin:.6g} (tolerance {tolerance:.3g})"
        )


@pytest.mark.meta
def test_absolute_positions_break_equivariance_catches_position_blind_outputs() -> None:
    assert_law_fails(test_absolute_positions_break_equivariance, implementation=b.broken(b.uniform_attention))


@pytest.mark.meta
def test_absolute_positions_break_equivariance_catches_ignored_keyword() -> None:
    assert_law_fails(test_absolute_positions_break_equivariance, implementation=b.broken(b.positions_ignored))


@pytest.mark.parametrize("mode", ["input", "query_key"])
@given(case=problems_with_positions_and_permutations())
def test_positions_moved_with_the_inputs_restore_equivariance(
    implementation: Implementation, mode: str, case: tuple[AttentionProblem, Array, NDArray[np.intp]]
) -> None:
    """f(X P; Pi P) = f(X; Pi) P for every permutation P: the positions travel with their inputs."""
    problem, Pi, p = case
    original = with_positions(implementation, problem, Pi, mode)
    permuted = with_positions(implementation, problem.with_columns(p), Pi[:, p], mode)
    with_pi = problem.replace(X=problem.X + np.abs(Pi)) if mode == "input" else problem
    magnitudes = with_pi.replace(X=np.abs(problem.X) + np.abs(Pi))
    bounds = implementation.bounds(magnitudes, max(original.eps, permuted.eps))
    assert_close(permuted.X_prime, original.X_prime[:, p], (bounds + bounds).x_prime[:, p],
                 what=f"X' with inputs and positions permuted by {p.tolist()} (mode {mode})")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("mode", ["input", "query_key"])
def test_positions_moved_with_the_inputs_catches_reversed_positions(mode: str) -> None:
    assert_law_fails(test_positions_moved_with_the_inputs_restore_equivariance,
                     implementation=b.broken(b.positions_reversed), mode=mode)  # fmt: skip


@pytest.mark.meta
def test_positions_restore_equivariance_catches_positional_bias() -> None:
    assert_law_fails(test_positions_moved_with_the_inputs_restore_equivariance,
                     implementation=b.broken(b.positional_bias), mode="input")  # fmt: skip


@pytest.mark.parametrize("mode", ["input", "query_key"])
@given(problem=attention_problems(), n=st.integers(2, 6))
def test_zero_positions_keep_identical_inputs_identical(
    implementation: Implementation, mode: str, problem: AttentionProblem, n: int
) -> None:
    """Control: with Pi = 0, identical inputs give identical outputs again (no loss without positions)."""
    repeated = problem.with_columns(np.zeros(n, dtype=np.intp))
    result = with_positions(implementation, repeated, np.zeros((problem.D, n)), mode)
    bounds = implementation.bounds(repeated, result.eps)
    assert_close(result.X_prime, np.broadcast_to(result.X_prime[:, :1], result.X_prime.shape),
                 (bounds + bounds).x_prime, what=f"identical inputs with Pi = 0 (mode {mode})")  # fmt: skip


@pytest.mark.meta
def test_zero_positions_keep_identical_inputs_identical_catches_built_in_positions() -> None:
    assert_law_fails(test_zero_positions_keep_identical_inputs_identical,
                     implementation=b.broken(b.adds_its_own_positions), mode="input")  # fmt: skip
