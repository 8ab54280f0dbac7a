"""Mistakes in the softmax: over the wrong axis, of transposed logits, unshifted, uniform; and the column softmax's own
mistakes, f(data).
"""

from __future__ import annotations

import numpy as np

from properties.catalogues.mistakes._base import Array, Pair, mistake, stable_softmax


def softmax_over_rows(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Normalises each row of K^T Q (over the queries) instead of each column (over the keys)."""
    Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
    A = stable_softmax((K.T @ Q) / np.sqrt(omega_q.shape[0]), axis=1)
    return V @ A, A


def transposed_logits(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Uses Q^T K for K^T Q: the weight of key m for query n becomes q_m . k_n."""
    Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
    A = stable_softmax((Q.T @ K) / np.sqrt(omega_q.shape[0]))
    return V @ A, A


def notebook_softmax(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Correct, but with the notebook's softmax_cols (no shift by the column max): overflows for large logits."""
    Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
    with np.errstate(over="ignore", invalid="ignore"):
        exp_values = np.exp((K.T @ Q) / np.sqrt(omega_q.shape[0]))
        A = exp_values / exp_values.sum(axis=0, keepdims=True)
    return V @ A, A


@mistake("none", "overflow within the returned dtype's range")
def float32_notebook_softmax(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """The notebook's unshifted softmax_cols in float32, returned in float32: exp overflows for logits above ~88,
    well within float32's range (problems beyond that range are set aside; this overflow is not)."""
    x, w_v, w_q, w_k, b_v, b_q, b_k = (
        np.asarray(a, dtype=np.float32) for a in (X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k)
    )
    Q, K, V = w_q @ x + b_q, w_k @ x + b_k, w_v @ x + b_v
    with np.errstate(over="ignore", invalid="ignore"):
        exp_values = np.exp((K.T @ Q) / np.float32(np.sqrt(w_q.shape[0])))
        A = exp_values / exp_values.sum(axis=0, keepdims=True)
        return V @ A, A


def uniform_attention(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Ignores queries and keys: every column of attentions is uniform (the limit of a zero scale)."""
    N = X.shape[1]
    A = np.full((N, N), 1.0 / N)
    return (omega_v @ X + beta_v) @ A, A


def softmax_over_whole_matrix(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Normalises K^T Q over all N^2 entries at once instead of over each column."""
    Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
    logits = (K.T @ Q) / np.sqrt(omega_q.shape[0])
    A = np.exp(logits - logits.max())
    A /= A.sum()
    return V @ A, A


def row_softmax(data: Array) -> Array:
    shifted = np.exp(data - data.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))


def exp_without_normalisation(data: Array) -> Array:
    return np.asarray(np.exp(data - data.max(axis=0, keepdims=True)))


def softmax_over_all_entries(data: Array) -> Array:
    shifted = np.exp(data - data.max())
    return np.asarray(shifted / shifted.sum())


def reversed_softmax(data: Array) -> Array:
    shifted = np.exp(data.min(axis=0, keepdims=True) - data)
    return np.asarray(shifted / shifted.sum(axis=0, keepdims=True))


def notebook_softmax_cols(data: Array) -> Array:
    """The notebook's own softmax_cols: no shift, so exp overflows for logits above ~709."""
    with np.errstate(over="ignore", invalid="ignore"):
        exp_values = np.exp(data)
        return np.asarray(exp_values / exp_values.sum(axis=0))
