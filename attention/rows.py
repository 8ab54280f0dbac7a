"""The reference in the row convention: a correct attention kernel in numpy with torch's signature, the target the
sdpa laws run on when no --impl is given, the README's example, and what the row-convention mistakes start from.

Queries and keys are rows: query (..., L, E), key (..., S, E), value (..., S, E_v), out (..., L, E_v), with
out[l] = sum_s a[l, s] value[s] and a[l, :] = softmax_s(scale query[l] . key[s] + float mask). A boolean
attn_mask (broadcastable to (..., L, S)) is True where query l may attend to key s; is_causal keeps s <= l.
A query that may attend to no key gets a zero output row (as torch's CPU kernel and the book's reference do).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]


def scaled_dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    attn_mask: Array | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Array:
    """softmax(scale q k^T + mask) v over the last two axes, in float32 (float64 for float64 inputs), returned in
    the query's dtype. With enable_gqa, H_q query heads (axis -3) share H_kv key/value heads: query head h reads
    key/value head h // (H_q / H_kv)."""
    if dropout_p != 0.0:
        raise ValueError(f"dropout_p must be 0.0 (this kernel has no dropout); got {dropout_p!r}")
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(
            f"query (..., L, E), key (..., S, E) and value (..., S, E_v) disagree: shapes {query.shape}, "
            f"{key.shape}, {value.shape}"
        )
    work = np.float64 if np.dtype(query.dtype).itemsize >= 8 else np.float32
    v, weights = attention_weights(query, key, value, attn_mask, is_causal, scale, enable_gqa, work)[2:4]
    return np.asarray((weights @ v).astype(query.dtype))


def attention_weights(
    query: Array,
    key: Array,
    value: Array,
    attn_mask: Array | None,
    is_causal: bool,
    scale: float | None,
    enable_gqa: bool,
    work: type[np.floating[Any]],
) -> tuple[Array, Array, Array, Array, float]:
    """(q, k, v, weights, factor): the inputs in the `work` dtype, key and value repeated over the query heads of
    their group under enable_gqa, and the weights a = softmax(factor q k^T + mask) over the visible keys, shifted
    by each row's maximum (a row with no visible key is zero). Shared by the forward and its backward."""
    q, k, v = (np.asarray(a).astype(work) for a in (query, key, value))
    if enable_gqa and q.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        if q.shape[-3] % k.shape[-3]:
            raise ValueError(f"enable_gqa: {q.shape[-3]} query heads are not a multiple of {k.shape[-3]} key heads")
        group = q.shape[-3] // k.shape[-3]
        k, v = np.repeat(k, group, axis=-3), np.repeat(v, group, axis=-3)
    L, S = q.shape[-2], k.shape[-2]
    factor = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    logits = (q @ np.swapaxes(k, -1, -2)) * work(factor)
    visible = np.ones((L, S), dtype=bool)
    if is_causal:
        visible = np.tril(visible)
    if attn_mask is not None:
        mask = np.asarray(attn_mask)
        if mask.dtype == np.bool_:
            visible = visible & mask
        else:
            logits = logits + mask.astype(work)
    visible = np.broadcast_to(visible, logits.shape) & (logits > -np.inf)
    top = np.max(np.where(visible, logits, -np.inf), axis=-1, keepdims=True, initial=-np.inf)  # S = 0 too
    top = np.where(np.isfinite(top), top, 0.0)
    weights = np.exp(np.where(visible, logits - top, -np.inf))
    total = weights.sum(axis=-1, keepdims=True)
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    return q, k, v, weights, float(factor)
