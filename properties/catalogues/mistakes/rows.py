"""Mistakes in row-convention kernels: f(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
enable_gqa=False) on (B, H, L, E) rows, as torch's SDPA; each starts from attention/rows.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from attention.rows import scaled_dot_product_attention as row_attention
from properties.catalogues.mistakes._base import Array, mistake, rows_softmax


def kernel_scaled_by_value_width(
    query: Array, key: Array, value: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Array:  # fmt: skip
    """Defaults the scale to 1/sqrt(E_v), the value width, instead of 1/sqrt(E): right only when E_v = E."""
    scale = 1 / np.sqrt(value.shape[-1]) if scale is None else scale
    return row_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)


def kernel_ignores_scale(
    query: Array, key: Array, value: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Array:  # fmt: skip
    """Takes scale= and always uses 1/sqrt(E)."""
    return row_attention(query, key, value, attn_mask, dropout_p, is_causal, None, enable_gqa)


def kernel_softmax_over_queries(
    query: Array, key: Array, value: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Array:  # fmt: skip
    """Normalises q k^T over the queries (axis -2) instead of over the keys (axis -1)."""
    s = 1 / np.sqrt(query.shape[-1]) if scale is None else scale
    weights = rows_softmax(query @ np.swapaxes(key, -1, -2) * s, True if attn_mask is None else attn_mask, axis=-2)
    return np.asarray((weights @ value).astype(query.dtype))


def kernel_mask_polarity_inverted(
    query: Array, key: Array, value: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Array:  # fmt: skip
    """Reads a boolean attn_mask as True = masked out (the convention of some libraries), not True = takes part."""
    mask = None if attn_mask is None else ~np.asarray(attn_mask) if np.asarray(attn_mask).dtype == bool else attn_mask
    return row_attention(query, key, value, mask, dropout_p, is_causal, scale, enable_gqa)


def kernel_causal_upper_triangle(
    query: Array, key: Array, value: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Array:  # fmt: skip
    """Implements is_causal with np.triu: query l sees the keys s >= l, the future, instead of s <= l."""
    if is_causal:
        L, S = query.shape[-2], key.shape[-2]
        upper = np.triu(np.ones((L, S), dtype=bool))
        attn_mask = upper if attn_mask is None else upper & np.asarray(attn_mask)
    return row_attention(query, key, value, attn_mask, dropout_p, False, scale, enable_gqa)


def kernel_keywords_ignored(
    query: Array, key: Array, value: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Array:  # fmt: skip
    """Takes attn_mask and is_causal, and ignores both."""
    return row_attention(query, key, value, None, dropout_p, False, scale, enable_gqa)


def kernel_heads_merged_into_length(
    query: Array, key: Array, value: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Array:  # fmt: skip
    """Folds the heads into the length, (B, H, L, E) -> (B, H L, E): every query attends to the keys of all heads."""
    B, H, L = query.shape[:3]
    q, k, v = (a.reshape(B, H * a.shape[-2], a.shape[-1]) for a in (query, key, value))
    out = row_attention(q, k, v, None, dropout_p, False, scale)
    return np.asarray(out.reshape(B, H, L, value.shape[-1]))


def kernel_keys_of_first_batch_element(
    query: Array, key: Array, value: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Array:  # fmt: skip
    """Uses the keys and values of batch element 0 for every batch element (a test with batch size 1 hides it)."""
    key, value = np.broadcast_to(key[:1], key.shape), np.broadcast_to(value[:1], value.shape)
    return row_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)


def kernel_groups_tiled(
    query: Array, key: Array, value: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Array:  # fmt: skip
    """Expands grouped key/value heads with np.tile (query head h reads key head h mod H_kv) instead of np.repeat
    (h // G): right only with one key/value head."""
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        group = query.shape[-3] // key.shape[-3]
        key, value = np.tile(key, (1, group, 1, 1)), np.tile(value, (1, group, 1, 1))
    return row_attention(query, key, value, attn_mask, dropout_p, is_causal, scale)


@mistake("dtype", "output dtype")
def kernel_promotes_to_float64(
    query: Array, key: Array, value: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Array:  # fmt: skip
    """Correct values, computed and returned in float64 whatever the inputs' dtype: float32 in, float64 out."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (query, key, value))
    return row_attention(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa)
