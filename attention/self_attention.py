"""Self-attention in the book's column convention (eqs. 12.6-12.9): one core, scaled and unscaled,
with optional positional encodings (section 12.4.1), masks and additive logit biases."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from attention._checks import (
    FloatArray,
    Problem,
    as_float_array,
    check_finite,
    check_matrix,
    check_self_attention_arguments,
)

PositionalMode = Literal["input", "query_key"]
POSITIONAL_MODES = ("input", "query_key")


def self_attention(
    X: ArrayLike,
    omega_v: ArrayLike,
    omega_q: ArrayLike,
    omega_k: ArrayLike,
    beta_v: ArrayLike,
    beta_q: ArrayLike,
    beta_k: ArrayLike,
    *,
    positional: ArrayLike | None = None,
    positional_mode: PositionalMode = "input",
    mask: ArrayLike | None = None,
    causal: bool = False,
    bias: ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Dot-product self-attention, book eqs. 12.6-12.8; returns (X_prime, attentions).

    X is D x N with the inputs as columns; omega_q, omega_k are D_q x D; omega_v is D_v x D; each beta is
    (rows, 1) or (rows,). With Q = omega_q X + beta_q 1^T, K = omega_k X + beta_k 1^T and
    V = omega_v X + beta_v 1^T: attentions = softmax_cols(K^T Q) is N x N, attentions[m, n] being the
    weight of key m for query n (every column sums to 1), and X_prime = V attentions is D_v x N.

    Keyword-only options:
    positional: a D x N matrix Pi (sinusoidal or learned) added to X, for queries, keys and values
        (positional_mode="input") or for queries and keys only (positional_mode="query_key").
    mask: boolean N x N, mask[m, n] True when key m is visible to query n; causal=True makes key m visible
        to query n iff m <= n (both may be given: a key must be visible under both).
    bias: an N x N matrix added to the (scaled) logits before the softmax (relative positions, ALiBi).
    Masked keys get weight exactly 0 and influence nothing. A query with no visible key gets a zero column
    in attentions and in X_prime.
    """
    problem = check_self_attention_arguments(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k)
    return _self_attention(problem, False, *_check_options(problem, positional, positional_mode, mask, causal, bias))


def scaled_dot_product_self_attention(
    X: ArrayLike,
    omega_v: ArrayLike,
    omega_q: ArrayLike,
    omega_k: ArrayLike,
    beta_v: ArrayLike,
    beta_q: ArrayLike,
    beta_k: ArrayLike,
    *,
    positional: ArrayLike | None = None,
    positional_mode: PositionalMode = "input",
    mask: ArrayLike | None = None,
    causal: bool = False,
    bias: ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Scaled dot-product self-attention, book eq. 12.9; returns (X_prime, attentions).

    As `self_attention` (and with the same keyword-only options), with
    attentions = softmax_cols(K^T Q / sqrt(D_q) + bias), where D_q = omega_q.shape[0] is the dimension of
    the queries and keys (not of the inputs).
    """
    problem = check_self_attention_arguments(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k)
    return _self_attention(problem, True, *_check_options(problem, positional, positional_mode, mask, causal, bias))


Options = tuple[FloatArray | None, bool, "NDArray[np.bool_] | None", FloatArray | None]


def _check_options(
    problem: Problem,
    positional: ArrayLike | None,
    positional_mode: str,
    mask: ArrayLike | None,
    causal: bool,
    bias: ArrayLike | None,
) -> Options:
    """Validate the keyword options; return (Pi, Pi for the values too?, visibility or None, bias or None)."""
    D, N = problem.X.shape
    Pi = None
    if positional_mode not in POSITIONAL_MODES:
        raise ValueError(f"positional_mode must be one of {POSITIONAL_MODES}; got {positional_mode!r}")
    if positional is not None:
        Pi = as_float_array("positional", positional)
        check_matrix("positional", Pi, D, N, f"(D, N) = ({D}, {N}), like X")
        check_finite("positional", Pi)
    visible = None
    if mask is not None:
        mask_array = np.asarray(mask)
        if mask_array.dtype != np.bool_:
            raise TypeError(
                f"mask must be a boolean array (True: key m visible to query n); got dtype {mask_array.dtype}"
            )
        check_matrix("mask", mask_array, N, N, f"(N, N) = ({N}, {N})")
        visible = mask_array
    if not isinstance(causal, bool | np.bool_):
        raise TypeError(f"causal must be True or False; got {causal!r}")
    if causal:
        triangle = np.tri(N, dtype=np.bool_).T  # [m, n] True iff m <= n
        visible = triangle if visible is None else visible & triangle
    bias_array = None
    if bias is not None:
        bias_array = as_float_array("bias", bias)
        check_matrix("bias", bias_array, N, N, f"(N, N) = ({N}, {N})")
        check_finite("bias", bias_array)
    return Pi, positional_mode == "input", visible, bias_array


def _check_no_overflow(what: str, array: FloatArray, remedy: str) -> None:
    if not np.isfinite(array).all():
        raise ValueError(
            f"{what} overflow {array.dtype} (largest finite value {np.finfo(array.dtype).max:.3g}); {remedy}"
        )


LOGIT_REMEDY = "reduce the magnitudes of X, omega_q, omega_k, beta_q, beta_k"


def _logits_may_overflow(queries: FloatArray, keys: FloatArray, offset: float = 0.0) -> bool:
    """Whether some logit could overflow: |k_m^T q_n| + |offset| <= D_q max|q| max|k| + |offset| must stay below
    half the largest float (the half covers rounding). When it does, no block of logits needs a check."""
    largest = queries.shape[0] * float(np.abs(queries).max(initial=0.0)) * float(np.abs(keys).max(initial=0.0))
    return not largest + abs(offset) < float(np.finfo(queries.dtype).max) / 2


def _self_attention(
    problem: Problem,
    scaled: bool,
    Pi: FloatArray | None = None,
    positions_in_values: bool = True,
    visible: NDArray[np.bool_] | None = None,
    bias: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray]:
    """The numerical core, on checked arguments: projections, logits, column softmax, weighted sum."""
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = problem
    # Overflow of a projection or of the logits is reported below as a ValueError rather than
    # as a RuntimeWarning followed by inf or NaN in the result.
    with np.errstate(over="ignore", invalid="ignore"):
        X_qk = X if Pi is None else X + Pi
        queries = omega_q @ X_qk + beta_q
        keys = omega_k @ X_qk + beta_k
        values = omega_v @ (X_qk if positions_in_values else X) + beta_v
    if visible is None:
        _check_no_overflow("the values V = omega_v X + beta_v", values, "reduce the magnitudes of X, omega_v, beta_v")
        return _dense_attention(queries, keys, values, scaled, bias)
    with np.errstate(over="ignore", invalid="ignore"):
        logits = keys.T @ queries
        if scaled:
            logits /= np.sqrt(logits.dtype.type(omega_q.shape[0]))
        if bias is not None:
            logits += bias
    # Masked keys: their logits and values must not matter, whatever they are (even inf or NaN here).
    seen = visible.any(axis=1)
    values[:, ~seen] = 0.0
    logits[~visible] = 0.0
    _check_no_overflow("the values V of visible keys", values, "reduce the magnitudes of X, omega_v, beta_v")
    _check_no_overflow("the visible logits K^T Q", logits, LOGIT_REMEDY)
    return values @ (attentions := _masked_softmax_cols(logits, visible)), attentions


# Rows of A^T computed at a time: about 2 MiB of float64 logits, so that the shift, exp and normalisation
# of a block run in cache right after the product that made it.
BLOCK_ELEMENTS = 1 << 18


def _dense_attention(
    queries: FloatArray, keys: FloatArray, values: FloatArray, scaled: bool, bias: FloatArray | None
) -> tuple[FloatArray, FloatArray]:
    """(V A, A) with A = softmax_cols(s K^T Q + bias), computed as A^T, a block of queries (rows) at a time.

    A^T is C-contiguous, so each block of queries is a contiguous slab whose row softmax is the column
    softmax of A; A is returned as the transposed view of A^T.
    """
    dtype = queries.dtype
    N = queries.shape[1]
    if scaled:
        queries = queries / np.sqrt(dtype.type(queries.shape[0]))
    attentions_t = np.empty((N, N), dtype=dtype)
    X_prime_t = np.empty((N, values.shape[0]), dtype=dtype)
    queries_t, values_t = np.ascontiguousarray(queries.T), np.ascontiguousarray(values.T)
    rows = max(1, BLOCK_ELEMENTS // max(N, 1))
    check_blocks = _logits_may_overflow(queries, keys, 0.0 if bias is None else float(np.abs(bias).max(initial=0.0)))
    for start in range(0, N, rows):
        block = attentions_t[start : start + rows]
        with np.errstate(over="ignore", invalid="ignore"):
            np.matmul(queries_t[start : start + rows], keys, out=block)
            if bias is not None:
                block += bias[:, start : start + rows].T
        block_max = block.max(axis=1, keepdims=True)
        if check_blocks:
            _check_no_overflow("the logits K^T Q (with Q, K)", block, LOGIT_REMEDY)
        with np.errstate(under="ignore"):
            block -= block_max
            np.exp(block, out=block)
        block /= block.sum(axis=1, keepdims=True)
        np.matmul(block, values_t, out=X_prime_t[start : start + rows])
    return X_prime_t.T, attentions_t.T


def _masked_softmax_cols(logits: FloatArray, visible: NDArray[np.bool_]) -> FloatArray:
    """Softmax of each column over its visible entries; masked entries get 0, a column with none is all 0."""
    if logits.shape[0] == 0:
        return logits
    lowest = np.finfo(logits.dtype).min
    column_max = np.where(visible, logits, lowest).max(axis=0, keepdims=True)
    with np.errstate(over="ignore", under="ignore"):
        weights = np.exp(np.where(visible, logits - column_max, -np.inf))
    totals = weights.sum(axis=0, keepdims=True)
    np.divide(weights, totals, out=weights, where=totals > 0)
    return weights
