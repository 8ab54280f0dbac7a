"""Mistakes in kernels as engineers ship them (issue 20): FlashAttention-signature kernels (causal alignment, windows,
soft-capping, ALiBi, sinks, decoding, the log-sum-exp), a row-convention kernel with the other alignment, a packed
(varlen) kernel and log-sum-exp merges. Each is one twist of a plain numpy computation (`_attend`, written out
here) or of attention/flash.py, behind flash_attn_func's own signature so that signature inspection sees every
option.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from attention.flash import flash_attn_func, flash_attn_varlen_func
from attention.rows import scaled_dot_product_attention as row_attention
from properties.catalogues.mistakes._base import MISTAKES, Array, mistake
from properties.helpers.flash_convention import FlashImplementation
from properties.helpers.row_convention import Convention

_SIGNATURE = inspect.signature(flash_attn_func)


def _attend(
    o: dict[str, Any],
    *,
    alignment: str = "bottom-right",
    window_alignment: str | None = None,
    left_extra: int = 0,
    right_extra: int = 0,
    unbounded_as_zero: bool = False,
    cap_before_scale: bool = False,
    alibi_sign: float = 1.0,
    signed_distance: bool = False,
    sink_in_numerator: bool = False,
    scale_with_options: float | None = None,
    softmax_axis: int = -1,
    lse_base_2: bool = False,
    always_causal: bool = False,
    ignore_scale: bool = False,
    cache_off_by_one: bool = False,
    lse_over_all_keys: bool = False,
    lse_without_alibi: bool = False,
    nan_for_empty_rows: bool = False,
    offset: int | None = None,
) -> Any:
    """flash_attn_func's computation written out in float64 (correct with no twist), with one twist."""
    q, k, v = (np.asarray(o[name], dtype=np.float64) for name in "qkv")
    if cache_off_by_one and q.shape[1] == 1 and k.shape[1] > 0:
        k, v = k[:, :-1], v[:, :-1]
    B, L, H, D = q.shape
    S, group = k.shape[1], H // k.shape[2]
    scale = 1 / np.sqrt(D) if o["softmax_scale"] is None or ignore_scale else o["softmax_scale"]
    mods = o["softcap"] > 0 or o["alibi_slopes"] is not None or o["sinks"] is not None
    if scale_with_options is not None and mods:
        scale = scale_with_options
    qh = np.swapaxes(q, 1, 2)
    kh, vh = (np.repeat(np.swapaxes(a, 1, 2), group, axis=1) for a in (k, v))
    raw = qh @ np.swapaxes(kh, -1, -2)
    cap = float(o["softcap"])
    if cap > 0:
        s = scale * (cap * np.tanh(raw / cap)) if cap_before_scale else cap * np.tanh(scale * raw / cap)
    else:
        s = scale * raw

    def rel(kind: str) -> Any:
        shift = (S - L if kind == "bottom-right" else 0) if offset is None else offset
        return np.arange(L)[:, None] + shift - np.arange(S)[None, :]

    seen = np.ones((L, S), dtype=bool)
    if o["causal"] or always_causal:
        seen &= rel(alignment) >= 0
    left, right = o["window_size"]
    if unbounded_as_zero and "window_size" in o["given"]:
        left, right = max(left, 0), max(right, 0)
    r = rel(window_alignment or alignment)
    if right >= 0 and not o["causal"]:
        seen &= r >= -(right + right_extra)
    if left >= 0:
        seen &= r <= left + left_extra
    unbiased = s
    if o["alibi_slopes"] is not None:
        slopes = np.broadcast_to(np.asarray(o["alibi_slopes"], dtype=np.float64), (B, H))
        distance = rel(alignment) if signed_distance else np.abs(rel(alignment))
        s = s - alibi_sign * slopes[:, :, None, None] * distance
    shown = np.broadcast_to(seen, s.shape)
    filled = np.where(shown, s, -np.inf)
    sink = None if o["sinks"] is None else np.asarray(o["sinks"], dtype=np.float64)[None, :, None, None]
    top = np.max(filled, axis=softmax_axis, keepdims=True, initial=-np.inf)
    if sink is not None and softmax_axis == -1:
        top = np.maximum(top, sink)
    top = np.where(np.isfinite(top), top, 0.0)
    weights = np.exp(filled - top)
    total = weights.sum(axis=softmax_axis, keepdims=True)
    if sink is not None:
        total = total + np.exp(sink - top)
        if sink_in_numerator:
            weights = np.where(shown, weights + np.exp(sink - top), 0.0)
    if nan_for_empty_rows:
        with np.errstate(invalid="ignore"):
            probs = weights / total  # 0 / 0 = NaN where a query sees no key
    else:
        probs = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    out = np.swapaxes(probs @ vh, 1, 2).astype(np.asarray(o["q"]).dtype)
    if not o["return_attn_probs"]:
        return out
    lse = np.where(total[..., 0] > 0, top[..., 0] + np.log(np.where(total[..., 0] > 0, total[..., 0], 1.0)), -np.inf)
    if lse_over_all_keys or lse_without_alibi:
        reduced = np.where(shown, unbiased, -np.inf) if lse_without_alibi else s
        lse = np.logaddexp.reduce(reduced, axis=-1)
    return out, lse / np.log(2) if lse_base_2 else lse, probs


def _flash_kernel(body: Callable[[dict[str, Any]], Any]) -> Callable[..., Any]:
    """A kernel with flash_attn_func's signature whose arguments, bound by name, go to body."""

    @functools.wraps(body)
    def kernel(*args: Any, **kwargs: Any) -> Any:
        bound = _SIGNATURE.bind(*args, **kwargs)
        given = frozenset(bound.arguments)
        bound.apply_defaults()
        return body({**bound.arguments, "given": given})

    kernel.__signature__ = _SIGNATURE  # type: ignore[attr-defined]
    return kernel


@mistake("causal", "alignment")
@_flash_kernel
def flash_causal_top_left(o: dict[str, Any]) -> Any:
    """Aligns causal to the top left (query n sees keys m <= n, torch's is_causal) where FlashAttention's is
    bottom-right (m <= n + S - L): the same when L = S, wrong for decoding and cross-attention."""
    return _attend(o, alignment="top-left")


@mistake("causal", "alignment")
def sdpa_causal_bottom_right(
    query: Array, key: Array, value: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Array:  # fmt: skip
    """Aligns is_causal to the bottom right (key m <= n + S - L) where torch's SDPA is top-left (m <= n)."""
    if is_causal:
        L, S = query.shape[-2], key.shape[-2]
        tri = np.tri(L, S, S - L, dtype=bool)
        attn_mask = tri if attn_mask is None else tri & np.asarray(attn_mask)
    return row_attention(query, key, value, attn_mask, dropout_p, False, scale, enable_gqa)


@mistake("window", "off by one")
@_flash_kernel
def flash_window_left_off_by_one(o: dict[str, Any]) -> Any:
    """Lets a query see left + 1 keys behind it (rel <= left + 1, a < written as <=)."""
    return _attend(o, left_extra=1)


@mistake("window", "off by one")
@_flash_kernel
def flash_window_right_off_by_one(o: dict[str, Any]) -> Any:
    """Lets a query see right + 1 keys ahead of it."""
    return _attend(o, right_extra=1)


@mistake("window", "alignment")
@_flash_kernel
def flash_window_top_left(o: dict[str, Any]) -> Any:
    """Aligns the window to the top left (rel = n - m) while causal is bottom-right (rel = n + S - L - m)."""
    return _attend(o, window_alignment="top-left")


@mistake("window", "edge")
@_flash_kernel
def flash_window_unbounded_as_zero(o: dict[str, Any]) -> Any:
    """Takes a window path whenever window_size is passed, and there reads a side of -1 (unbounded) as 0
    (max(side, 0)): window_size=(-1, -1) sees one key."""
    return _attend(o, unbounded_as_zero=True)


@mistake("softcap", "order")
@_flash_kernel
def flash_softcap_before_the_scale(o: dict[str, Any]) -> Any:
    """Soft-caps the raw q . k and scales afterwards, scale c tanh(q.k / c), where FlashAttention and Gemma 2 cap
    the scaled logit, c tanh(scale q.k / c)."""
    return _attend(o, cap_before_scale=True)


@mistake("softcap", "ignored")
@_flash_kernel
def flash_softcap_ignored(o: dict[str, Any]) -> Any:
    """Takes softcap and never caps."""
    return _attend({**o, "softcap": 0.0})


@mistake("alibi", "sign")
@_flash_kernel
def flash_alibi_wrong_sign(o: dict[str, Any]) -> Any:
    """Adds +slope |rel| instead of -slope |rel|: far keys are favoured."""
    return _attend(o, alibi_sign=-1.0)


@mistake("alibi", "distance")
@_flash_kernel
def flash_alibi_signed_distance(o: dict[str, Any]) -> Any:
    """Charges slope (n - m) (signed) instead of slope |n - m|: right only for keys behind the query (causal)."""
    return _attend(o, signed_distance=True)


@mistake("sinks", "numerator")
@_flash_kernel
def flash_sink_in_the_numerator(o: dict[str, Any]) -> Any:
    """Adds the sink's exp to every visible key's numerator as well as to the denominator."""
    return _attend(o, sink_in_numerator=True)


@mistake("softcap, alibi, sinks", "path")
@_flash_kernel
def flash_score_modification_path_unscaled(o: dict[str, Any]) -> Any:
    """Takes a separate path when softcap, alibi_slopes or sinks is given, and that path forgets the scale (uses 1)."""
    return _attend(o, scale_with_options=1.0)


@mistake("rows", "axis")
@_flash_kernel
def flash_softmax_over_queries(o: dict[str, Any]) -> Any:
    """Normalises over the queries (axis -2) instead of over the keys."""
    return _attend(o, softmax_axis=-2)


@mistake("causal", "flag")
@_flash_kernel
def flash_always_causal(o: dict[str, Any]) -> Any:
    """Applies the causal mask whatever `causal` says (a hard-coded flag)."""
    return _attend(o, always_causal=True)


@mistake("scale", "ignored")
@_flash_kernel
def flash_ignores_softmax_scale(o: dict[str, Any]) -> Any:
    """Takes softmax_scale and always uses 1/sqrt(D)."""
    return _attend(o, ignore_scale=True)


@mistake("decoding", "off by one")
@_flash_kernel
def flash_decoding_cache_off_by_one(o: dict[str, Any]) -> Any:
    """A decoding step (L = 1) attends to the first S - 1 keys: the cache length excludes the newest key."""
    return _attend(o, cache_off_by_one=True)


@mistake("lse", "base")
@_flash_kernel
def flash_lse_in_base_2(o: dict[str, Any]) -> Any:
    """Returns log2 of the softmax denominator (an exp2 kernel's internal lse) as softmax_lse, the natural log."""
    return _attend(o, lse_base_2=True)


@mistake("lse", "mask")
@_flash_kernel
def flash_lse_over_all_keys(o: dict[str, Any]) -> Any:
    """Returns softmax_lse as a log-sum-exp over every key, the masked ones included (a separate reduction that
    forgets causal and the window); out is right."""
    return _attend(o, lse_over_all_keys=True)


@mistake("lse, alibi", "bias")
@_flash_kernel
def flash_lse_without_the_alibi_bias(o: dict[str, Any]) -> Any:
    """Returns softmax_lse of the logits before the ALiBi bias (the lse taken from the unbiased scores); out is
    right."""
    return _attend(o, lse_without_alibi=True)


@mistake("causal, window", "empty row")
@_flash_kernel
def flash_nan_for_queries_without_keys(o: dict[str, Any]) -> Any:
    """Divides by the softmax denominator unguarded: a query that sees no key gets 0 / 0 = NaN in its output."""
    return _attend(o, nan_for_empty_rows=True)


@mistake("varlen", "boundary")
def varlen_sees_the_previous_last_block(
    q: Array, k: Array, v: Array, cu_seqlens_q: Any, cu_seqlens_k: Any, max_seqlen_q: int, max_seqlen_k: int,
    dropout_p: float = 0.0, softmax_scale: float | None = None, causal: bool = False,
    window_size: tuple[int, int] = (-1, -1), softcap: float = 0.0, alibi_slopes: Any = None,
    deterministic: bool = False, return_attn_probs: bool = False, *, sinks: Any = None,
) -> Any:  # fmt: skip
    """Starts each packed sequence's keys at the block of 16 before its own start: a sequence also sees the last
    block of the previous one (a block index rounded down)."""
    cu_q, cu_k = np.asarray(cu_seqlens_q), np.asarray(cu_seqlens_k)
    out = np.zeros((q.shape[0], q.shape[1], v.shape[-1]), dtype=q.dtype)
    for b in range(len(cu_q) - 1):
        q0, q1, k0, k1 = int(cu_q[b]), int(cu_q[b + 1]), int(cu_k[b]), int(cu_k[b + 1])
        start = k0 // 16 * 16
        if q1 > q0:
            out[q0:q1] = flash_attn_func(q[None, q0:q1], k[None, start:k1], v[None, start:k1],
                                         softmax_scale=softmax_scale, causal=causal)[0]  # fmt: skip
    return out


def _varlen_by_sequence(
    q: Array, k: Array, v: Array, cu_seqlens_q: Any, cu_seqlens_k: Any, options: dict[str, Any],
    twist: Callable[[int, dict[str, Any]], dict[str, Any]],
) -> Array:  # fmt: skip
    """A packed batch computed sequence by sequence with _attend, each sequence's options (and _attend's keywords)
    from twist(b, options): out (total_q, H, D_v)."""
    cu_q, cu_k = np.asarray(cu_seqlens_q), np.asarray(cu_seqlens_k)
    out = np.zeros((q.shape[0], q.shape[1], v.shape[-1]), dtype=np.float64)
    for b in range(len(cu_q) - 1):
        q0, q1, k0, k1 = int(cu_q[b]), int(cu_q[b + 1]), int(cu_k[b]), int(cu_k[b + 1])
        if q1 > q0:
            extra = twist(b, options)
            o = {**options, **extra.pop("options", {}), "q": q[None, q0:q1], "k": k[None, k0:k1], "v": v[None, k0:k1],
                 "return_attn_probs": False, "given": frozenset(options)}  # fmt: skip
            out[q0:q1] = _attend(o, **extra)[0]
    return out


def _sequence_slopes(slopes: Any, b: int) -> Any:
    """Sequence b's slopes, (nheads,), from (nheads,) or (batch, nheads)."""
    if slopes is None:
        return None
    array = np.asarray(slopes, dtype=np.float64)
    return array[b] if array.ndim == 2 else array


@mistake("varlen", "alignment")
def varlen_aligned_by_the_longest_sequences(
    q: Array, k: Array, v: Array, cu_seqlens_q: Any, cu_seqlens_k: Any, max_seqlen_q: int, max_seqlen_k: int,
    dropout_p: float = 0.0, softmax_scale: float | None = None, causal: bool = False,
    window_size: tuple[int, int] = (-1, -1), softcap: float = 0.0, alibi_slopes: Any = None,
    deterministic: bool = False, return_attn_probs: bool = False, *, sinks: Any = None,
) -> Any:  # fmt: skip
    """Aligns causal and windows by the packed batch's max_seqlen_k - max_seqlen_q for every sequence instead of by
    each sequence's own S_b - L_b: right when every sequence has the longest lengths, wrong otherwise."""
    options = {"softmax_scale": softmax_scale, "causal": causal, "window_size": tuple(window_size),
               "softcap": softcap, "sinks": sinks}  # fmt: skip
    return _varlen_by_sequence(
        q, k, v, cu_seqlens_q, cu_seqlens_k, options,
        lambda b, o: {"offset": int(max_seqlen_k) - int(max_seqlen_q),
                      "options": {"alibi_slopes": _sequence_slopes(alibi_slopes, b)}},
    )  # fmt: skip


@mistake("varlen, alibi", "batch")
def varlen_alibi_slopes_of_the_first_sequence(
    q: Array, k: Array, v: Array, cu_seqlens_q: Any, cu_seqlens_k: Any, max_seqlen_q: int, max_seqlen_k: int,
    dropout_p: float = 0.0, softmax_scale: float | None = None, causal: bool = False,
    window_size: tuple[int, int] = (-1, -1), softcap: float = 0.0, alibi_slopes: Any = None,
    deterministic: bool = False, return_attn_probs: bool = False, *, sinks: Any = None,
) -> Any:  # fmt: skip
    """Reads (batch, nheads) ALiBi slopes at row 0 for every packed sequence (the batch index dropped)."""
    options = {"softmax_scale": softmax_scale, "causal": causal, "window_size": tuple(window_size),
               "softcap": softcap, "sinks": sinks}  # fmt: skip
    return _varlen_by_sequence(
        q,
        k,
        v,
        cu_seqlens_q,
        cu_seqlens_k,
        options,
        lambda b, o: {"options": {"alibi_slopes": _sequence_slopes(alibi_slopes, 0)}},
    )


@mistake("varlen, lse", "mask")
def varlen_lse_over_every_packed_key(
    q: Array, k: Array, v: Array, cu_seqlens_q: Any, cu_seqlens_k: Any, max_seqlen_q: int, max_seqlen_k: int,
    dropout_p: float = 0.0, softmax_scale: float | None = None, causal: bool = False,
    window_size: tuple[int, int] = (-1, -1), softcap: float = 0.0, alibi_slopes: Any = None,
    deterministic: bool = False, return_attn_probs: bool = False, *, sinks: Any = None,
) -> Any:  # fmt: skip
    """Right outputs, but each query's softmax_lse over the keys of the whole packed batch: the lse pass drops the
    sequences' block-diagonal mask (and their options)."""
    options = (dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic)
    out = flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *options, sinks=sinks)
    if not return_attn_probs:
        return out
    _, lse, _ = flash_attn_func(q[None], k[None], v[None], softmax_scale=softmax_scale, return_attn_probs=True)
    return out, lse[0], None


@mistake("merge", "overflow")
def merge_without_the_max_shift(out_a: Array, lse_a: Array, out_b: Array, lse_b: Array) -> tuple[Array, Array]:
    """Weighs the parts by exp(lse_a) and exp(lse_b) unshifted: overflows (inf / inf = NaN) beyond lse ~ 709."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        wa, wb = np.exp(lse_a), np.exp(lse_b)
        total = wa + wb
        share_a, share_b = (np.swapaxes(w / total, -1, -2)[..., None] for w in (wa, wb))
        return share_a * out_a + share_b * out_b, np.log(total)


@mistake("merge", "weights")
def merge_with_the_weights_swapped(out_a: Array, lse_a: Array, out_b: Array, lse_b: Array) -> tuple[Array, Array]:
    """Gives out_a the weight exp(lse_b - lse) and out_b exp(lse_a - lse)."""
    lse = np.logaddexp(lse_a, lse_b)
    with np.errstate(invalid="ignore"):
        share_a, share_b = (np.swapaxes(np.exp(w - lse), -1, -2)[..., None] for w in (lse_b, lse_a))
    return np.nan_to_num(share_a) * out_a + np.nan_to_num(share_b) * out_b, lse


@mistake("merge, window", "empty row")
def merge_special_casing_only_empty_parts(
    out_a: Array, lse_a: Array, out_b: Array, lse_b: Array
) -> tuple[Array, Array]:
    """Sets aside a part with no key at all (every lse -inf) but merges the rest by lse = lse_a + log1p(exp(lse_b -
    lse_a)): a query that sees no key in the first part only (lse_a = -inf) gets NaN."""
    if np.isneginf(lse_a).all():
        return out_b.copy(), lse_b.copy()
    if np.isneginf(lse_b).all():
        return out_a.copy(), lse_a.copy()
    with np.errstate(over="ignore", invalid="ignore"):
        lse = lse_a + np.log1p(np.exp(lse_b - lse_a))
        share_a, share_b = (np.swapaxes(np.exp(x - lse), -1, -2)[..., None] for x in (lse_a, lse_b))
        return share_a * out_a + share_b * out_b, lse


def broken_flash(function: Any, convention: Convention | None = None, alignment: str | None = None) -> Any:
    """A broken FlashAttention-signature kernel (or, for names starting sdpa_, a row-convention one) behind the
    flash adapter, float64, with its source's causal alignment unless `alignment` says."""
    source = "sdpa" if function.__name__.startswith("sdpa_") else "flash"
    default = "top-left" if source == "sdpa" else "bottom-right"
    # A row-convention kernel takes (B, H, L, E) rows (the sdpa adapter's BHLE), a flash one (B, L, H, D).
    layout = "BHLE" if source == "sdpa" else "BLHE"
    return FlashImplementation(function, f"{MISTAKES}:{function.__name__}",
                               convention or Convention(layout=layout), alignment or default, source)  # fmt: skip


def broken_varlen(function: Any) -> Any:
    """A broken flash_attn_varlen_func behind the varlen wrapper."""
    from properties.helpers.flash_convention import VarlenImplementation

    return VarlenImplementation(function, f"{MISTAKES}:{function.__name__}")


def broken_merge(function: Any) -> Any:
    """A broken merge_attention_states behind the merge wrapper."""
    from properties.helpers.flash_convention import MergeImplementation

    return MergeImplementation(function, f"{MISTAKES}:{function.__name__}")


# The correct functions the mistakes mirror (for their tests): flash_attn_varlen_func's reference.
REFERENCE_VARLEN = flash_attn_varlen_func
