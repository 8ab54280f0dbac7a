"""Which symmetry survives positions: without them self-attention is equivariant under every permutation
(eq. 12.18); absolute positions (section 12.4.1, eqs. 12.16-12.17) break it; positions that move with the
inputs restore it.

The battery adds the positions itself (X + Pi, mode "input") for any implementation; implementations that
take the keyword `positional=` are also checked in mode "query_key" (Pi for queries and keys only).

One topic a module: every law of positions is here: their symmetry, each positional mode pinned exactly, and the
sinusoidal encoding itself (attention.sinusoidal_positional_encoding).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from numpy.typing import NDArray

from attention import sinusoidal_positional_encoding
from properties.catalogues import mistakes as b
from properties.helpers.checks import (
    LawViolation,
    assert_at_most,
    assert_close,
    call,
    option_bounds,
    supported,
)
from properties.helpers.implementations import Implementation, Result
from properties.helpers.meta import assert_law_fails
from properties.helpers.problems import AttentionOptions, AttentionProblem
from properties.helpers.strategies import (
    attention_problems,
    position_sensitive_witnesses,
    problems_with_options,
    problems_with_positions_and_permutations,
)
from properties.helpers.tolerances import FLOAT64_EPS

pytestmark = pytest.mark.semantics
Array = NDArray[np.float64]
Case = tuple[AttentionProblem, AttentionOptions]


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


def assert_positions_are_their_problem_without_positions(
    implementation: Implementation, case: Case, mode: str, what: str
) -> None:
    """f(X; positional=Pi, positional_mode=mode) must equal f on the problem that carries the positions itself
    (AttentionOptions.without_positions), on every query that sees a key."""
    implementation.require("positional", "positional_mode")
    problem, options = case
    options = supported(implementation, options).replace(positional_mode=mode)
    first = call(implementation, problem, options)
    second = call(implementation, options.without_positions(problem), options.replace(positional=None))
    seen = options.sees_a_key(problem.N)
    bounds = option_bounds(implementation, problem, options, max(first.eps, second.eps))
    assert_close(first.X_prime[:, seen], second.X_prime[:, seen], (bounds + bounds).x_prime[:, seen],
                 what=f"X' with positions in mode {mode} against {what}")  # fmt: skip


@given(case=problems_with_options(positional=True))
def test_positions_in_input_mode_are_added_to_the_inputs(implementation: Implementation, case: Case) -> None:
    """f(X; positional=Pi, positional_mode="input") = f(X + Pi): the positions reach queries, keys and values
    (section 12.4.1), whatever the other options."""
    assert_positions_are_their_problem_without_positions(implementation, case, "input", "X' of X + Pi")


@pytest.mark.meta
@pytest.mark.parametrize(
    "bug",
    [
        b.positions_ignored,
        b.positions_subtracted,
        b.positions_transposed_when_square,
        b.positions_never_in_the_values,
        b.positions_dropped_with_other_options,
    ],
)
def test_positions_in_input_mode_are_added_to_the_inputs_catches(bug: Any) -> None:
    assert_law_fails(test_positions_in_input_mode_are_added_to_the_inputs, implementation=b.broken(bug))


@given(case=problems_with_options(positional=True))
def test_positions_in_query_key_mode_reach_the_queries_and_keys_only(
    implementation: Implementation, case: Case
) -> None:
    """f(X; positional=Pi, positional_mode="query_key") = f([X; Pi]) with weights [omega_q, omega_q],
    [omega_k, omega_k] and [omega_v, 0]: queries omega_q (X + Pi) + beta_q and keys likewise, values
    omega_v X + beta_v (eqs. 12.16-12.17), whatever the other options. Needs X' only."""
    assert_positions_are_their_problem_without_positions(implementation, case, "query_key", "the stacked problem")


@pytest.mark.meta
@pytest.mark.parametrize(
    "bug",
    [
        b.query_key_positions_ignored,
        b.query_key_positions_on_the_queries_only,
        b.query_key_positions_on_the_values_only,
        b.positions_always_in_the_values,
    ],
)
def test_positions_in_query_key_mode_catches(bug: Any) -> None:
    assert_law_fails(test_positions_in_query_key_mode_reach_the_queries_and_keys_only, implementation=b.broken(bug))


@given(case=problems_with_options(positional=True))
def test_the_positional_modes_differ_by_the_values_of_the_positions(implementation: Implementation, case: Case) -> None:
    """Both modes give the same attentions A, and f_input(X; Pi) - f_query_key(X; Pi) = omega_v Pi A: the modes
    differ only in whether the values carry the positions (eqs. 12.16-12.17)."""
    implementation.require("positional", "positional_mode")
    problem, options = case
    options = supported(implementation, options)
    assert options.positional is not None
    inputs = call(implementation, problem, options.replace(positional_mode="input"))
    query_key = call(implementation, problem, options.replace(positional_mode="query_key"))
    A_input, A_query_key = inputs.require_attentions(), query_key.require_attentions()
    seen = options.sees_a_key(problem.N)
    eps = max(inputs.eps, query_key.eps)
    bounds = option_bounds(implementation, problem, options.replace(positional_mode="input"), eps)
    twice = bounds + bounds
    assert_close(A_input[:, seen], A_query_key[:, seen], np.broadcast_to(twice.attentions, A_input.shape)[:, seen],
                 what="attentions in mode input against mode query_key")  # fmt: skip
    expected = problem.omega_v @ options.positional @ np.where(seen, A_input, 0.0)
    # Four terms, each within bounds.x_prime: the two evaluations, the error of A_input carried through
    # omega_v Pi (at most max_m |omega_v Pi|_dm r_n), and the float64 rounding of omega_v Pi A on the law's side.
    assert_close((inputs.X_prime - query_key.X_prime)[:, seen], expected[:, seen], 2 * twice.x_prime[:, seen],
                 what="f_input - f_query_key against omega_v Pi attentions")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.positions_never_in_the_values, b.positions_always_in_the_values])
def test_the_positional_modes_differ_catches(bug: Any) -> None:
    assert_law_fails(test_the_positional_modes_differ_by_the_values_of_the_positions, implementation=b.broken(bug))


# --- The sinusoidal encoding (attention.sinusoidal_positional_encoding) ---

Encoding = Callable[[int, int], Array]
MODES = ("input", "query_key")


@pytest.fixture(scope="session")
def encoding(pytestconfig: pytest.Config) -> Encoding:
    """The sinusoidal encoding under test: the reference's (skipped under --impl: it is not TARGET)."""
    if pytestconfig.getoption("--impl"):
        pytest.skip("a law of the reference's sinusoidal encoding, not of --impl TARGET")
    return sinusoidal_positional_encoding


def encode(encoding: Encoding, D: int, N: int) -> Array:
    Pi = np.asarray(encoding(D, N), dtype=np.float64)
    if Pi.shape != (D, N):
        raise LawViolation(f"the encoding returned shape {Pi.shape} for D={D}, N={N}; expected {(D, N)}")
    return Pi


def angle_rounding(D: int, N: int) -> float:
    """Bound on the error of sin or cos of n w (n < N, w <= 1): the angle is rounded by u (n w + 1), and the
    frequency itself by a few u relative, so each entry is off by at most 4 u (N + 1)."""
    return 4 * FLOAT64_EPS * (N + 1)


encoding_shapes = st.tuples(st.integers(1, 16), st.integers(1, 24))


@pytest.mark.semantics
@given(shape=encoding_shapes)
def test_sinusoidal_entries_lie_in_the_unit_interval(encoding: Encoding, shape: tuple[int, int]) -> None:
    """-1 <= Pi[d, n] <= 1 (every entry is a sine or a cosine)."""
    Pi = encode(encoding, *shape)
    assert_at_most(np.abs(Pi), 1.0, 0.0, what="|Pi[d, n]| must not exceed 1")


@pytest.mark.meta
def test_sinusoidal_entries_catches_unnormalised_encoding() -> None:
    assert_law_fails(test_sinusoidal_entries_lie_in_the_unit_interval, encoding=b.unnormalised_encoding)


@pytest.mark.semantics
@given(shape=encoding_shapes)
def test_sinusoidal_pairs_have_unit_norm(encoding: Encoding, shape: tuple[int, int]) -> None:
    """Pi[2i, n]^2 + Pi[2i+1, n]^2 = 1: each (sin, cos) pair is a point on the unit circle."""
    D, N = shape
    Pi = encode(encoding, D, N)
    pairs = D // 2
    norms = Pi[0 : 2 * pairs : 2] ** 2 + Pi[1 : 2 * pairs : 2] ** 2
    assert_close(norms, np.ones_like(norms), 4 * angle_rounding(D, N), what="sin^2 + cos^2 of each pair")


@pytest.mark.meta
def test_sinusoidal_pairs_have_unit_norm_catches_sines_only() -> None:
    assert_law_fails(test_sinusoidal_pairs_have_unit_norm, encoding=b.sines_only)


@pytest.mark.semantics
@given(shape=st.tuples(st.integers(2, 16), st.integers(2, 24)), data=st.data())
def test_shifting_positions_rotates_each_pair_independently_of_the_position(
    encoding: Encoding, shape: tuple[int, int], data: st.DataObject
) -> None:
    """Pi[:, n+k] = R_k Pi[:, n] with R_k block-diagonal 2x2 rotations that do not depend on n: R_k is read
    off positions 0 and k (Pi pair at 0 is (0, 1)), then checked at every other n."""
    D, N = shape
    k = data.draw(st.integers(1, N - 1), label="shift k")
    Pi = encode(encoding, D, N)
    pairs = D // 2
    s, c = Pi[0 : 2 * pairs : 2, k], Pi[1 : 2 * pairs : 2, k]  # R_k (0, 1)^T = (s, c)^T, so R_k = [[c, s], [-s, c]]
    sin_n, cos_n = Pi[0 : 2 * pairs : 2, : N - k], Pi[1 : 2 * pairs : 2, : N - k]
    rotated_sin = c[:, None] * sin_n + s[:, None] * cos_n
    rotated_cos = -s[:, None] * sin_n + c[:, None] * cos_n
    tolerance = 6 * angle_rounding(D, N)
    assert_close(Pi[0 : 2 * pairs : 2, k:], rotated_sin, tolerance, what=f"sine rows at n+{k} against R_{k} Pi[:, n]")
    assert_close(Pi[1 : 2 * pairs : 2, k:], rotated_cos, tolerance, what=f"cosine rows at n+{k} against R_{k} Pi[:, n]")


@pytest.mark.meta
def test_shifting_positions_rotates_each_pair_catches_quadratic_phase() -> None:
    assert_law_fails(
        test_shifting_positions_rotates_each_pair_independently_of_the_position, encoding=b.quadratic_phase
    )


@pytest.mark.semantics
@given(shape=st.tuples(st.integers(1, 8).map(lambda h: 2 * h), st.integers(2, 24)))
def test_dot_products_of_positions_depend_only_on_their_distance(encoding: Encoding, shape: tuple[int, int]) -> None:
    """Pi[:, m] . Pi[:, n] = sum_i cos((n - m) w_i) depends on n - m only (for even D; with odd D the lone last
    sine row adds sin(m w) sin(n w), which does not)."""
    D, N = shape
    Pi = encode(encoding, D, N)
    gram = Pi.T @ Pi
    tolerance = 4 * D * angle_rounding(D, N)
    for offset in range(-(N - 1), N):
        diagonal = np.diagonal(gram, offset)
        assert_close(diagonal, np.full_like(diagonal, diagonal[0]), tolerance,
                     what=f"Pi[:, m] . Pi[:, m + {offset}] must not depend on m")  # fmt: skip


@pytest.mark.meta
def test_dot_products_depend_only_on_distance_catches_quadratic_phase() -> None:
    assert_law_fails(test_dot_products_of_positions_depend_only_on_their_distance, encoding=b.quadratic_phase)


@pytest.mark.semantics
@given(shape=encoding_shapes)
def test_positions_have_distinct_encodings(encoding: Encoding, shape: tuple[int, int]) -> None:
    """Pi[:, m] != Pi[:, n] for m != n: the first pair alone, (sin n, cos n), never repeats at integers."""
    D, N = shape
    Pi = encode(encoding, D, N)
    distances = np.linalg.norm(Pi[:, :, None] - Pi[:, None, :], axis=0) + np.eye(N)
    if (distances <= 4 * angle_rounding(D, N)).any():
        m, n = (int(i) for i in np.argwhere(distances <= 4 * angle_rounding(D, N))[0])
        raise LawViolation(f"positions {m} and {n} have the same encoding {Pi[:, m].tolist()}")


@pytest.mark.meta
def test_positions_have_distinct_encodings_catches_a_full_turn_per_position() -> None:
    assert_law_fails(test_positions_have_distinct_encodings, encoding=b.period_two_pi)
