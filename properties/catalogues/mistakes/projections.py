"""Mistakes in the projections Q, K, V and their biases, and in forming the output."""

from __future__ import annotations

import numpy as np

from properties.catalogues.mistakes._base import Array, Pair, correct_attention, stable_softmax


def bias_tiled_for_three_inputs(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Broadcasts the biases with a hard-coded N = 3 (np.tile(beta, 3)): fails for every other N."""
    Q = omega_q @ X + np.tile(beta_q, (1, 3))
    K = omega_k @ X + np.tile(beta_k, (1, 3))
    V = omega_v @ X + np.tile(beta_v, (1, 3))
    A = stable_softmax((K.T @ Q) / np.sqrt(omega_q.shape[0]))
    return V @ A, A


def keys_from_query_weights(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Forms the keys with omega_q (a copy-paste slip): K = omega_q X + beta_k."""
    return correct_attention(X, omega_v, omega_q, omega_q, beta_v, beta_q, beta_k, scale=1 / np.sqrt(omega_q.shape[0]))


def values_without_bias(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Forgets beta_v: V = omega_v X."""
    return correct_attention(
        X, omega_v, omega_q, omega_k, 0 * beta_v, beta_q, beta_k, scale=1 / np.sqrt(omega_q.shape[0])
    )


def query_bias_on_keys(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Adds beta_q to the keys and beta_k to the queries."""
    return correct_attention(X, omega_v, omega_q, omega_k, beta_v, beta_k, beta_q, scale=1 / np.sqrt(omega_q.shape[0]))


def queries_without_bias(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Forgets beta_q: Q = omega_q X."""
    return correct_attention(
        X, omega_v, omega_q, omega_k, beta_v, 0 * beta_q, beta_k, scale=1 / np.sqrt(omega_q.shape[0])
    )


def without_biases(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Forgets every bias: Q = omega_q X, K = omega_k X, V = omega_v X."""
    return correct_attention(
        X, omega_v, omega_q, omega_k, 0 * beta_v, 0 * beta_q, 0 * beta_k, scale=1 / np.sqrt(omega_q.shape[0])
    )


def attentions_transposed_in_output(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Returns the right attention matrix but forms X' = V A^T."""
    _, A = correct_attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / np.sqrt(omega_q.shape[0]))
    return (omega_v @ X + beta_v) @ A.T, A


def residual_added(*arrays: Array) -> tuple[Array, Array]:
    """Adds the input to the output (a transformer block's residual, where self-attention alone was asked)."""
    X_prime, A = correct_attention(*arrays, scale=1 / np.sqrt(arrays[2].shape[0]))
    return X_prime + arrays[0], A
