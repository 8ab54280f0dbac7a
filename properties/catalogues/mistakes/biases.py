"""Mistakes in the bias option (each tagged with `mistake`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from attention import scaled_dot_product_self_attention
from properties.catalogues.mistakes._base import (
    Array,
    Pair,
    _projections,
    _reference,
    _visible,
    masked_attention,
    mistake,
)


@mistake("mask + bias, causal + bias", "ignored")
def bias_ignored_with_a_mask(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Forgets the bias on the path taken when a mask or causal is given."""
    return _reference(arrays, mask=mask, causal=causal, bias=bias if mask is None and not causal else None)


@mistake("bias", "transposed")
def bias_transposed(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Adds bias[n, m] to the logit of key m for query n (the row convention's bias on the book's columns)."""
    return _reference(arrays, mask=mask, causal=causal, bias=None if bias is None else np.asarray(bias).T)


@mistake("bias", "before the scale")
def bias_before_the_scale(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Pair:
    """Adds the bias before scaling: softmax((K^T Q + B) / sqrt(D_q)) instead of softmax(K^T Q / sqrt(D_q) + B)."""
    s = 1 / np.sqrt(arrays[2].shape[0])
    scaled_bias = None if bias is None else s * np.asarray(bias)
    return masked_attention(arrays, visible=_visible(arrays[0].shape[1], mask, causal), bias=scaled_bias)


@mistake("bias", "reversed")
def bias_rows_reversed(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Adds the bias upside down: B[N-1-m, n] instead of B[m, n]."""
    return scaled_dot_product_self_attention(*arrays, bias=None if bias is None else np.asarray(bias)[::-1])


@mistake("bias", "shifted before the bias")
def bias_added_after_the_shift(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Pair:
    """Subtracts each column's maximum of s K^T Q and adds the bias afterwards: exact in exact arithmetic, but a
    column whose bias lies ~709 below (above) its logits underflows (overflows) every weight: 0 / 0 = NaN."""
    visible = _visible(arrays[0].shape[1], mask, causal)
    seen = np.ones((arrays[0].shape[1],) * 2, dtype=bool) if visible is None else visible
    Q, K, V = _projections(arrays, None, "input")
    logits = np.where(seen, (K.T @ Q) / np.sqrt(Q.shape[0]), -np.inf)
    top = logits.max(axis=0, initial=-np.inf, keepdims=True)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        weights = np.exp(logits - np.where(np.isfinite(top), top, 0.0) + (0.0 if bias is None else np.asarray(bias)))
        A = weights / weights.sum(axis=0, keepdims=True)
    return V @ A, A
