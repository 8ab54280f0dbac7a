"""Mistakes in the mask and causal options (each tagged with `mistake`), the edges of every option, and the conventions
for a query that sees no key.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attention import scaled_dot_product_self_attention
from properties.catalogues.mistakes._base import (
    Array,
    Pair,
    _projections,
    _reference,
    _triangle,
    _unseen,
    _visible,
    masked_attention,
    mistake,
)


@mistake("mask, causal, bias", "ignored")
def keywords_ignored(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Takes the keywords mask, causal and bias, and ignores them."""
    return scaled_dot_product_self_attention(*arrays)


@mistake("mask, causal", "finite fill")
def mask_as_large_negative_bias(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Masks by adding -1e4 to hidden logits: hidden keys with huge logits still win."""
    N = arrays[0].shape[1]
    visible = np.ones((N, N), dtype=bool) if mask is None else np.asarray(mask)
    if causal:
        visible = visible & np.tri(N, dtype=bool).T
    penalty = np.where(visible, 0.0, -1e4) + (0.0 if bias is None else np.asarray(bias))
    return scaled_dot_product_self_attention(*arrays, bias=penalty)


@mistake("mask, causal", "finite fill")
def hidden_logits_filled_with_minus_20(
    *arrays: Array, mask: Any = None, causal: bool = False, bias: Any = None
) -> Pair:
    """Sets hidden logits to -20 (a 'large' negative number) instead of excluding them: weight e^-20 leaks."""
    visible = _visible(arrays[0].shape[1], mask, causal)
    return masked_attention(arrays, visible=visible, bias=bias, fill=-20.0)


@mistake("causal", "transposed")
def causal_upper_triangle(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Implements causal=True as key m visible to query n iff m >= n (the transposed triangle)."""
    N = arrays[0].shape[1]
    if causal:
        mask = np.tri(N, dtype=bool) if mask is None else np.asarray(mask) & np.tri(N, dtype=bool)
    return scaled_dot_product_self_attention(*arrays, mask=mask, bias=bias)


@mistake("causal", "off-by-one diagonal")
def causal_excludes_the_diagonal(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Implements causal=True as m < n: a query no longer sees its own key (np.triu(..., k=1))."""
    N = arrays[0].shape[1]
    if causal:
        strict = np.triu(np.ones((N, N), dtype=bool), k=1)
        mask = strict if mask is None else np.asarray(mask) & strict
    return _reference(arrays, mask=mask, bias=bias)


@mistake("causal", "off-by-one diagonal")
def causal_sees_one_ahead(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Implements causal=True as m <= n + 1: each query also sees the next key (np.tril(..., k=1) transposed)."""
    N = arrays[0].shape[1]
    if causal:
        ahead = np.triu(np.ones((N, N), dtype=bool), k=-1)
        mask = ahead if mask is None else np.asarray(mask) & ahead
    return _reference(arrays, mask=mask, bias=bias)


@mistake("mask + causal", "ignored")
def causal_ignored_when_a_mask_is_given(
    *arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None
) -> Any:
    """Uses the mask when one is given and causal only otherwise: causal=True with a mask lets queries see ahead."""
    return (
        _reference(arrays, mask=mask, bias=bias) if mask is not None else _reference(arrays, causal=causal, bias=bias)
    )


@mistake("mask + causal", "or instead of and")
def causal_or_mask(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Combines causal and the mask with `or`: a key visible under either is seen."""
    N = arrays[0].shape[1]
    if causal and mask is not None:
        mask = np.asarray(mask) | _triangle(N)
        causal = False
    return _reference(arrays, mask=mask, causal=causal, bias=bias)


@mistake("mask", "transposed")
def mask_transposed(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Reads mask[n, m] for key m and query n (the PyTorch row convention applied to the book's columns)."""
    return _reference(arrays, mask=None if mask is None else np.asarray(mask).T, causal=causal, bias=bias)


@mistake("mask", "not renormalised")
def mask_without_renormalising(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Zeroes hidden weights after the softmax and does not renormalise."""
    _, A = scaled_dot_product_self_attention(*arrays, bias=bias)
    if mask is not None:
        A = np.where(mask, A, 0.0)
    return (arrays[1] @ arrays[0] + arrays[4]) @ A, A


@mistake("mask, causal", "logits ignored")
def uniform_over_the_visible_keys(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """With a mask or causal, spreads each query's weight evenly over its visible keys (the logits are lost)."""
    visible = _visible(arrays[0].shape[1], mask, causal)
    if visible is None:
        return _reference(arrays, bias=bias)
    return masked_attention(arrays, visible=visible, scale=0.0)


@mistake("mask, causal", "scale missing")
def masked_path_unscaled(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Drops the 1/sqrt(D_q) scale on the path taken when a mask or causal is given."""
    visible = _visible(arrays[0].shape[1], mask, causal)
    if visible is None:
        return _reference(arrays, bias=bias)
    return masked_attention(arrays, visible=visible, bias=bias, scale=1.0)


@mistake("mask, causal", "wrong scale")
def masked_path_scaled_by_sqrt_D(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Scales by 1/sqrt(D), the input dimension, on the path taken when a mask or causal is given."""
    visible = _visible(arrays[0].shape[1], mask, causal)
    if visible is None:
        return _reference(arrays, bias=bias)
    return masked_attention(arrays, visible=visible, bias=bias, scale=1 / np.sqrt(arrays[0].shape[0]))


@mistake("mask", "wrong axis")
def seen_keys_along_the_wrong_axis(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Zeroes the values of the inputs whose query sees no key, where the inputs whose key no query sees were
    meant (visible.any(axis=0) for visible.any(axis=1)): a visible key then contributes a zero value."""
    visible = _visible(arrays[0].shape[1], mask, causal)
    X_prime, A = _reference(arrays, mask=mask, causal=causal, bias=bias)
    if visible is None:
        return X_prime, A
    V = arrays[1] @ arrays[0] + arrays[4]
    V[:, ~visible.any(axis=0)] = 0.0
    return V @ A, A


@mistake("mask, causal", "warns")
def mask_as_the_log_of_the_visibility(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Adds log(visible) to the logits (log 0 = -inf hides a key): the right values, but numpy warns "divide by
    zero encountered in log" on every call that hides a key."""
    visible = _visible(arrays[0].shape[1], mask, causal)
    if visible is None:
        return _reference(arrays, bias=bias)
    penalty = np.log(visible.astype(np.float64)) + (0.0 if bias is None else np.asarray(bias))
    return masked_attention(arrays, bias=penalty)


@mistake("mask, causal", "unshifted")
def masked_softmax_without_the_shift(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Pair:
    """On the path taken when a mask or causal is given, exponentiates the visible logits without subtracting
    their maximum: right while every logit stays below ~709, inf / inf = NaN beyond."""
    visible = _visible(arrays[0].shape[1], mask, causal)
    if visible is None:
        return _reference(arrays, bias=bias)
    Q, K, V = _projections(arrays, None, "input")
    logits = (K.T @ Q) / np.sqrt(Q.shape[0]) + (0.0 if bias is None else np.asarray(bias))
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        weights = np.where(visible, np.exp(logits), 0.0)
        A = weights / weights.sum(axis=0, keepdims=True)
    return V @ A, A


@mistake("mask, causal", "convention: NaN")
def nan_for_queries_without_keys(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Pair:
    """Correct, but a query that sees no key gets NaN (softmax over logits that are all -inf: 0 / 0), as
    PyTorch's math backend gives. Not a semantic mistake: only the conventions law may fail on it."""
    X_prime, A = _reference(arrays, mask=mask, causal=causal, bias=bias)
    unseen = _unseen(arrays[0].shape[1], mask, causal)
    X_prime[:, unseen], A[:, unseen] = np.nan, np.nan
    return X_prime, A


@mistake("mask, causal", "convention: uniform")
def uniform_for_queries_without_keys(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Pair:
    """Correct, but a query that sees no key attends to every key evenly (what a finite fill such as
    torch.finfo.min gives when every key is hidden). Not a semantic mistake: only the conventions law may fail."""
    X_prime, A = _reference(arrays, mask=mask, causal=causal, bias=bias)
    N = arrays[0].shape[1]
    unseen = _unseen(N, mask, causal)
    A[:, unseen] = 1.0 / max(N, 1)
    X_prime[:, unseen] = (arrays[1] @ arrays[0] + arrays[4]) @ A[:, unseen]
    return X_prime, A
