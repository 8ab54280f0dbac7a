"""The one law-side exact attention: float64, with a visibility mask, an additive bias and a scale, shifted by the
maximum, with attention sinks and the log-sum-exp (softmax_with_lse; the notebook's columns, the row convention's
rows and flash_convention.exact_attention all take it; tests/helpers/test_exact.py checks them against
regression/exact.py's 50-digit computations).

Laws compare against it where no oracle-free relation exists; its own forward error is that of one float64
evaluation (tolerances.error_bounds with FLOAT64_EPS), which a law adds to the implementation's.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from properties.helpers.problems import AttentionProblem

Array = NDArray[np.float64]


def softmax_with_lse(
    logits: Array, visible: NDArray[np.bool_] | None = None, *, axis: int = 0, sink: Array | None = None
) -> tuple[Array, Array]:
    """(weights, lse): the softmax along `axis` of `logits` over its visible entries (all by default) and its
    log-sum-exp, in float64, shifted by the maximum; `sink` (broadcast to the shape without `axis`) is one more logit
    in every denominator with no entry of its own (an attention sink). Hidden entries are 0; a slice with nothing
    visible and no sink has weights 0 and lse = -inf (the log of an empty sum)."""
    logits = np.asarray(logits, dtype=np.float64)
    visible = np.broadcast_to(True if visible is None else np.asarray(visible, dtype=bool), logits.shape)
    top = np.where(visible, logits, -np.inf).max(axis=axis, initial=-np.inf, keepdims=True)
    extra = None if sink is None else np.expand_dims(np.asarray(sink, dtype=np.float64), axis)
    if extra is not None:
        top = np.maximum(top, extra)
    shift = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(under="ignore"):
        weights = np.exp(np.where(visible, logits - shift, -np.inf))
        totals = weights.sum(axis=axis, keepdims=True) + (0.0 if extra is None else np.exp(extra - shift))
    seen = totals > 0
    lse = np.where(seen, shift + np.log(np.where(seen, totals, 1.0)), -np.inf)
    probabilities = np.divide(weights, totals, out=np.zeros_like(weights), where=seen)
    return np.asarray(probabilities), np.asarray(np.squeeze(lse, axis=axis))


def softmax_columns(logits: Array, visible: NDArray[np.bool_] | None = None) -> Array:
    """softmax over each column of `logits`, over its visible entries (all by default), in float64, shifted by the
    column maximum; hidden entries and columns with no visible entry are 0 (softmax_with_lse along axis 0)."""
    return softmax_with_lse(logits, visible, axis=0)[0]


def exact_attention(
    problem: AttentionProblem,
    scale: float,
    *,
    visible: NDArray[np.bool_] | None = None,
    bias: Array | None = None,
) -> tuple[Array, Array]:
    """(X', attentions) = (V A, A), A = softmax_cols(scale K^T Q + bias) over the visible keys (eqs. 12.3-12.9), in
    float64; `visible[m, n]` says whether query n sees key m (all by default)."""
    logits = problem.logits(scale)
    if bias is not None:
        logits = logits + np.asarray(bias, dtype=np.float64)
    A = softmax_columns(logits, visible)
    return np.asarray(problem.values() @ A), A


def exact_rows(query: Array, key: Array, value: Array, scale: float, visible: NDArray[np.bool_] | None = None) -> Array:
    """out = softmax(scale q k^T) v over the visible keys, in float64, for (B, H, L, E) rows: the exact attention
    in the row convention, a key/value head read by H / H_kv query heads; `visible[l, s]` says whether query l
    sees key s (all by default), a query that sees no key gets a zero row."""
    query, key, value = (np.asarray(a, dtype=np.float64) for a in (query, key, value))
    group = query.shape[1] // key.shape[1]
    key, value = np.repeat(key, group, axis=1), np.repeat(value, group, axis=1)
    out = np.zeros((*query.shape[:-1], value.shape[-1]))
    shown = None if visible is None else np.asarray(visible, dtype=bool).T
    for b in range(query.shape[0]):
        for h in range(query.shape[1]):
            weights = softmax_columns(scale * (key[b, h] @ query[b, h].T), shown)  # (S, L): columns are queries
            out[b, h] = (value[b, h].T @ weights).T
    return out
