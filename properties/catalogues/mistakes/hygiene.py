"""Correct numbers, bad manners: inputs modified, results not reproducible, stale caches."""

from __future__ import annotations

from typing import Any

import numpy as np

from attention import multihead_scaled_self_attention
from attention.rows import scaled_dot_product_attention as row_attention
from properties.catalogues.mistakes._base import Array, Pair, correct_attention, mistake, stable_softmax


def mutates_inputs(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Correct output, but centres X in place (a caller's array is changed)."""
    result = correct_attention(
        X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / np.sqrt(omega_q.shape[0])
    )
    X -= X.mean() + 1.0
    return result


def nondeterministic_order(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Sums the values in a random order on every call: equal within rounding, not bitwise reproducible."""
    _, A = correct_attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / np.sqrt(omega_q.shape[0]))
    V = omega_v @ X + beta_v
    order = np.random.default_rng().permutation(X.shape[1])
    wobble = np.nextafter(1.0, 2.0) if np.random.default_rng().random() < 0.5 else 1.0
    return (V[:, order] * wobble) @ A[order, :], A


_CACHE: dict[Any, Pair] = {}


def cached_by_shape(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Caches its result by the shapes of the arguments, so a second problem of the same shape gets a stale answer."""
    key = tuple(a.shape for a in (X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k))
    if key not in _CACHE:
        _CACHE[key] = correct_attention(
            X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / np.sqrt(omega_q.shape[0])
        )
    X_prime, A = _CACHE[key]
    return X_prime.copy(), A.copy()


_BUFFERS: dict[Any, Any] = {}  # the output buffers the mistakes below reuse, by name and shape


def _reused(name: str, *results: Array) -> Any:
    """`results` copied into buffers kept by (name, shapes) and reused on the next call of the same shapes."""
    key = (name, *(r.shape for r in results))
    buffers = _BUFFERS.setdefault(key, tuple(np.empty_like(r) for r in results))
    for buffer, result in zip(buffers, results, strict=True):
        buffer[...] = result
    return buffers if len(buffers) > 1 else buffers[0]


@mistake("none", "reused output buffer")
def reuses_its_output_buffer(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Correct values, written into the same two arrays on every call of the same shapes: the next call changes
    the result the caller holds."""
    X_prime, A = correct_attention(
        X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / np.sqrt(omega_q.shape[0])
    )
    return _reused("attention", X_prime, A)  # type: ignore[no-any-return]


@mistake("none", "reused output buffer")
def softmax_reuses_its_output_buffer(data: Array) -> Array:
    """A correct column softmax written into the same array on every call of the same shape."""
    return _reused("softmax", stable_softmax(data))  # type: ignore[no-any-return]


@mistake("none", "reused output buffer")
def multihead_reuses_its_output_buffer(X: Array, heads: Any, omega_c: Array) -> Array:
    """Correct multi-head attention written into the same array on every call of the same shapes."""
    return _reused("multihead", np.asarray(multihead_scaled_self_attention(X, heads, omega_c)))  # type: ignore[no-any-return]


@mistake("none", "reused output buffer")
def kernel_reuses_its_output_buffer(
    query: Array, key: Array, value: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Array:  # fmt: skip
    """A correct row-convention kernel writing into the same array on every call of the same shapes."""
    out = row_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    return _reused("kernel", out)  # type: ignore[no-any-return]
