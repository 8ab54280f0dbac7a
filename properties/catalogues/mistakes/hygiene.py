"""Correct numbers, bad manners: inputs modified, results not reproducible, stale caches."""

from __future__ import annotations

from typing import Any

import numpy as np

from properties.catalogues.mistakes._base import Array, Pair, correct_attention


def mutates_inputs(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Correct output, but centres X in place (a caller's array is changed)."""
    result = correct_attention(
        X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / np.sqrt(omega_q.shape[0])
    )
    X -= X.mean() + 1.0
    return result


def nondeterministic_order(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Sums the values in a random order on every call: equal within rounding, not bitwise reproducible."""
    _, A = correct_attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / np.sqrt(omega_q.shape[0]))
    V = omega_v @ X + beta_v
    order = np.random.default_rng().permutation(X.shape[1])
    wobble = np.nextafter(1.0, 2.0) if np.random.default_rng().random() < 0.5 else 1.0
    return (V[:, order] * wobble) @ A[order, :], A


_CACHE: dict[Any, Pair] = {}


def cached_by_shape(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Caches its result by the shapes of the arguments, so a second problem of the same shape gets a stale answer."""
    key = tuple(a.shape for a in (X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k))
    if key not in _CACHE:
        _CACHE[key] = correct_attention(
            X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / np.sqrt(omega_q.shape[0])
        )
    X_prime, A = _CACHE[key]
    return X_prime.copy(), A.copy()
