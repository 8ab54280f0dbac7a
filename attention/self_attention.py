"""Self-attention in the book's column convention (eqs. 12.6-12.9): one core, scaled and unscaled."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from attention._checks import FloatArray, Problem, check_self_attention_arguments
from attention.softmax import _softmax_cols


def self_attention(
    X: ArrayLike,
    omega_v: ArrayLike,
    omega_q: ArrayLike,
    omega_k: ArrayLike,
    beta_v: ArrayLike,
    beta_q: ArrayLike,
    beta_k: ArrayLike,
) -> tuple[FloatArray, FloatArray]:
    """Dot-product self-attention, book eqs. 12.6-12.8; returns (X_prime, attentions).

    X is D x N with the inputs as columns; omega_q, omega_k are D_q x D; omega_v is D_v x D; each beta is
    (rows, 1) or (rows,). With Q = omega_q X + beta_q 1^T, K = omega_k X + beta_k 1^T and
    V = omega_v X + beta_v 1^T: attentions = softmax_cols(K^T Q) is N x N, attentions[m, n] being the
    weight of key m for query n (every column sums to 1), and X_prime = V attentions is D_v x N.
    """
    return _self_attention(check_self_attention_arguments(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k), False)


def scaled_dot_product_self_attention(
    X: ArrayLike,
    omega_v: ArrayLike,
    omega_q: ArrayLike,
    omega_k: ArrayLike,
    beta_v: ArrayLike,
    beta_q: ArrayLike,
    beta_k: ArrayLike,
) -> tuple[FloatArray, FloatArray]:
    """Scaled dot-product self-attention, book eq. 12.9; returns (X_prime, attentions).

    As `self_attention`, with attentions = softmax_cols(K^T Q / sqrt(D_q)), where D_q = omega_q.shape[0]
    is the dimension of the queries and keys (not of the inputs).
    """
    return _self_attention(check_self_attention_arguments(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k), True)


def _check_no_overflow(what: str, array: FloatArray, remedy: str) -> None:
    if not np.isfinite(array).all():
        raise ValueError(
            f"{what} overflow {array.dtype} (largest finite value {np.finfo(array.dtype).max:.3g}); {remedy}"
        )


def _self_attention(problem: Problem, scaled: bool) -> tuple[FloatArray, FloatArray]:
    """The numerical core, on checked arguments: projections, logits, column softmax, weighted sum."""
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = problem
    # Overflow of a projection or of the logits is reported below as a ValueError rather than
    # as a RuntimeWarning followed by inf or NaN in the result.
    with np.errstate(over="ignore", invalid="ignore"):
        queries = omega_q @ X + beta_q
        keys = omega_k @ X + beta_k
        values = omega_v @ X + beta_v
        logits = keys.T @ queries
        if scaled:
            logits /= np.sqrt(logits.dtype.type(omega_q.shape[0]))
    _check_no_overflow("the values V = omega_v X + beta_v", values, "reduce the magnitudes of X, omega_v, beta_v")
    _check_no_overflow(
        "the logits K^T Q (with Q, K)", logits, "reduce the magnitudes of X, omega_q, omega_k, beta_q, beta_k"
    )
    attentions = _softmax_cols(logits, overwrite=True)
    return values @ attentions, attentions
