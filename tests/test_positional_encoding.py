"""The laws of the sinusoidal positional encoding (book section 12.4.1), for the reference's encoding."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray

from attention import sinusoidal_positional_encoding
from properties.checks import LawViolation, assert_at_most, assert_close
from properties.meta import assert_law_fails
from properties.tolerances import FLOAT64_EPS

Array = NDArray[np.float64]
Encoding = Callable[[int, int], Array]
MODES = ("input", "query_key")


@pytest.fixture(scope="session")
def encoding() -> Encoding:
    """The sinusoidal encoding under test: the reference's."""
    return sinusoidal_positional_encoding


def encode(encoding: Encoding, D: int, N: int) -> Array:
    Pi = np.asarray(encoding(D, N), dtype=np.float64)
    if Pi.shape != (D, N):
        raise LawViolation(f"the encoding returned shape {Pi.shape} for D={D}, N={N}; expected {(D, N)}")
    return Pi


def frequencies(D: int) -> Array:
    """1 / 10000^(2i/D) for each (sin, cos) pair i."""
    return np.asarray(10000.0 ** (-2.0 * np.arange((D + 1) // 2) / D))


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


def unnormalised_encoding(D: int, N: int) -> Array:
    return np.asarray(sinusoidal_positional_encoding(D, N) * (1 + np.arange(N)))


@pytest.mark.meta
def test_sinusoidal_entries_catches_unnormalised_encoding() -> None:
    assert_law_fails(test_sinusoidal_entries_lie_in_the_unit_interval, encoding=unnormalised_encoding)


@pytest.mark.semantics
@given(shape=encoding_shapes)
def test_sinusoidal_pairs_have_unit_norm(encoding: Encoding, shape: tuple[int, int]) -> None:
    """Pi[2i, n]^2 + Pi[2i+1, n]^2 = 1: each (sin, cos) pair is a point on the unit circle."""
    D, N = shape
    Pi = encode(encoding, D, N)
    pairs = D // 2
    norms = Pi[0 : 2 * pairs : 2] ** 2 + Pi[1 : 2 * pairs : 2] ** 2
    assert_close(norms, np.ones_like(norms), 4 * angle_rounding(D, N), what="sin^2 + cos^2 of each pair")


def sines_only(D: int, N: int) -> Array:
    angles = np.outer(np.repeat(frequencies(D), 2)[:D], np.arange(N))
    return np.asarray(np.sin(angles))


@pytest.mark.meta
def test_sinusoidal_pairs_have_unit_norm_catches_sines_only() -> None:
    assert_law_fails(test_sinusoidal_pairs_have_unit_norm, encoding=sines_only)


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


def from_angles(D: int, angles: Array) -> Array:
    """An encoding laid out as the sinusoidal one: sin of pair i's angles in row 2i, cos in row 2i + 1."""
    Pi = np.empty((D, angles.shape[1]))
    Pi[0::2], Pi[1::2] = np.sin(angles), np.cos(angles[: D // 2])
    return Pi


def quadratic_phase(D: int, N: int) -> Array:
    return from_angles(D, np.outer(frequencies(D), np.arange(N) ** 2 / max(N, 1)))


@pytest.mark.meta
def test_shifting_positions_rotates_each_pair_catches_quadratic_phase() -> None:
    assert_law_fails(test_shifting_positions_rotates_each_pair_independently_of_the_position, encoding=quadratic_phase)


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
    assert_law_fails(test_dot_products_of_positions_depend_only_on_their_distance, encoding=quadratic_phase)


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


def period_two_pi(D: int, N: int) -> Array:
    return from_angles(D, np.outer(np.full((D + 1) // 2, 2 * np.pi), np.arange(N)))


@pytest.mark.meta
def test_positions_have_distinct_encodings_catches_a_full_turn_per_position() -> None:
    assert_law_fails(test_positions_have_distinct_encodings, encoding=period_two_pi)
