"""Mistakes in positions: a built-in positional bias, and the positional option (each tagged with `mistake`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from attention import scaled_dot_product_self_attention, sinusoidal_positional_encoding
from properties.catalogues.mistakes._base import Array, Pair, _reference, mistake, stable_softmax


def positional_bias(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Favours earlier keys by a bias of -0.5 per position: no longer permutation equivariant."""
    Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
    N = X.shape[1]
    A = stable_softmax((K.T @ Q) / np.sqrt(omega_q.shape[0]) - 0.5 * np.arange(N).reshape(-1, 1))
    return V @ A, A


@mistake("positional (input), positional (query_key)", "reversed")
def positions_reversed(*arrays: Array, positional: Any = None, positional_mode: Any = "input") -> Any:
    """Reads the positions back to front: Pi[:, ::-1]."""
    Pi = None if positional is None else np.asarray(positional)[:, ::-1]
    return scaled_dot_product_self_attention(*arrays, positional=Pi, positional_mode=positional_mode)


@mistake("positional (input)", "ignored")
def adds_its_own_positions(*arrays: Array) -> Any:
    """Always adds a sinusoidal encoding to X, whatever positions the caller meant."""
    X = arrays[0]
    return scaled_dot_product_self_attention(X + 10 * sinusoidal_positional_encoding(*X.shape), *arrays[1:])


@mistake("positional (input), positional (query_key)", "ignored")
def positions_ignored(*arrays: Array, positional: Any = None, positional_mode: str = "input", **options: Any) -> Any:
    """Takes positional= and positional_mode= and ignores them."""
    return _reference(arrays, **options)


@mistake("positional (input)", "wrong sign")
def positions_subtracted(*arrays: Array, positional: Any = None, positional_mode: str = "input", **options: Any) -> Any:
    """Subtracts the positions: X - Pi."""
    Pi = None if positional is None else -np.asarray(positional)
    return _reference(arrays, positional=Pi, positional_mode=positional_mode, **options)


@mistake("positional (input), positional (query_key)", "transposed")
def positions_transposed_when_square(
    *arrays: Array, positional: Any = None, positional_mode: str = "input", **options: Any
) -> Any:
    """Reads Pi in the row convention (N x D, one position per row) and transposes it whenever it is square."""
    Pi = positional
    if Pi is not None and np.shape(Pi)[0] == np.shape(Pi)[1]:
        Pi = np.asarray(Pi).T
    return _reference(arrays, positional=Pi, positional_mode=positional_mode, **options)


@mistake("positional (input)", "wrong operand")
def positions_never_in_the_values(
    *arrays: Array, positional: Any = None, positional_mode: str = "input", **options: Any
) -> Any:
    """Adds the positions to the queries and keys only, in both modes (mode "input" loses them in the values)."""
    return _reference(arrays, positional=positional, positional_mode="query_key", **options)


@mistake("positional (query_key)", "wrong operand")
def positions_always_in_the_values(
    *arrays: Array, positional: Any = None, positional_mode: str = "input", **options: Any
) -> Any:
    """Adds the positions to the inputs in both modes (mode "query_key" puts them into the values too)."""
    return _reference(arrays, positional=positional, positional_mode="input", **options)


@mistake("positional (query_key)", "ignored")
def query_key_positions_ignored(
    *arrays: Array, positional: Any = None, positional_mode: str = "input", **options: Any
) -> Any:
    """Drops the positions in mode "query_key" (only mode "input" uses them)."""
    used = positional if positional_mode == "input" else None
    return _reference(arrays, positional=used, positional_mode="input", **options)


def _positions_reaching(
    arrays: tuple[Array, ...], Pi: Any, *, queries: bool, keys: bool, values: bool
) -> tuple[Array, ...]:
    """The arguments with inputs [X; Pi] and weights [omega, omega] (Pi reaches that projection) or [omega, 0]."""
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = arrays

    def weights(omega: Array, reached: bool) -> Array:
        return np.hstack([omega, omega if reached else np.zeros_like(omega)])

    X_stacked = np.vstack([X, np.asarray(Pi)])
    return (
        X_stacked,
        weights(omega_v, values),
        weights(omega_q, queries),
        weights(omega_k, keys),
        beta_v,
        beta_q,
        beta_k,
    )


@mistake("positional (query_key)", "wrong operand")
def query_key_positions_on_the_queries_only(
    *arrays: Array, positional: Any = None, positional_mode: str = "input", **options: Any
) -> Any:
    """In mode "query_key" adds the positions to the queries and forgets the keys."""
    if positional is None or positional_mode == "input":
        return _reference(arrays, positional=positional, positional_mode=positional_mode, **options)
    return _reference(_positions_reaching(arrays, positional, queries=True, keys=False, values=False), **options)


@mistake("positional (query_key)", "wrong operand")
def query_key_positions_on_the_values_only(
    *arrays: Array, positional: Any = None, positional_mode: str = "input", **options: Any
) -> Any:
    """In mode "query_key" adds the positions to the values instead of the queries and keys."""
    if positional is None or positional_mode == "input":
        return _reference(arrays, positional=positional, positional_mode=positional_mode, **options)
    return _reference(_positions_reaching(arrays, positional, queries=False, keys=False, values=True), **options)


@mistake("positional + mask, positional + causal, positional + bias", "ignored")
def positions_dropped_with_other_options(
    *arrays: Array, positional: Any = None, positional_mode: str = "input", **options: Any
) -> Any:
    """Forgets the positions when a mask, causal or a bias is given too (a second code path without them)."""
    if any(value is not None and value is not False for value in options.values()):
        return _reference(arrays, **options)
    return _reference(arrays, positional=positional, positional_mode=positional_mode)


# --- Mistakes in a positional encoding, f(D, N) -> (D, N): what the sinusoidal-encoding laws catch ---


def _frequencies(D: int) -> Array:
    """1 / 10000^(2i/D) for each (sin, cos) pair i."""
    return np.asarray(10000.0 ** (-2.0 * np.arange((D + 1) // 2) / D))


def unnormalised_encoding(D: int, N: int) -> Array:
    """The sinusoidal encoding with position n scaled by n + 1: entries leave [-1, 1]."""
    return np.asarray(sinusoidal_positional_encoding(D, N) * (1 + np.arange(N)))


def sines_only(D: int, N: int) -> Array:
    """Sines in every row, no cosines: the pairs lose their unit norm."""
    angles = np.outer(np.repeat(_frequencies(D), 2)[:D], np.arange(N))
    return np.asarray(np.sin(angles))


def from_angles(D: int, angles: Array) -> Array:
    """An encoding laid out as the sinusoidal one: sin of pair i's angles in row 2i, cos in row 2i + 1."""
    Pi = np.empty((D, angles.shape[1]))
    Pi[0::2], Pi[1::2] = np.sin(angles), np.cos(angles[: D // 2])
    return Pi


def quadratic_phase(D: int, N: int) -> Array:
    """Angles growing as n^2: a shift no longer rotates each pair by an angle independent of n."""
    return from_angles(D, np.outer(_frequencies(D), np.arange(N) ** 2 / max(N, 1)))


def period_two_pi(D: int, N: int) -> Array:
    """A full turn per position (frequency 2 pi): every position gets the same encoding."""
    return from_angles(D, np.outer(np.full((D + 1) // 2, 2 * np.pi), np.arange(N)))
