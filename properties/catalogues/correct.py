"""The catalogue of correct implementations, the mirror of properties/catalogues/mistakes/: each computes self-attention
(or the column softmax, or multi-head attention) correctly but differently from the reference, and no law may
FAIL on any of them (tests/catalogues/test_correct.py runs every law on every one).

The algorithms are those the tolerances (properties/helpers/tolerances.py) are derived for: division by the sum or
multiplication by its reciprocal, the log domain exp(z - lse), exp2 after pre-scaling by log2(e) with the
attention matrix rebuilt from lse (FlashAttention), online (blocked) rescaling with block sizes 1, 3, 16 and
64, reversed and data-dependent summation orders, the row convention, and float32 and float16 computation.
The reference's own blockwise path at small block sizes is here too (and in CI, as --impl targets).
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from attention import blockwise_scaled_dot_product_self_attention
from attention.flash import flash_attn_func, flash_attn_varlen_func, split_kv_attention
from attention.rows import scaled_dot_product_attention
from properties.helpers.options import Kind

Array = NDArray[Any]
Pair = tuple[Array, Array]
LOG2_E = float(np.log2(np.e))


def projections(arrays: tuple[Array, ...], dtype: type[np.floating[Any]]) -> tuple[Array, Array, Array, Any]:
    """(Q, K, V, s) in `dtype`: Q = omega_q X + beta_q and so on, s = 1/sqrt(D_q) in `dtype`."""
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = (np.asarray(a, dtype=dtype) for a in arrays)
    s = dtype(1) / np.sqrt(dtype(omega_q.shape[0]))
    return omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v, s


def _scaled(function: Callable[[Array, Array, Array, Any], Pair], dtype: type[np.floating[Any]] = np.float64) -> Any:
    """A notebook-signature function from a core f(Q, K, V, s) -> (X', attentions)."""

    def attention(
        X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
    ) -> Pair:
        Q, K, V, s = projections((X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k), dtype)
        return function(Q, K, V, s)

    return attention


# --- Cores f(Q, K, V, s) -> (X', attentions), in the dtype of their arguments ---


def reciprocal_core(Q: Array, K: Array, V: Array, s: Any) -> Pair:
    """Shift by the column maximum, exponentiate, multiply by the reciprocal of the sum."""
    logits = (K.T @ Q) * s
    weights = np.exp(logits - logits.max(axis=0, keepdims=True))
    A = weights * (1 / weights.sum(axis=0, keepdims=True))
    return V @ A, A


def division_core(Q: Array, K: Array, V: Array, s: Any) -> Pair:
    """Shift by the column maximum, exponentiate, divide by the sum."""
    logits = K.T @ (Q * s)
    weights = np.exp(logits - logits.max(axis=0, keepdims=True))
    A = weights / weights.sum(axis=0, keepdims=True)
    return V @ A, A


def log_domain_core(Q: Array, K: Array, V: Array, s: Any) -> Pair:
    """A = exp(L - lse) with lse = M + log sum exp(L - M): the normaliser taken in the log domain."""
    logits = (K.T @ Q) * s
    M = logits.max(axis=0, keepdims=True)
    lse = M + np.log(np.exp(logits - M).sum(axis=0, keepdims=True))
    A = np.exp(logits - lse)
    return V @ A, A


def online_core(block_size: int) -> Callable[[Array, Array, Array, Any], Pair]:
    """An online softmax over blocks of `block_size` keys (all queries at once): running maximum, running sum
    and running weighted sum of values, rescaled by exp(m_old - m_new); the attention matrix rebuilt as
    exp(L - lse) from a second product L and lse = m + log(sum)."""

    def core(Q: Array, K: Array, V: Array, s: Any) -> Pair:
        N = Q.shape[1]
        running_max = np.full((1, N), -np.inf, dtype=Q.dtype)
        total = np.zeros((1, N), dtype=Q.dtype)
        acc = np.zeros((V.shape[0], N), dtype=Q.dtype)
        for k0 in range(0, N, block_size):
            scores = (K[:, k0 : k0 + block_size].T @ Q) * s
            new_max = np.maximum(running_max, scores.max(axis=0, keepdims=True))
            correction = np.exp(running_max - new_max)
            weights = np.exp(scores - new_max)
            total = total * correction + weights.sum(axis=0, keepdims=True)
            acc = acc * correction + V[:, k0 : k0 + block_size] @ weights
            running_max = new_max
        lse = running_max + np.log(total)
        A = np.exp((K.T @ (Q * s)) - lse)
        return acc / total, A

    core.__name__ = f"online_core_{block_size}"
    return core


def exp2_core(Q: Array, K: Array, V: Array, s: Any) -> Pair:
    """FlashAttention's arithmetic: scores pre-scaled by s log2(e), exp2 against a running maximum over blocks
    of 16 keys, X' = acc / l, and the attention matrix rebuilt as exp2(S' - lse2) from a second product S'
    (queries times keys, transposed) with lse2 = m + log2(l)."""
    c = Q.dtype.type(s * Q.dtype.type(LOG2_E))
    N = Q.shape[1]
    running_max = np.full((1, N), -np.inf, dtype=Q.dtype)
    total = np.zeros((1, N), dtype=Q.dtype)
    acc = np.zeros((V.shape[0], N), dtype=Q.dtype)
    for k0 in range(0, N, 16):
        scores = (K[:, k0 : k0 + 16].T @ Q) * c
        new_max = np.maximum(running_max, scores.max(axis=0, keepdims=True))
        correction = np.exp2(running_max - new_max)
        weights = np.exp2(scores - new_max)
        total = total * correction + weights.sum(axis=0, keepdims=True)
        acc = acc * correction + V[:, k0 : k0 + 16] @ weights
        running_max = new_max
    lse2 = running_max + np.log2(total)
    A = np.exp2((Q.T @ K).T * c - lse2)
    return acc / total, A


def reversed_order_core(Q: Array, K: Array, V: Array, s: Any) -> Pair:
    """Division-normalised, every sum over the keys taken one by one from the last key to the first."""
    logits = (K.T @ Q) * s
    weights = np.exp(logits - logits.max(axis=0, keepdims=True))
    A = weights / np.cumsum(weights[::-1], axis=0)[-1:]
    X_prime = np.cumsum(V[:, ::-1, None] * A[None, ::-1, :], axis=1)[:, -1, :]
    return X_prime, A


def sorted_order_core(Q: Array, K: Array, V: Array, s: Any) -> Pair:
    """Division-normalised, every sum taken in a data-dependent order: smallest weight first, one by one."""
    logits = (K.T @ Q) * s
    weights = np.exp(logits - logits.max(axis=0, keepdims=True))
    order = np.argsort(weights, axis=0, kind="stable")
    A = weights / np.cumsum(np.take_along_axis(weights, order, axis=0), axis=0)[-1:]
    terms = V[:, order] * np.take_along_axis(A, order, axis=0)[None, :, :]  # (D_v, N keys in order, N queries)
    return np.cumsum(terms, axis=1)[:, -1, :], A


# --- Self-attention with the notebook's signature ---

reciprocal_multiplication = _scaled(reciprocal_core)
log_domain = _scaled(log_domain_core)
exp2_with_lse_reconstruction = _scaled(exp2_core)
online_blocks_of_1 = _scaled(online_core(1))
online_blocks_of_3 = _scaled(online_core(3))
online_blocks_of_16 = _scaled(online_core(16))
online_blocks_of_64 = _scaled(online_core(64))
reversed_summation_order = _scaled(reversed_order_core)
sorted_summation_order = _scaled(sorted_order_core)
float32_throughout = _scaled(division_core, np.float32)
float32_online_blocks_of_16 = _scaled(online_core(16), np.float32)
float16_throughout = _scaled(division_core, np.float16)


def log_domain_unscaled(*arrays: Array) -> Pair:
    """Unscaled self-attention (eq. 12.8) in the log domain."""
    Q, K, V, _ = projections(arrays, np.float64)
    return log_domain_core(Q, K, V, 1.0)


def float32_unscaled(*arrays: Array) -> Pair:
    """Unscaled self-attention (eq. 12.8) in float32, divided by the sum."""
    Q, K, V, _ = projections(arrays, np.float32)
    return division_core(Q, K, V, np.float32(1))


def float32_rows_log_domain(*arrays: Array) -> Pair:
    """The row convention (inputs as rows, as in PyTorch) in float32 with a log-domain softmax over each row."""
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = (np.asarray(a, dtype=np.float32) for a in arrays)
    rows = X.T
    Q, K, V = rows @ omega_q.T + beta_q.T, rows @ omega_k.T + beta_k.T, rows @ omega_v.T + beta_v.T
    scores = (Q @ K.T) / np.sqrt(np.float32(omega_q.shape[0]))  # [n, m]: query n, key m
    M = scores.max(axis=1, keepdims=True)
    P = np.exp(scores - (M + np.log(np.exp(scores - M).sum(axis=1, keepdims=True))))
    return (P @ V).T, P.T


def raises_on_empty_input(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """The usual student code: shift by logits.max(axis=0), which has no identity for N = 0 and raises there
    (an API choice, a convention: test_conventions.py names it; every other law holds)."""
    Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
    logits = K.T @ Q / np.sqrt(omega_q.shape[0])
    A = np.exp(logits - logits.max(axis=0))
    A /= A.sum(axis=0)
    return V @ A, A


def scipy_softmax(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """The column softmax by scipy.special.softmax(axis=0) (shifted by scipy; raises on an empty input)."""
    from scipy.special import softmax  # a test dependency only: the catalogue holds this variant when it is there

    Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
    A = np.asarray(softmax(K.T @ Q / np.sqrt(omega_q.shape[0]), axis=0))
    return V @ A, A


def float32_notebook_signature(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """The notebook's function written in float32 (inputs cast, float32 returned), shifted: judged by float32's
    epsilon on the problems float32 can represent (the others are set aside), with no range guard of its own."""
    with np.errstate(over="ignore", invalid="ignore"):  # problems beyond float32 overflow here; they are set aside
        x, w_v, w_q, w_k, b_v, b_q, b_k = (
            np.asarray(a, dtype=np.float32) for a in (X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k)
        )
        Q, K, V = w_q @ x + b_q, w_k @ x + b_k, w_v @ x + b_v
        logits = (K.T @ Q) / np.sqrt(np.float32(w_q.shape[0]))
        A = np.exp(logits - logits.max(axis=0, keepdims=True, initial=-np.inf))
        A /= A.sum(axis=0, keepdims=True)
        return V @ A, A


def reference_blockwise(block_size: int) -> Callable[..., Array]:
    """The reference's blockwise path (X' only) with a small block size: every block boundary exercised."""

    def attention(*arrays: Array) -> Array:
        return blockwise_scaled_dot_product_self_attention(*arrays, block_size=block_size)

    attention.__name__ = attention.__qualname__ = f"reference_blockwise_{block_size}"
    return attention


# Module-level targets for --impl (CI runs the whole battery on each).
reference_blockwise_1 = reference_blockwise(1)
reference_blockwise_3 = reference_blockwise(3)
reference_blockwise_16 = reference_blockwise(16)


# --- The column softmax: f(data) ---


# A column spanning more than the float range overflows z - max to -inf, whose exp, 0, is the right weight.


def log_domain_softmax(data: Array) -> Array:
    """exp(z - lse), lse = M + log sum exp(z - M)."""
    M = data.max(axis=0, keepdims=True)
    with np.errstate(over="ignore", under="ignore"):
        return np.asarray(np.exp(data - (M + np.log(np.exp(data - M).sum(axis=0, keepdims=True)))))


def exp2_softmax(data: Array) -> Array:
    """exp2 after pre-scaling by log2(e), times the reciprocal of the sum."""
    with np.errstate(over="ignore", under="ignore"):
        scaled = data * LOG2_E
        weights = np.exp2(scaled - scaled.max(axis=0, keepdims=True))
    return np.asarray(weights * (1 / weights.sum(axis=0, keepdims=True)))


def float32_softmax(data: Array) -> Array:
    """Division-normalised in float32."""
    z = np.asarray(data, dtype=np.float32)
    with np.errstate(over="ignore", under="ignore"):
        weights = np.exp(z - z.max(axis=0, keepdims=True))
    return np.asarray(weights / weights.sum(axis=0, keepdims=True))


def reversed_order_softmax(data: Array) -> Array:
    """Division-normalised, the sum taken from the last entry to the first."""
    with np.errstate(over="ignore", under="ignore"):
        weights = np.exp(data - data.max(axis=0, keepdims=True))
    return np.asarray(weights / np.cumsum(weights[::-1], axis=0)[-1:])


# --- Multi-head attention: f(X, heads, omega_c) ---


def float32_multihead(X: Array, heads: Any, omega_c: Array) -> Array:
    """Every head in float32 (division-normalised), omega_c applied in float32."""
    outputs = [float32_throughout(X, *head)[0] for head in heads]
    return np.asarray(np.asarray(omega_c, dtype=np.float32) @ np.vstack(outputs))


def log_domain_multihead(X: Array, heads: Any, omega_c: Array) -> Array:
    """Every head in the log domain, in float64."""
    return np.asarray(omega_c @ np.vstack([log_domain(X, *head)[0] for head in heads]))


# --- Backward passes of the row kernel: backward(query, key, value, d_out, attn_mask, dropout_p, is_causal, scale,
# enable_gqa) -> (dq, dk, dv), each correct and computed differently from attention.rows_backward ---


def _rows_setup(
    query: Array, key: Array, value: Array, attn_mask: Any, is_causal: bool, scale: float | None, enable_gqa: bool,
    dtype: Any = np.float64,
) -> tuple[Array, Array, Array, NDArray[np.bool_], float, int]:  # fmt: skip
    """q, k, v in `dtype` (key and value repeated over their group's query heads), the visibility [l, s], the
    scale and the group size."""
    q, k, v = (np.asarray(a, dtype=dtype) for a in (query, key, value))
    group = q.shape[-3] // k.shape[-3] if enable_gqa and k.shape[-3] != q.shape[-3] else 1
    k, v = np.repeat(k, group, axis=-3), np.repeat(v, group, axis=-3)
    L, S = q.shape[-2], k.shape[-2]
    visible = np.tri(L, S, dtype=bool) if is_causal else np.ones((L, S), dtype=bool)
    if attn_mask is not None:
        visible = visible & np.asarray(attn_mask, dtype=bool)
    s = 1 / np.sqrt(q.shape[-1]) if scale is None else float(scale)
    return q, k, v, visible, s, group


def _group_sum(gradient: Array, group: int) -> Array:
    if group == 1:
        return gradient
    return np.asarray(gradient.reshape(*gradient.shape[:-3], -1, group, *gradient.shape[-2:]).sum(axis=-3))


def _lse(logits: Array, visible: NDArray[np.bool_]) -> Array:
    """log sum_s exp(logits) over the visible keys of each row (-inf for a row that sees none)."""
    shown = np.where(visible, logits, -np.inf)
    top = shown.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.asarray(top + np.log(np.exp(shown - top).sum(axis=-1, keepdims=True)))


def _from_weights(P: Array, q: Array, k: Array, v: Array, dO: Array, s: float, group: int) -> tuple[Array, ...]:
    """dq, dk, dv from the weights P (the textbook formulas with D = rowsum(dO o O))."""
    out = P @ v
    D = (dO * out).sum(axis=-1, keepdims=True)
    dS = P * (dO @ np.swapaxes(v, -1, -2) - D)
    return (
        s * (dS @ k),
        _group_sum(s * (np.swapaxes(dS, -1, -2) @ q), group),
        _group_sum(np.swapaxes(P, -1, -2) @ dO, group),
    )


def backward_from_the_saved_lse(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> tuple[Array, ...]:  # fmt: skip
    """FlashAttention's: the forward saves lse = log sum exp of each row; the backward recomputes P = exp(S - lse)."""
    q, k, v, visible, s, group = _rows_setup(query, key, value, attn_mask, is_causal, scale, enable_gqa)
    logits = s * (q @ np.swapaxes(k, -1, -2))
    lse = _lse(logits, visible)  # saved by the forward
    with np.errstate(invalid="ignore"):
        P = np.where(
            visible & np.isfinite(lse),
            np.exp(np.where(visible, logits, 0.0) - np.where(np.isfinite(lse), lse, 0.0)),
            0.0,
        )
    return _from_weights(P, q, k, v, np.asarray(d_out, dtype=np.float64), s, group)


def backward_from_the_stored_weights(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> tuple[Array, ...]:  # fmt: skip
    """The forward stores P (division by the row sum); the backward reads it."""
    q, k, v, visible, s, group = _rows_setup(query, key, value, attn_mask, is_causal, scale, enable_gqa)
    logits = s * (q @ np.swapaxes(k, -1, -2))
    top = np.where(visible, logits, -np.inf).max(axis=-1, keepdims=True)
    weights = np.where(visible, np.exp(np.where(visible, logits, 0.0) - np.where(np.isfinite(top), top, 0.0)), 0.0)
    total = weights.sum(axis=-1, keepdims=True)
    P = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    return _from_weights(P, q, k, v, np.asarray(d_out, dtype=np.float64), s, group)


def backward_in_the_log_domain(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> tuple[Array, ...]:  # fmt: skip
    """P = exp(log_softmax(S)), log_softmax by np.logaddexp.reduce over the visible keys."""
    q, k, v, visible, s, group = _rows_setup(query, key, value, attn_mask, is_causal, scale, enable_gqa)
    logits = np.where(visible, s * (q @ np.swapaxes(k, -1, -2)), -np.inf)
    lse = np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore"):
        P = np.where(visible & np.isfinite(lse), np.exp(logits - np.where(np.isfinite(lse), lse, 0.0)), 0.0)
    return _from_weights(P, q, k, v, np.asarray(d_out, dtype=np.float64), s, group)


def backward_in_blocks_of_keys(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False, block: int = 3,
) -> tuple[Array, ...]:  # fmt: skip
    """FlashAttention-2's loop: D = rowsum(dO o O) and lse first, then blocks of `block` keys (partial last block),
    each giving its dK, dV and adding to dQ."""
    q, k, v, visible, s, group = _rows_setup(query, key, value, attn_mask, is_causal, scale, enable_gqa)
    dO = np.asarray(d_out, dtype=np.float64)
    logits = s * (q @ np.swapaxes(k, -1, -2))
    lse = _lse(logits, visible)
    safe = np.where(np.isfinite(lse), lse, 0.0)
    out = np.zeros_like(dO)
    for start in range(0, k.shape[-2], block):
        part = slice(start, start + block)
        P = np.where(
            visible[:, part] & np.isfinite(lse), np.exp(np.where(visible[:, part], logits[..., part], 0.0) - safe), 0.0
        )
        out += P @ v[..., part, :]
    D = (dO * out).sum(axis=-1, keepdims=True)
    dQ, dK, dV = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for start in range(0, k.shape[-2], block):
        part = slice(start, start + block)
        P = np.where(
            visible[:, part] & np.isfinite(lse), np.exp(np.where(visible[:, part], logits[..., part], 0.0) - safe), 0.0
        )
        dV[..., part, :] = np.swapaxes(P, -1, -2) @ dO
        dS = P * (dO @ np.swapaxes(v[..., part, :], -1, -2) - D)
        dK[..., part, :] = s * (np.swapaxes(dS, -1, -2) @ q)
        dQ += s * (dS @ k[..., part, :])
    return dQ, _group_sum(dK, group), _group_sum(dV, group)


def backward_in_blocks_of_queries(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False, block: int = 2,
) -> tuple[Array, ...]:  # fmt: skip
    """Blocks of `block` queries (partial last block), each with its own P, adding to dK and dV."""
    q, k, v, visible, s, group = _rows_setup(query, key, value, attn_mask, is_causal, scale, enable_gqa)
    dO = np.asarray(d_out, dtype=np.float64)
    dQ, dK, dV = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for start in range(0, q.shape[-2], block):
        part = slice(start, start + block)
        logits = s * (q[..., part, :] @ np.swapaxes(k, -1, -2))
        seen = visible[part]
        lse = _lse(logits, seen)
        P = np.where(
            seen & np.isfinite(lse), np.exp(np.where(seen, logits, 0.0) - np.where(np.isfinite(lse), lse, 0.0)), 0.0
        )
        D = (dO[..., part, :] * (P @ v)).sum(axis=-1, keepdims=True)
        dS = P * (dO[..., part, :] @ np.swapaxes(v, -1, -2) - D)
        dQ[..., part, :] = s * (dS @ k)
        dK += s * (np.swapaxes(dS, -1, -2) @ q[..., part, :])
        dV += np.swapaxes(P, -1, -2) @ dO[..., part, :]
    return dQ, _group_sum(dK, group), _group_sum(dV, group)


def backward_float32_with_float64_sums(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> tuple[Array, ...]:  # fmt: skip
    """Inputs rounded to float32, the products accumulated in float64, every gradient returned in float32 (as
    mixed-precision kernels accumulate in a wider type than they store)."""
    rounded = [np.asarray(a, dtype=np.float32).astype(np.float64) for a in (query, key, value, d_out)]
    q, k, v, visible, s, group = _rows_setup(
        rounded[0], rounded[1], rounded[2], attn_mask, is_causal, scale, enable_gqa
    )
    s = float(np.float32(s))
    logits = s * (q @ np.swapaxes(k, -1, -2))
    lse = _lse(logits, visible)
    P = np.where(
        visible & np.isfinite(lse), np.exp(np.where(visible, logits, 0.0) - np.where(np.isfinite(lse), lse, 0.0)), 0.0
    )
    P = P.astype(np.float32).astype(np.float64)  # stored in float32
    return tuple(g.astype(np.float32) for g in _from_weights(P, q, k, v, rounded[3], s, group))


@dataclass(frozen=True)
class Variant:
    """One correct implementation: its function, what it implements, and the kind of attention (for
    self-attention). A variant that computes in a narrower dtype holds only problems whose magnitudes (inputs,
    projections, logits) stay within `max_magnitude`, a quarter of that dtype's largest number: no
    implementation in that dtype can hold larger ones, so the false-alarm test skips them."""

    function: Callable[..., Any]
    role: str  # "implementation", "softmax", "multihead", "kernel" (row convention, f(query, key, value)),
    # "backward" (a backward of the row kernel, backward(query, key, value, d_out, ...) -> (dq, dk, dv)), "flash"
    # (flash_attn_func's signature), "varlen" (flash_attn_varlen_func's) or "merge" (a log-sum-exp merge
    # f(out_a, lse_a, out_b, lse_b))
    kind: Kind = "scaled"
    max_magnitude: float = float(np.finfo(np.float64).max)
    # False: another choice where the conventions category judges (jax's mean of all values for a query that sees
    # no key): correct, and reported there, so the false-alarm test runs every law but those on it.
    conventions: bool = True

    @property
    def name(self) -> str:
        return str(getattr(self.function, "__name__", self.function))


def as_flash(function: Callable[..., Any]) -> Any:
    """A correct kernel of flash_attn_func's signature (a "flash" variant) behind the flash adapter, float64."""
    from properties.helpers.flash_convention import FlashImplementation
    from properties.helpers.row_convention import Convention

    return FlashImplementation(
        function, f"properties.catalogues.correct:{function.__name__}", Convention(layout="BLHE")
    )


def _named(function: Any, name: str) -> Any:
    function.__name__ = function.__qualname__ = name
    return function


FLOAT16_RANGE = float(np.finfo(np.float16).max) / 4
FLOAT32_RANGE = float(np.finfo(np.float32).max) / 4
# Pre-scaling by log2(e) ~ 1.44 overflows logits beyond max / log2(e): exp2 softmaxes hold a quarter of the range.
PRESCALED_RANGE = float(np.finfo(np.float64).max) / 4
_SELF_ATTENTION = [
    Variant(_named(function, name), "implementation")
    for name, function in [
        ("reciprocal_multiplication", reciprocal_multiplication),
        ("log_domain", log_domain),
        ("exp2_with_lse_reconstruction", exp2_with_lse_reconstruction),
        ("online_blocks_of_1", online_blocks_of_1),
        ("online_blocks_of_3", online_blocks_of_3),
        ("online_blocks_of_16", online_blocks_of_16),
        ("online_blocks_of_64", online_blocks_of_64),
        ("reversed_summation_order", reversed_summation_order),
        ("sorted_summation_order", sorted_summation_order),
        ("reference_blockwise_1", reference_blockwise_1),
        ("reference_blockwise_3", reference_blockwise_3),
        ("reference_blockwise_16", reference_blockwise_16),
    ]
] + [
    Variant(_named(function, name), "implementation", max_magnitude=FLOAT32_RANGE)
    for name, function in [
        ("float32_throughout", float32_throughout),
        ("float32_online_blocks_of_16", float32_online_blocks_of_16),
        ("float32_rows_log_domain", float32_rows_log_domain),
    ]
]


def split_kv(splits: int) -> Callable[..., Any]:
    """flash_attn_func computed as split-KV decoding does: `splits` chunks of keys, each (out, lse), merged by the
    log-sum-exp rule (attention/flash.py's split_kv_attention), behind flash_attn_func's signature."""

    def kernel(q: Array, k: Array, v: Array, *args: Any, **kwargs: Any) -> Any:
        return split_kv_attention(q, k, v, splits, *args, **kwargs)

    kernel.__signature__ = inspect.signature(flash_attn_func)  # type: ignore[attr-defined]
    named: Callable[..., Any] = _named(kernel, f"split_kv_of_{splits}")
    return named


def flash_in_float32(q: Array, k: Array, v: Array, *args: Any, **kwargs: Any) -> Any:
    """flash_attn_func on q, k, v cast to float32 (its working dtype then), out and softmax_lse returned in float32."""
    q32, k32, v32 = (np.asarray(a, dtype=np.float32) for a in (q, k, v))
    return flash_attn_func(q32, k32, v32, *args, **kwargs)


flash_in_float32.__signature__ = inspect.signature(flash_attn_func)  # type: ignore[attr-defined]


def flash_refusing_no_keys(q: Array, k: Array, v: Array, *args: Any, **kwargs: Any) -> Any:
    """flash_attn_func, except that it refuses a key set of length 0 with a ValueError (as FlexAttention fails on
    one): a choice at the edge, which no law may count as a wrong result."""
    if np.shape(k)[1] == 0:
        raise ValueError(f"k has no keys: shape {np.shape(k)}")
    return flash_attn_func(q, k, v, *args, **kwargs)


flash_refusing_no_keys.__signature__ = inspect.signature(flash_attn_func)  # type: ignore[attr-defined]


def flash_mean_for_queries_without_keys(
    q: Array, k: Array, v: Array, dropout_p: float = 0.0, softmax_scale: float | None = None, causal: bool = False,
    window_size: tuple[int, int] = (-1, -1), softcap: float = 0.0, alibi_slopes: Array | None = None,
    deterministic: bool = False, return_attn_probs: bool = False,
) -> Any:  # fmt: skip
    """flash_attn_func (bottom-right causal and windows), except that a query whose window holds no key gets the
    mean of all values, as jax.nn.dot_product_attention gives it: another convention for that query, which only the
    conventions category may judge."""
    from properties.helpers.flash_convention import visibility

    returned = flash_attn_func(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                               deterministic, return_attn_probs)  # fmt: skip
    out = np.array(returned[0] if return_attn_probs else returned)
    L, S = np.shape(q)[1], np.shape(k)[1]
    blind = ~visibility(L, S, causal=causal, window=tuple(window_size)).any(axis=1)  # type: ignore[arg-type]
    if S and blind.any():
        group = np.shape(q)[2] // np.shape(k)[2]
        mean = np.repeat(np.asarray(v, dtype=out.dtype).mean(axis=1), group, axis=1)  # (B, H, D_v)
        out[:, blind] = mean[:, None]
    return (out, *returned[1:]) if return_attn_probs else out


# --- FlashAttention 2's own choices (properties/helpers/FLASH-CONVENTIONS.md), each written next to its line ---

FA2_BLOCK_N = 64  # kBlockN: the keys of one tile of the forward kernel (64 or 128 by head dimension)


def _fa2_rows(
    q: Array, k: Array, v: Array, scale: float, causal: bool, window_size: tuple[int, int], softcap: float,
    slopes: Array | None, limit: int,
) -> tuple[Array, Array]:  # fmt: skip
    """One sequence (q (L, H, D), k (S, H_k, D), v (S, H_k, D_v)) as flash_fwd_kernel.h computes it; returns out
    (L, H, D_v) in the working dtype and lse (H, L) in float32. `slopes` (H,); `limit`: the seqlen_k of the host
    code's window substitutions (max_seqlen_k for the packed API)."""
    work = np.float64 if q.dtype == np.float64 else np.float32  # FA2: fp32 accumulators; float64 kept as float64
    L, H, S = q.shape[0], q.shape[1], k.shape[0]
    group = H // k.shape[1]  # MQA/GQA: query head h reads key head h // group
    qh = np.swapaxes(q, 0, 1).astype(work)  # (H, L, D)
    kh, vh = (np.repeat(np.swapaxes(a, 0, 1), group, axis=0).astype(work) for a in (k, v))
    # flash_api.cpp: a side >= seqlen_k becomes -1, causal sets right = 0, then -1 on one side becomes seqlen_k
    # (choice (d): window (left >= 0, -1) is right = seqlen_k, finite). params.is_causal: the window (-1, 0).
    left, right = (-1 if side >= limit else side for side in window_size)
    if causal:
        right = 0
    is_causal = left < 0 and right == 0
    if left < 0 <= right:
        left = limit
    if right < 0 <= left:
        right = limit
    # softcap > 0: params.softcap = scale / softcap and scale_softmax = softcap: scores are tanh(q.k scale / softcap)
    # in units of softcap; else raw q.k in units of the scale. exp2 uses unit * log2(e) (scale_softmax_log2).
    unit = work(softcap if softcap > 0 else scale)
    raw = qh @ np.swapaxes(kh, -1, -2)  # (H, L, S)
    scores = np.tanh(raw * work(scale / softcap)) if softcap > 0 else raw
    rel = np.arange(L)[:, None] + S - L - np.arange(S)[None, :]  # mask.h: col_idx vs row_idx + seqlen_k - seqlen_q
    if slopes is not None:  # mask.h: alibi_slope / scale_softmax, added after the cap, so slope in logit units
        slope = (slopes.astype(work) / unit)[:, None, None]  # fp32 on the GPU; the working dtype here
        # choice (a): under is_causal the kernel adds +slope * j (equal to -slope |rel| up to a constant of the
        # row on the visible keys: outputs agree, softmax_lse is higher by slope (i + S - L)); else -slope |rel|.
        scores = scores + slope * np.arange(S) if is_causal else scores - slope * np.abs(rel)
    visible = np.ones((L, S), dtype=bool)
    if right >= 0:
        visible &= rel >= -right
    if left >= 0:
        visible &= rel <= left
    scores = np.where(visible, scores, -np.inf)
    # softmax.h: the online softmax over tiles of kBlockN keys, exp2((s - max) unit log2(e)).
    log2_unit = work(float(unit) * LOG2_E)
    row_max = np.full((H, L), -np.inf, dtype=work)
    row_sum = np.zeros((H, L), dtype=work)
    acc = np.zeros((H, L, vh.shape[-1]), dtype=work)
    for start in range(0, S, FA2_BLOCK_N):
        tile = scores[..., start : start + FA2_BLOCK_N]
        new_max = np.maximum(row_max, tile.max(axis=-1, initial=-np.inf))
        safe = np.where(np.isfinite(new_max), new_max, 0.0)  # a row with nothing visible yet: max = 0 (Check_inf)
        weights = np.exp2((tile - safe[..., None]) * log2_unit)
        correction = np.exp2((np.where(np.isfinite(row_max), row_max, safe) - safe) * log2_unit)
        row_sum = row_sum * correction + weights.sum(axis=-1)
        acc = acc * correction[..., None] + weights @ vh[:, start : start + FA2_BLOCK_N]
        row_max = new_max
    empty = row_sum == 0
    # choice (b): a row with no visible key gets inv_sum = 1 (out = acc = 0) and lse = +inf (the non-split path;
    # the split path writes -inf).
    out = acc * np.where(empty, 1.0, 1.0 / np.where(empty, 1.0, row_sum)).astype(work)[..., None]
    with np.errstate(divide="ignore"):
        lse = np.where(empty, np.inf, row_max * unit + np.log(np.where(empty, 1.0, row_sum)))
    return np.swapaxes(out, 0, 1), lse.astype(np.float32)  # choice (e): softmax_lse is float32 whatever q's dtype


def _fa2_checks(dropout_p: float, alibi_slopes: Any, batch: int, nheads: int) -> Array | None:
    if dropout_p != 0.0:
        raise ValueError(f"dropout_p must be 0.0 here (no dropout); got {dropout_p!r}")
    if alibi_slopes is None:
        return None
    return np.broadcast_to(np.asarray(alibi_slopes, dtype=np.float64), (batch, nheads))  # (nheads,) or (B, H)


def _fa2_dmask(shape: tuple[int, ...]) -> Array:
    """choice (c): return_attn_probs with dropout_p = 0 gives no usable probabilities (FlashAttention returns an
    empty S_dmask); here an array of the probabilities' shape holding meaningless values, so that a law which
    judged them would fail on this variant."""
    return np.random.default_rng(0).uniform(0.0, 1.0, shape).astype(np.float32)


def flash_attention_2_choices(
    q: Array, k: Array, v: Array, dropout_p: float = 0.0, softmax_scale: float | None = None, causal: bool = False,
    window_size: tuple[int, int] = (-1, -1), softcap: float = 0.0, alibi_slopes: Any = None,
    deterministic: bool = False, return_attn_probs: bool = False,
) -> Any:  # fmt: skip
    """flash_attn_func exactly as FlashAttention 2 chooses at the edges (FLASH-CONVENTIONS.md; no sinks: FA2 takes
    none): causal ALiBi as +slope j, lse = +inf for a query that sees no key, a finite right side seqlen_k for
    window (left, -1), float32 lse, meaningless attn_probs; tiles of 64 keys and exp2 as its kernel."""
    q, k, v = (np.asarray(a) for a in (q, k, v))
    B, L, H, D = q.shape
    scale = 1.0 / float(np.sqrt(D)) if softmax_scale is None else float(softmax_scale)
    slopes = _fa2_checks(dropout_p, alibi_slopes, B, H)
    outs, lses = [], []
    for b in range(B):
        window = (int(window_size[0]), int(window_size[1]))
        out, lse = _fa2_rows(q[b], k[b], v[b], scale, causal, window, float(softcap),
                             None if slopes is None else slopes[b], k.shape[1])  # fmt: skip
        outs.append(out)
        lses.append(lse)
    out = np.stack(outs).astype(q.dtype)  # out in q's dtype
    if not return_attn_probs:
        return out
    return out, np.stack(lses), _fa2_dmask((B, H, L, k.shape[1]))


def flash_attention_2_varlen_choices(
    q: Array, k: Array, v: Array, cu_seqlens_q: Any, cu_seqlens_k: Any, max_seqlen_q: int, max_seqlen_k: int,
    dropout_p: float = 0.0, softmax_scale: float | None = None, causal: bool = False,
    window_size: tuple[int, int] = (-1, -1), softcap: float = 0.0, alibi_slopes: Any = None,
    deterministic: bool = False, return_attn_probs: bool = False,
) -> Any:  # fmt: skip
    """flash_attn_varlen_func with FlashAttention 2's choices: each sequence aligned by its own lengths (causal,
    windows, ALiBi's +slope j), the host code's window substitutions by max_seqlen_k (mha_varlen_fwd), softmax_lse
    (nheads, total_q) in float32, +inf for a query that sees no key."""
    q, k, v = (np.asarray(a) for a in (q, k, v))
    cu_q, cu_k = np.asarray(cu_seqlens_q, dtype=np.int64), np.asarray(cu_seqlens_k, dtype=np.int64)
    batch, H = len(cu_q) - 1, q.shape[1]
    scale = 1.0 / float(np.sqrt(q.shape[-1])) if softmax_scale is None else float(softmax_scale)
    slopes = _fa2_checks(dropout_p, alibi_slopes, batch, H)
    out = np.zeros((q.shape[0], H, v.shape[-1]), dtype=q.dtype)
    lse = np.full((H, q.shape[0]), np.inf, dtype=np.float32)  # varlen: lse (nheads, total_q)
    for b in range(batch):
        q0, q1, k0, k1 = int(cu_q[b]), int(cu_q[b + 1]), int(cu_k[b]), int(cu_k[b + 1])
        if q1 == q0:
            continue
        window = (int(window_size[0]), int(window_size[1]))
        rows, rows_lse = _fa2_rows(q[q0:q1], k[k0:k1], v[k0:k1], scale, causal, window, float(softcap),
                                   None if slopes is None else slopes[b], int(max_seqlen_k))  # fmt: skip
        out[q0:q1], lse[:, q0:q1] = rows, rows_lse
    if not return_attn_probs:
        return out
    return out, lse, _fa2_dmask((batch, H, int(max_seqlen_q), int(max_seqlen_k)))


def varlen_lse_padded_by_sequence(
    q: Array, k: Array, v: Array, cu_seqlens_q: Any, cu_seqlens_k: Any, max_seqlen_q: int, max_seqlen_k: int,
    dropout_p: float = 0.0, softmax_scale: float | None = None, causal: bool = False,
    window_size: tuple[int, int] = (-1, -1), softcap: float = 0.0, alibi_slopes: Any = None,
    deterministic: bool = False, return_attn_probs: bool = False, *, sinks: Any = None,
) -> Any:  # fmt: skip
    """The bundled flash_attn_varlen_func with softmax_lse padded by sequence, (batch, nheads, max_seqlen_q), the
    layout of FlashAttention 2's earlier releases; NaN beyond each sequence's L_b, which no law may read."""
    options = (dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic)
    returned = flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *options,
                                      return_attn_probs=return_attn_probs, sinks=sinks)  # fmt: skip
    if not return_attn_probs:
        return returned
    out, lse, probs = returned
    cu = np.asarray(cu_seqlens_q, dtype=np.int64)
    padded = np.full((len(cu) - 1, lse.shape[0], int(max_seqlen_q)), np.nan)
    for b in range(len(cu) - 1):
        padded[b, :, : cu[b + 1] - cu[b]] = lse[:, cu[b] : cu[b + 1]]
    return out, padded, probs


def log_domain_merge(out_a: Array, lse_a: Array, out_b: Array, lse_b: Array) -> tuple[Array, Array]:
    """The log-sum-exp merge with np.logaddexp and exp(lse_part - lse) (no explicit maximum)."""
    lse = np.logaddexp(lse_a, lse_b)
    seen = np.isfinite(lse)
    out = np.zeros(np.broadcast_shapes(np.shape(out_a)), dtype=np.float64)
    for part, part_lse in ((out_a, lse_a), (out_b, lse_b)):
        weight = np.exp(np.where(seen & np.isfinite(part_lse), part_lse - np.where(seen, lse, 0.0), -np.inf))
        out = out + np.swapaxes(weight, -1, -2)[..., None] * np.where(
            np.swapaxes(weight, -1, -2)[..., None] > 0, part, 0.0
        )
    return out, lse


HAS_SCIPY = importlib.util.find_spec("scipy") is not None
CATALOGUE: tuple[Variant, ...] = (
    *_SELF_ATTENTION,
    Variant(raises_on_empty_input, "implementation"),
    *([Variant(scipy_softmax, "implementation")] if HAS_SCIPY else []),
    Variant(float32_notebook_signature, "implementation"),  # no max_magnitude: the battery sets aside what it must
    Variant(_named(float16_throughout, "float16_throughout"), "implementation", max_magnitude=FLOAT16_RANGE),
    Variant(log_domain_unscaled, "implementation", "unscaled"),
    Variant(float32_unscaled, "implementation", "unscaled", max_magnitude=FLOAT32_RANGE),
    Variant(log_domain_softmax, "softmax"),
    Variant(exp2_softmax, "softmax", max_magnitude=PRESCALED_RANGE),
    Variant(float32_softmax, "softmax", max_magnitude=FLOAT32_RANGE),
    Variant(reversed_order_softmax, "softmax"),
    Variant(float32_multihead, "multihead"),
    Variant(log_domain_multihead, "multihead"),
    Variant(scaled_dot_product_attention, "kernel"),  # the bundled row-convention kernel, every law through sdpa
    *(Variant(function, "backward") for function in (
        backward_from_the_saved_lse, backward_from_the_stored_weights, backward_in_the_log_domain,
        backward_in_blocks_of_keys, backward_in_blocks_of_queries, backward_float32_with_float64_sums,
    )),
    Variant(split_kv(1), "flash"),  # FlashAttention-signature kernels: the rectangular laws (issue 20)
    Variant(split_kv(2), "flash"),
    Variant(split_kv(7), "flash"),
    Variant(flash_in_float32, "flash"),
    Variant(flash_refusing_no_keys, "flash"),  # raises on S = 0: the split law sets such a split aside
    Variant(flash_mean_for_queries_without_keys, "flash", conventions=False),  # jax's choice for a blind query
    Variant(flash_attention_2_choices, "flash"),  # FlashAttention 2's own choices at the edges: no law may FAIL
    Variant(flash_attention_2_varlen_choices, "varlen"),
    Variant(varlen_lse_padded_by_sequence, "varlen"),  # softmax_lse (batch, nheads, max_seqlen_q): a layout
    Variant(log_domain_merge, "merge"),
)  # fmt: skip
