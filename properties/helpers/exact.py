"""The one law-side exact attention: float64, with a visibility mask, an additive bias and a scale, shifted by the
column maximum (tests/helpers/test_exact.py checks it against regression/exact.py's 50-digit computation).

Laws compare against it where no oracle-free relation exists; its own forward error is that of one float64
evaluation (tolerances.error_bounds with FLOAT64_EPS), which a law adds to the implementation's.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from properties.helpers.problems import AttentionProblem

Array = NDArray[np.float64]


def softmax_columns(logits: Array, visible: NDArray[np.bool_] | None = None) -> Array:
    """softmax over each column of `logits`, over its visible entries (all by default), in float64, shifted by the
    column maximum; hidden entries and columns with no visible entry are 0."""
    logits = np.asarray(logits, dtype=np.float64)
    visible = np.ones(logits.shape, dtype=bool) if visible is None else np.asarray(visible, dtype=bool)
    top = np.where(visible, logits, -np.inf).max(axis=0, initial=-np.inf, keepdims=True)
    with np.errstate(under="ignore"):
        weights = np.exp(np.where(visible, logits - np.where(np.isfinite(top), top, 0.0), -np.inf))
    totals = weights.sum(axis=0, keepdims=True)
    return np.asarray(np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0))


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
