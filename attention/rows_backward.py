"""The exact backward of the row-convention kernel `attention.rows.scaled_dot_product_attention` (torch's SDPA
signature), beside its forward; its signature is the contract a hand-written backward must follow:

    backward(query, key, value, d_out, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
             enable_gqa=False) -> (d_query, d_key, d_value)

each gradient of its input's shape, of <d_out, out> with out = scaled_dot_product_attention(query, key, value,
**the same keywords).

Derivation, rows as queries (P is L x S, P[l, s] the weight of key s for query l, O = P V, S = s q k^T + mask):

    dV = P^T dO                                   (O = P V is linear in V)
    dP = dO V^T
    dS = P o (dP - D 1^T),  D = rowsum(P o dP)    (softmax's Jacobian row by row; D = rowsum(dO o O), the
                                                   FlashAttention D term, since sum_s P[l, s] (dO V^T)[l, s]
                                                   = sum_e dO[l, e] O[l, e])
    dQ = s dS K,  dK = s dS^T Q.

A masked entry (boolean False, causal s > l, or a float mask of -inf) has P = 0, hence dS = 0: no gradient
flows through it; a query with no visible key has a zero row of P and gets dQ = 0 and gives nothing to any key
or value. The float mask is additive, so it changes P but not the formulas (its own gradient, dS, is not part
of the contract). Under enable_gqa a key/value head is read by the `group` query heads h with h // group equal
to it: its gradient is the sum of the gradients of its copies over that group. Inputs broadcast over their
batch axes as in the forward (numpy's matmul); a gradient is summed over the axes its input was broadcast along.
P is the forward's own (`attention.rows.attention_weights`: shifted by the row maximum over the visible keys),
so logits that the forward handles (1e4 and beyond) give finite gradients. The computation runs in float32
(float64 for float64 queries), as the forward does, and each gradient returns in its input's dtype.
"""

from __future__ import annotations

import operator

import numpy as np
from numpy.typing import ArrayLike

from attention._checks import as_float_array, check_finite
from attention.rows import Array, attention_weights


def scaled_dot_product_attention_backward(
    query: ArrayLike,
    key: ArrayLike,
    value: ArrayLike,
    d_out: ArrayLike,
    attn_mask: ArrayLike | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> tuple[Array, Array, Array]:
    """(d_query, d_key, d_value): the gradient of <d_out, scaled_dot_product_attention(query, key, value, ...)>
    with respect to query (..., L, E), key (..., S, E) and value (..., S, E_v); d_out has the output's shape
    (batch, L, E_v), the batch being the broadcast of the inputs' (and the float mask's) batch axes.

    The keywords are the forward's (dropout_p must be 0.0). Bad arguments raise ValueError or TypeError naming
    the argument and the shapes; the inputs are never modified. See the module's docstring for the derivation.
    """
    q_in, k_in, v_in, dO_in = (
        as_float_array(name, array)
        for name, array in (("query", query), ("key", key), ("value", value), ("d_out", d_out))
    )
    mask, heads = _check(q_in, k_in, v_in, dO_in, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    work = np.float64 if q_in.dtype.itemsize >= 8 else np.float32
    q, k, v, P, factor = attention_weights(q_in, k_in, v_in, mask, bool(is_causal), scale, bool(enable_gqa), work)
    dO = dO_in.astype(work)
    with np.errstate(over="ignore", invalid="ignore"):
        dV = np.swapaxes(P, -1, -2) @ dO
        dS = dO @ np.swapaxes(v, -1, -2)  # dP, overwritten by dS
        dS -= np.einsum("...ls,...ls->...l", P, dS)[..., None]
        dS *= P
        dQ = (dS @ k) * work(factor)
        dK = (np.swapaxes(dS, -1, -2) @ q) * work(factor)
    for name, gradient in (("d_query", dQ), ("d_key", dK), ("d_value", dV)):
        if not np.isfinite(gradient).all():
            raise ValueError(
                f"{name} overflows {gradient.dtype}; reduce the magnitudes of d_out (or of query, key, value)"
            )
    if heads is not None:  # enable_gqa: a key/value head's gradient is the sum over the query heads of its group
        H_kv = k_in.shape[-3]
        dK = dK.reshape(*dK.shape[:-3], H_kv, heads // H_kv, *dK.shape[-2:]).sum(axis=-3)
        dV = dV.reshape(*dV.shape[:-3], H_kv, heads // H_kv, *dV.shape[-2:]).sum(axis=-3)
    return (
        _unbroadcast(dQ, q_in.shape).astype(q_in.dtype),
        _unbroadcast(dK, k_in.shape).astype(k_in.dtype),
        _unbroadcast(dV, v_in.shape).astype(v_in.dtype),
    )


def _unbroadcast(gradient: Array, shape: tuple[int, ...]) -> Array:
    """Sum `gradient` over the axes along which an input of `shape` was broadcast to it."""
    extra = gradient.ndim - len(shape)
    summed = gradient.sum(axis=tuple(range(extra))) if extra else gradient
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and summed.shape[i] != 1)
    return summed.sum(axis=axes, keepdims=True) if axes else summed


def _check(
    query: Array,
    key: Array,
    value: Array,
    d_out: Array,
    attn_mask: ArrayLike | None,
    dropout_p: float,
    is_causal: bool,
    scale: float | None,
    enable_gqa: bool,
) -> tuple[Array | None, int | None]:
    """Validate every argument before any arithmetic; return the mask as an array (or None) and, under
    enable_gqa with fewer key/value heads than query heads, the number of query heads (else None)."""
    for name, array, expected in (
        ("query", query, "(..., L, E)"),
        ("key", key, "(..., S, E)"),
        ("value", value, "(..., S, E_v)"),
    ):
        if array.ndim < 2:
            raise ValueError(f"{name} must have shape {expected} (at least 2-D); got shape {array.shape}")
    L, E = query.shape[-2:]
    S = key.shape[-2]
    if key.shape[-1] != E:
        raise ValueError(f"key must have shape (..., S, E) = (..., S, {E}), like query; got shape {key.shape}")
    if value.shape[-2] != S:
        raise ValueError(f"value must have shape (..., S, E_v) = (..., {S}, E_v), like key; got shape {value.shape}")
    if not isinstance(dropout_p, int | float) or dropout_p != 0.0:
        raise ValueError(f"dropout_p must be 0.0 (this kernel has no dropout); got {dropout_p!r}")
    for name, flag in (("is_causal", is_causal), ("enable_gqa", enable_gqa)):
        if not isinstance(flag, bool | np.bool_):
            raise TypeError(f"{name} must be True or False; got {flag!r}")
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, int | float | np.floating | np.integer):
            raise TypeError(f"scale must be a real number or None; got {type(scale).__name__} {scale!r}")
        if not np.isfinite(scale):
            raise ValueError(f"scale must be finite; got {scale!r}")
    heads = _check_heads(query, key, value, enable_gqa)
    batch = _broadcast("query, key and value", query.shape[:-2], key.shape[:-2], value.shape[:-2], heads=heads)
    logits_batch = _broadcast("query and key", query.shape[:-2], key.shape[:-2], heads=heads)
    mask = None
    if attn_mask is not None:
        mask = np.asarray(attn_mask)
        if mask.dtype != np.bool_ and mask.dtype.kind != "f":
            raise TypeError(f"attn_mask must be a boolean or float array; got dtype {mask.dtype}")
        logits_shape = (*logits_batch, L, S)
        try:
            mask_shape = np.broadcast_shapes(mask.shape, logits_shape)
        except ValueError:
            mask_shape = ()
        if mask.ndim < 1 or mask_shape[-2:] != (L, S) or (mask.dtype == np.bool_ and mask_shape != logits_shape):
            raise ValueError(
                f"attn_mask must broadcast to the logits' shape (..., L, S) = {logits_shape}; got shape {mask.shape}"
            )
        if mask.dtype.kind == "f":
            if np.isnan(mask).any() or np.isposinf(mask).any():
                raise ValueError("attn_mask (float, additive) must hold finite values or -inf (hidden keys)")
            batch = np.broadcast_shapes(batch, mask_shape[:-2])
    for name, array in (("query", query), ("key", key), ("value", value), ("d_out", d_out)):
        check_finite(name, array)
    expected_out = (*batch, L, value.shape[-1])
    if d_out.shape != expected_out:
        raise ValueError(
            f"d_out must have the output's shape (..., L, E_v) = {expected_out}; got shape {d_out.shape} "
            f"(query {query.shape}, key {key.shape}, value {value.shape})"
        )
    return mask, heads


def _check_heads(query: Array, key: Array, value: Array, enable_gqa: bool) -> int | None:
    """Under enable_gqa with fewer key/value heads than query heads: the query heads (the axis -3 that key and
    value are repeated to), after checking that they are a multiple of the key heads; else None."""
    if not enable_gqa or query.ndim < 3:
        return None
    if key.ndim < 3:
        raise ValueError(f"enable_gqa: key must have a heads axis (..., H_kv, S, E); got shape {key.shape}")
    if key.shape[-3] == query.shape[-3]:
        return None
    H_q, H_kv = query.shape[-3], key.shape[-3]
    if value.ndim < 3 or value.shape[-3] != H_kv:
        raise ValueError(
            f"enable_gqa: value must have key's {H_kv} heads on axis -3; "
            f"got shapes key {key.shape}, value {value.shape}"
        )
    if H_kv == 0 or H_q % H_kv:
        raise ValueError(f"enable_gqa: {H_q} query heads (query {query.shape}) are not a multiple of {H_kv} key heads")
    return operator.index(H_q)


def _broadcast(what: str, *shapes: tuple[int, ...], heads: int | None) -> tuple[int, ...]:
    """The broadcast of batch shapes, key and value counting `heads` heads on axis -3 when repeated (gqa)."""
    if heads is not None:
        shapes = (shapes[0], *((*shape[:-1], heads) for shape in shapes[1:]))
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ValueError(f"the batch axes of {what} do not broadcast: {', '.join(map(str, shapes))}") from None
