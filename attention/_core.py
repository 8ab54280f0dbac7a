"""The numerical core shared by the reference functions (self_attention, blockwise, multi-head), on checked
arguments: projections, logits, column softmax and weighted sum, and the overflow checks of their results."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from attention._checks import CheckedArguments, FloatArray


def check_no_overflow(what: str, array: FloatArray, remedy: str) -> None:
    """Raise ValueError when `array` holds inf or NaN: `what` overflowed its dtype; `remedy` says what to reduce."""
    if not np.isfinite(array).all():
        raise ValueError(
            f"{what} overflow {array.dtype} (largest finite value {np.finfo(array.dtype).max:.3g}); {remedy}"
        )


LOGIT_REMEDY = "reduce the magnitudes of X, omega_q, omega_k, beta_q, beta_k"


def largest_magnitude(matrix: FloatArray) -> float:
    """max |entry| (0 for an empty matrix; NaN when an entry is), without a temporary array."""
    if matrix.size == 0:
        return 0.0
    return float(max(matrix.max(), -matrix.min()))


def largest_column_norm(matrix: FloatArray) -> float:
    """max_n ||matrix[:, n]||_2 (0 for an empty matrix; inf or NaN when an entry is).

    The squares are summed as they are when none can overflow and those that underflow are below u times
    the largest; otherwise (extreme magnitudes) on a copy divided by the largest entry.
    """
    largest = largest_magnitude(matrix)
    if largest == 0.0 or not np.isfinite(largest):
        return largest
    info = np.finfo(matrix.dtype)
    rows = matrix.shape[0]
    if rows * float(info.smallest_normal) / float(info.eps) <= largest * largest <= float(info.max) / (rows + 1):
        return float(np.sqrt(np.einsum("ij,ij->j", matrix, matrix).max()))
    with np.errstate(under="ignore"):
        scaled = matrix / matrix.dtype.type(largest)
        return largest * float(np.sqrt(np.einsum("ij,ij->j", scaled, scaled).max()))


def logit_bound(queries: FloatArray, keys: FloatArray, offset: float = 0.0) -> float:
    """A bound on every |k_m^T q_n| + offset: max ||k_m|| max ||q_n|| + offset (Cauchy-Schwarz).

    The computed norms and their product are within (D_q + 3) u of the exact ones in relative terms; the
    factor 1 + 2 (D_q + 3) u makes the returned value a bound on the exact logits (inf when a norm overflows).
    """
    slack = 1 + 2 * (queries.shape[0] + 3) * float(np.finfo(queries.dtype).eps)
    return float(largest_column_norm(queries) * largest_column_norm(keys) * slack + offset)


def logits_may_overflow(bound: float, dtype: np.dtype[np.floating]) -> bool:
    """Whether some logit within `bound` could overflow: the bound must stay below half the largest float
    (the half covers rounding). When it does, no block of logits needs a check."""
    return not bound < float(np.finfo(dtype).max) / 2


def smallest_nonzero_magnitude(matrix: FloatArray) -> float:
    """min |entry| over the nonzero entries (inf when there is none)."""
    magnitudes = np.abs(matrix)
    magnitudes[magnitudes == 0] = np.inf
    return magnitudes.min(initial=np.inf)  # type: ignore[no-any-return]  # a scalar of the dtype: float16 to extended


def exp_needs_no_shift(bound: float, dtype: np.dtype[np.floating], keys: int, values: FloatArray | None = None) -> bool:
    """Whether a softmax over `keys` logits |L| <= `bound` may skip the shift by the column maximum.

    It may when no step leaves the normal range, so that every rounding is relative as in the shifted
    algorithm: exp(-bound) is at least the smallest normal number (each weight keeps full accuracy, no column
    sum is zero) and keys exp(bound) stays below a quarter of the largest float. Given `values` (D_v x N),
    which an online softmax multiplies by weights not yet normalised, also every product exp(L) v with
    v != 0 must stay normal, and a sum of `keys` of them below a quarter of the largest float. Softmax is
    invariant under the shift, and without it no rounding of L - max L enters the weights.
    """
    info = np.finfo(dtype)
    # Logarithms in the dtype's own precision: the range of float16 or of extended precision is not float64's.
    largest, smallest = 1.0, 1.0
    if values is not None and values.size:
        largest = max(largest, largest_magnitude(values))
        smallest = min(smallest, smallest_nonzero_magnitude(values))
    headroom = np.log(info.max / 4) - np.log(max(keys, 1)) - np.log(largest)
    footroom = np.log(smallest) - np.log(info.smallest_normal)
    return bool(bound < min(headroom, footroom))


def attend(
    arguments: CheckedArguments,
    scaled: bool,
    Pi: FloatArray | None = None,
    positions_in_values: bool = True,
    visible: NDArray[np.bool_] | None = None,
    bias: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray]:
    """The numerical core, on checked arguments: projections, logits, column softmax, weighted sum."""
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = arguments
    # Overflow of a projection or of the logits is reported below as a ValueError rather than
    # as a RuntimeWarning followed by inf or NaN in the result.
    with np.errstate(over="ignore", invalid="ignore"):
        X_qk = X if Pi is None else X + Pi
        X_v = X_qk if positions_in_values else X
        keys = omega_k @ X_qk + beta_k
        if visible is None:  # the dense path takes Q^T and V^T (inputs as rows), made so by the products
            queries_t = X_qk.T @ omega_q.T + beta_q.T
            values_t = X_v.T @ omega_v.T + beta_v.T
        else:
            queries = omega_q @ X_qk + beta_q
            values = omega_v @ X_v + beta_v
    if visible is None:
        check_no_overflow("the values V = omega_v X + beta_v", values_t, "reduce the magnitudes of X, omega_v, beta_v")
        return dense_attention(queries_t, keys, values_t, scaled, bias)
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
    check_no_overflow("the values V of visible keys", values, "reduce the magnitudes of X, omega_v, beta_v")
    check_no_overflow("the visible logits K^T Q", logits, LOGIT_REMEDY)
    return values @ (attentions := masked_softmax_cols(logits, visible)), attentions


# Entries of A^T computed at a time: 8 MiB of float64 logits, so that the exp and normalisation of a block
# run in the last-level cache right after the product that made it, in calls large enough for BLAS threads.
BLOCK_ELEMENTS = 1 << 20


def dense_attention(
    queries_t: FloatArray, keys: FloatArray, values_t: FloatArray, scaled: bool, bias: FloatArray | None
) -> tuple[FloatArray, FloatArray]:
    """(V A, A) with A = softmax_cols(s K^T Q + bias), from Q^T (N x D_q), K and V^T (N x D_v), computed as
    A^T, a block of queries (rows) at a time.

    A^T is C-contiguous, so each block of queries is a contiguous slab whose row softmax is the column
    softmax of A; A is returned as the transposed view of A^T. When the logits are small enough
    (`exp_needs_no_shift`), a block takes its product, exp, sum, normalisation (by the reciprocal of the
    sum) and product with V^T; otherwise it is shifted by its row maxima before the exp.
    """
    dtype = queries_t.dtype
    N, D_v = values_t.shape
    if scaled:
        queries_t = queries_t / np.sqrt(dtype.type(queries_t.shape[1]))
    attentions_t = np.empty((N, N), dtype=dtype)
    X_prime_t = np.empty((N, D_v), dtype=dtype)
    rows = max(1, BLOCK_ELEMENTS // max(N, 1))
    check, shift_free = softmax_choices(queries_t.T, keys, bias)
    for start in range(0, N, rows):
        block = attentions_t[start : start + rows]
        with np.errstate(over="ignore", invalid="ignore"):
            np.matmul(queries_t[start : start + rows], keys, out=block)
            if bias is not None:
                block += bias[:, start : start + rows].T
        softmax_in_place(block, 1, check, shift_free)
        np.matmul(block, values_t, out=X_prime_t[start : start + rows])
    return X_prime_t.T, attentions_t.T


def softmax_choices(queries: FloatArray, keys: FloatArray, bias: FloatArray | None) -> tuple[bool, bool]:
    """(check, shift_free) for the unmasked logits K^T Q + bias (queries and keys as columns): whether a logit may
    overflow (`logits_may_overflow`: then the logits are checked) and whether the exp may skip the shift by the
    maximum (`exp_needs_no_shift`). The forward (dense_attention) and the backward (attention.self_attention_backward)
    take this one choice."""
    bound = logit_bound(queries, keys, 0.0 if bias is None else largest_magnitude(bias))
    return logits_may_overflow(bound, queries.dtype), exp_needs_no_shift(bound, queries.dtype, keys.shape[1])


def softmax_in_place(logits: FloatArray, axis: int, check: bool, shift_free: bool) -> None:
    """The softmax of `logits` along `axis`, in place, as `softmax_choices` chose: shift-free, exp and the product
    by the reciprocal of the sum; else the overflow check (when `check`), the shift by the maximum, exp and the
    division by the sum."""
    if logits.size == 0:
        return
    if shift_free:
        with np.errstate(under="ignore"):
            np.exp(logits, out=logits)
        logits *= 1 / logits.sum(axis=axis, keepdims=True)
        return
    logits_max = logits.max(axis=axis, keepdims=True)
    if check:
        check_no_overflow("the logits K^T Q (with Q, K)", logits, LOGIT_REMEDY)
    with np.errstate(under="ignore"):
        logits -= logits_max
        np.exp(logits, out=logits)
    logits /= logits.sum(axis=axis, keepdims=True)


def masked_softmax_cols(logits: FloatArray, visible: NDArray[np.bool_]) -> FloatArray:
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
