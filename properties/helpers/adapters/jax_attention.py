"""jax.nn.dot_product_attention in the flash convention: `flash_attn_func` and `flash_attn_varlen_func` with
FlashAttention's signatures, for `--convention flash --array jax` and `--varlen`.

- Layout: q (batch, L, heads, D), k and v (batch, S, heads_k, D | D_v) are jax's (B, T, N, H) already; grouped
  heads are taken as they are. jax needs values as wide as the keys: q, k and v get zero columns up to
  max(D, D_v) (a zero column adds 0 to every logit) with the scale of width D passed explicitly, and the output
  is cut back to D_v columns.
- Causal and windows: `causal` is `is_causal`, `window_size=(left, right)` is `local_window_size` (-1, unbounded,
  becomes max(L, S), which no distance reaches). jax aligns both to the top left: query n sees key m when
  m <= n (causal) and n - left <= m <= n + right (window), whatever L and S, so check it with
  `--causal-alignment top-left` (the flash convention's default, bottom-right, is FlashAttention's; the two agree
  when L = S).
- The log-sum-exp: with `return_attn_probs=True` the adapter returns (out, softmax_lse) (no probabilities: the
  flash convention's call reads a third item as probabilities and rejects None), softmax_lse
  (batch, heads, L) being jax's `return_residual`: logsumexp (natural log) of the scaled, masked logits, computed
  in float32 (float64 for float64 inputs) and returned in the inputs' dtype. A query that sees no key gets
  lse = log(S) - 0.7 * max(float32) (jax's masked fill) where FlashAttention writes +inf, and its output is the
  mean of all values (FlashAttention's: zero): conventions.
- Packed batches: `flash_attn_varlen_func` unpacks (total, heads, D) into a padded batch (B, max_seqlen, heads, D),
  calls jax once with `query_seq_lengths` and `key_value_seq_lengths`, and packs the real rows back. jax zeroes
  the outputs of padded query rows and hides padded keys; a sequence with no keys gives its queries the mean of
  its (zero) padded values, which is zero, as FlashAttention's.
- No dropout (`dropout_p` must be 0). jax is imported on the first call; 64-bit mode is switched on only for
  float64 inputs. Each call runs through one jax.jit (causal, window and the lse static; the scale traced).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np


def _jax(dtype: Any) -> Any:
    """jax, with 64-bit mode switched on when `dtype` is float64 (jax computes in float32 otherwise)."""
    import jax

    config: Any = jax.config
    if np.dtype(dtype) == np.float64 and not config.read("jax_enable_x64"):
        config.update("jax_enable_x64", True)
    return jax


def _window(window_size: Any, L: int, S: int) -> tuple[int, int] | None:
    """FlashAttention's window_size (left, right), -1 unbounded, as jax's local_window_size (None: no window)."""
    left, right = (int(side) for side in window_size)
    if left < 0 and right < 0:
        return None
    unbounded = max(L, S, 1)
    return (unbounded if left < 0 else left, unbounded if right < 0 else right)


@functools.cache
def _attention(causal: bool, window: tuple[int, int] | None, lse: bool, lengths: bool) -> Callable[..., Any]:
    """One jitted call of jax.nn.dot_product_attention with these static options; q, k, v, scale (and the lengths)
    traced. Returns (out cut to D_v columns, lse (B, heads, L) or None)."""
    import jax
    import jax.numpy as jnp

    def attention(q: Any, k: Any, v: Any, scale: Any, *seq_lengths: Any) -> tuple[Any, Any]:
        D_v = v.shape[-1]
        W = max(q.shape[-1], D_v)
        pad = [(0, 0)] * 3
        q, k, v = (jnp.pad(a, [*pad, (0, W - a.shape[-1])]) for a in (q, k, v))
        returned = jax.nn.dot_product_attention(  # type: ignore[call-overload]
            q, k, v, scale=scale, is_causal=causal, local_window_size=window, return_residual=lse,
            query_seq_lengths=seq_lengths[0] if lengths else None,
            key_value_seq_lengths=seq_lengths[1] if lengths else None,
        )  # fmt: skip
        out, residual = returned if lse else (returned, None)
        return out[..., :D_v], None if residual is None else jnp.swapaxes(residual, 1, 2)

    return jax.jit(attention)


def flash_attn_func(
    q: Any,
    k: Any,
    v: Any,
    dropout_p: float = 0.0,
    softmax_scale: Any = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    return_attn_probs: bool = False,
) -> Any:
    """FlashAttention's flash_attn_func on jax.nn.dot_product_attention: out (batch, L, heads, D_v), or with
    return_attn_probs=True (out, softmax_lse (batch, heads, L))."""
    if dropout_p:
        raise ValueError(f"dropout_p must be 0.0: jax.nn.dot_product_attention has no dropout; got {dropout_p}")
    jax = _jax(q.dtype)
    q, k, v = (a if isinstance(a, jax.Array) else jax.device_put(np.asarray(a)) for a in (q, k, v))
    if q.ndim != 4 or k.ndim != 4 or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"q, k, v must be (batch, L, heads, D), (batch, S, heads_k, D), (batch, S, heads_k, D_v); "
                         f"got {q.shape}, {k.shape}, {v.shape}")  # fmt: skip
    scale = 1.0 / np.sqrt(q.shape[-1]) if softmax_scale is None else softmax_scale
    window = _window(window_size, q.shape[1], k.shape[1])
    out, lse = _attention(bool(causal), window, bool(return_attn_probs), False)(q, k, v, scale)
    return (out, lse) if return_attn_probs else out


def flash_attn_varlen_func(
    q: Any,
    k: Any,
    v: Any,
    cu_seqlens_q: Any,
    cu_seqlens_k: Any,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: Any = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    return_attn_probs: bool = False,
) -> Any:
    """FlashAttention's flash_attn_varlen_func on jax.nn.dot_product_attention: q (total_q, heads, D), k and v
    (total_k, heads_k, D | D_v) packed by cu_seqlens_q and cu_seqlens_k (batch + 1 offsets), out (total_q, heads,
    D_v); with return_attn_probs=True (out, softmax_lse (heads, total_q))."""
    if dropout_p:
        raise ValueError(f"dropout_p must be 0.0: jax.nn.dot_product_attention has no dropout; got {dropout_p}")
    jax = _jax(np.asarray(q).dtype if not hasattr(q, "dtype") else q.dtype)
    jnp = jax.numpy
    starts_q, starts_k = (np.asarray(c, dtype=np.int64) for c in (cu_seqlens_q, cu_seqlens_k))
    if starts_q.ndim != 1 or starts_q.shape != starts_k.shape or starts_q.size < 1:
        raise ValueError(f"cu_seqlens_q and cu_seqlens_k must be offsets of one shape (batch + 1,); got "
                         f"{starts_q.shape} and {starts_k.shape}")  # fmt: skip
    lengths_q, lengths_k = np.diff(starts_q), np.diff(starts_k)
    L, S = max(int(max_seqlen_q), 1), max(int(max_seqlen_k), 1)
    if np.any(lengths_q > L) or np.any(lengths_k > S):
        raise ValueError(f"a sequence is longer than max_seqlen_q={max_seqlen_q} or max_seqlen_k={max_seqlen_k}")

    def unpacked(a: Any, starts: Any, lengths: Any, width: int) -> Any:
        """(total, heads, D) as (batch, width, heads, D): sequence b's rows first, then rows of zeros."""
        rows = np.asarray(a)
        index = starts[:-1, None] + np.arange(width)[None, :]
        real = np.arange(width)[None, :] < lengths[:, None]
        padded = np.zeros((len(lengths), width, *rows.shape[1:]), dtype=rows.dtype)
        padded[real] = rows[index[real]]
        return jax.device_put(padded)

    qs, ks, vs = (
        unpacked(q, starts_q, lengths_q, L),
        unpacked(k, starts_k, lengths_k, S),
        unpacked(v, starts_k, lengths_k, S),
    )
    scale = 1.0 / np.sqrt(qs.shape[-1]) if softmax_scale is None else softmax_scale
    window = _window(window_size, L, S)
    seq_lengths = (jnp.asarray(lengths_q, dtype=jnp.int32), jnp.asarray(lengths_k, dtype=jnp.int32))
    out, lse = _attention(bool(causal), window, bool(return_attn_probs), True)(qs, ks, vs, scale, *seq_lengths)
    real = np.arange(L)[None, :] < lengths_q[:, None]
    packed = np.asarray(out)[real]  # (total_q, heads, D_v): the real rows, sequence after sequence
    if not return_attn_probs:
        return packed
    return packed, np.swapaxes(np.asarray(lse), 0, 1)[:, real]  # lse (batch, heads, L) -> (heads, total_q)
