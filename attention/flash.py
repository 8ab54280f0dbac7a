"""The reference in FlashAttention's signature: a correct numpy kernel of `flash_attn_func` and
`flash_attn_varlen_func` (flash-attn 2.x, flash_attn/flash_attn_interface.py) with every option of issue 20, the
log-sum-exp merge of attention states, and a split-KV attention built from it.

Layout (FlashAttention's, queries and keys as rows): q (batch, L, nheads, D), k (batch, S, nheads_k, D),
v (batch, S, nheads_k, D_v), out (batch, L, nheads, D_v); query head h reads key/value head h // (nheads / nheads_k)
(MQA/GQA). Query i (0 <= i < L) and key j (0 <= j < S) are at distance rel(i, j) = i + S - L - j: the queries are
the last L positions of the key sequence (bottom-right alignment, FlashAttention >= 2.1 and decoding with a cache).

The logit of (i, j), in the order FlashAttention applies them:
    s = softmax_scale * q_i . k_j                           (softmax_scale defaults to 1 / sqrt(D))
    s = softcap * tanh(s / softcap)                         (when softcap > 0; after the scale)
    s = s - slope * |rel(i, j)|                             (alibi_slopes, per head, or per batch and head)
Key j is visible to query i when
    causal:             rel(i, j) >= 0                       (key j <= i + S - L; causal sets the right window to 0)
    window (left, right): -right <= rel(i, j) <= left        (-1 on either side: unbounded on that side)
The softmax runs over the visible keys and, with `sinks`, one extra logit per head that joins every denominator and
contributes no value (gpt-oss, StreamingLLM): out_i = sum_j exp(s_ij - lse_i) v_j with
    lse_i = log(sum_{visible j} exp(s_ij) + exp(sink)),      the natural log, over the logits above.

Conventions at the edges (the choices, and where FlashAttention's own code differs):
- A query that sees no key gets a zero output row (FlashAttention's kernel and its test reference `attention_ref`
  both give 0) and lse = -inf, the log of an empty sum, the value the log-sum-exp merge treats as "no keys".
  FlashAttention's non-split kernel writes +inf there instead (so its backward gets exp(s - lse) = 0); its split-KV
  path writes -inf. With a sink, such a row has out = 0 and lse = sink.
- ALiBi is -slope * |rel(i, j)| under every mask. Under causal, FlashAttention's kernel adds slope * j and its test
  reference slope * (j - S + 1): on the visible keys both differ from this form by a constant of the row, so the
  outputs agree and softmax_lse differs by that constant (slope * (i + S - L), resp. slope * (i + 1 - L)).
- A window side of -1 is unbounded, as in the test reference's `construct_local_mask`. (FlashAttention's host code
  also turns a side >= S into -1, which differs from the definition only when L > S + that side.)
- return_attn_probs returns (out, softmax_lse, attn_probs) where attn_probs (batch, nheads, L, S) are the softmax
  weights exp(s_ij - lse_i) (0 on invisible keys; with a sink, rows sum to less than 1), in the working dtype.
  FlashAttention returns S_dmask there, an encoding of its dropout mask meant only for its tests.
- Work is in float32, float64 for float64 inputs (as attention/rows.py); out comes back in q's dtype, softmax_lse
  and attn_probs stay in the working dtype (FlashAttention's lse is float32).
- dropout_p must be 0 (no dropout); `deterministic` is accepted and has no effect (the kernel always is).
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from attention._checks import as_count

Array = NDArray[Any]


# ----------------------------------------------------------------------------------------------------------------
# Argument checking: called first, so the numerical core sees clean, finite arrays of the working dtype.


class _Options(NamedTuple):
    """The checked options of one call."""

    scale: float
    left: int  # -1: unbounded
    right: int  # -1: unbounded; 0 under causal
    softcap: float  # 0: off
    slopes: Array | None  # (batch, nheads), working dtype
    sinks: Array | None  # (nheads,), working dtype


def _float_dtype(name: str, array: Array) -> np.dtype[Any]:
    dtype = np.dtype(array.dtype)
    if dtype.kind != "f" and dtype.name != "bfloat16":
        raise TypeError(f"{name} must be a floating-point array; got dtype {dtype}")
    return dtype


def _work_dtype(dtype: np.dtype[Any]) -> type[np.floating[Any]]:
    """float64 for float64 (and wider) inputs, float32 for everything narrower."""
    return np.float64 if dtype.itemsize >= 8 else np.float32


def _check_finite(name: str, array: Array) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        bad = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(f"{name} must be finite; found {array[bad]} at index {bad}")


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite; got {number!r}")
    return number


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool; got {type(value).__name__} {value!r}")
    return bool(value)


def _check_qkv(q: ArrayLike, k: ArrayLike, v: ArrayLike, packed: bool) -> tuple[Array, Array, Array]:
    """q, k, v as arrays of one float dtype with consistent shapes; `packed`: varlen's (total, heads, dim)."""
    arrays = [np.asarray(a) for a in (q, k, v)]
    ndim, form = (3, "(total_{}, {}, {})") if packed else (4, "(batch, seqlen_{}, {}, {})")
    for name, array, axes in zip(
        "qkv",
        arrays,
        (("q", "nheads", "headdim"), ("k", "nheads_k", "headdim"), ("k", "nheads_k", "headdim_v")),
        strict=True,
    ):
        if array.ndim != ndim:
            raise ValueError(f"{name} must have shape {form.format(*axes)}; got shape {array.shape}")
    qa, ka, va = arrays
    dtypes = [_float_dtype(name, array) for name, array in zip("qkv", arrays, strict=True)]
    if dtypes[1] != dtypes[0] or dtypes[2] != dtypes[0]:
        raise TypeError(f"q, k and v must have one dtype; got {dtypes[0]}, {dtypes[1]}, {dtypes[2]}")
    lead = 1 if packed else 2  # the axes before the heads: (total,) or (batch, seqlen)
    if not packed and not (qa.shape[0] == ka.shape[0] == va.shape[0]):
        raise ValueError(f"q, k and v must have one batch size; got shapes {qa.shape}, {ka.shape}, {va.shape}")
    if ka.shape[: lead + 1] != va.shape[: lead + 1]:
        raise ValueError(
            f"k and v must agree in every axis but the last (seqlen_k and nheads_k); got shapes {ka.shape}, {va.shape}"
        )
    if qa.shape[-1] != ka.shape[-1]:
        raise ValueError(f"q and k must have one headdim (last axis); got shapes {qa.shape}, {ka.shape}")
    if qa.shape[-1] == 0:
        raise ValueError(f"headdim must be >= 1; got q of shape {qa.shape}")
    nheads, nheads_k = qa.shape[lead], ka.shape[lead]
    if nheads_k == 0 or nheads % nheads_k:
        raise ValueError(
            f"nheads (q's axis {lead}) must be a multiple of nheads_k >= 1 (k's and v's axis {lead}); got "
            f"nheads = {nheads}, nheads_k = {nheads_k} (shapes {qa.shape}, {ka.shape})"
        )
    for name, array in zip("qkv", arrays, strict=True):
        _check_finite(name, array)
    return qa, ka, va


def _check_options(
    batch: int,
    nheads: int,
    headdim: int,
    work: type[np.floating[Any]],
    dropout_p: object,
    softmax_scale: object,
    causal: object,
    window_size: object,
    softcap: object,
    alibi_slopes: ArrayLike | None,
    deterministic: object,
    sinks: ArrayLike | None,
) -> _Options:
    if _real("dropout_p", dropout_p) != 0.0:
        raise ValueError(f"dropout_p must be 0.0 (this reference has no dropout); got {dropout_p!r}")
    scale = 1.0 / math.sqrt(headdim) if softmax_scale is None else _real("softmax_scale", softmax_scale)
    is_causal = _flag("causal", causal)
    _flag("deterministic", deterministic)
    if not isinstance(window_size, (tuple, list)) or len(window_size) != 2:
        raise TypeError(f"window_size must be a pair (left, right) of ints; got {window_size!r}")
    left, right = (as_count(f"window_size[{n}]", side, minimum=-1) for n, side in enumerate(window_size))
    cap = _real("softcap", softcap)
    if cap < 0.0:
        raise ValueError(f"softcap must be >= 0 (0 turns it off); got {cap!r}")
    slopes = None
    if alibi_slopes is not None:
        raw = np.asarray(alibi_slopes)
        if raw.dtype.kind not in "fiu":
            raise TypeError(f"alibi_slopes must be a real array; got dtype {raw.dtype}")
        if raw.shape not in ((nheads,), (batch, nheads)):
            raise ValueError(
                f"alibi_slopes must have shape (nheads,) = ({nheads},) or (batch, nheads) = ({batch}, {nheads}); "
                f"got shape {raw.shape}"
            )
        _check_finite("alibi_slopes", raw)
        slopes = np.broadcast_to(raw.astype(work), (batch, nheads))
    sink = None
    if sinks is not None:
        raw = np.asarray(sinks)
        if raw.dtype.kind not in "fiu":
            raise TypeError(f"sinks must be a real array; got dtype {raw.dtype}")
        if raw.shape != (nheads,):
            raise ValueError(f"sinks must have shape (nheads,) = ({nheads},); got shape {raw.shape}")
        _check_finite("sinks", raw)
        sink = raw.astype(work)
    return _Options(scale, left, 0 if is_causal else right, cap, slopes, sink)


# ----------------------------------------------------------------------------------------------------------------
# The numerical core.


class _Part(NamedTuple):
    """Attention of every query over one contiguous range of keys, in the working dtype."""

    out: Array  # (batch, L, nheads, D_v)
    lse: Array  # (batch, nheads, L); -inf where the range holds no visible key (and no sink was counted)
    probs: Array  # (batch, nheads, L, keys in the range), relative to this part's own lse


def _attend(q: Array, k: Array, v: Array, options: _Options, start: int, S: int, with_sink: bool) -> _Part:
    """Attention of q (batch, L, nheads, D) over the keys start, ..., start + k.shape[1] - 1 of a sequence of S keys
    (positions matter to masks and ALiBi); with_sink: the sink joins this part's denominator."""
    work = q.dtype.type
    L, nheads, stop = q.shape[1], q.shape[2], start + k.shape[1]
    group = nheads // k.shape[2]
    qh = np.swapaxes(q, 1, 2)  # (batch, nheads, L, D)
    kh = np.repeat(np.swapaxes(k, 1, 2), group, axis=1)  # (batch, nheads, keys, D)
    vh = np.repeat(np.swapaxes(v, 1, 2), group, axis=1)  # (batch, nheads, keys, D_v)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below as a ValueError
        logits = (qh @ np.swapaxes(kh, -1, -2)) * work(options.scale)
        if options.softcap > 0.0:  # tanh(+-inf) = +-1 exactly: a huge s / softcap is harmless
            logits = work(options.softcap) * np.tanh(logits / work(options.softcap))
    rel = np.arange(L)[:, None] + (S - L) - np.arange(start, stop)[None, :]  # i + S - L - j
    visible = np.ones(rel.shape, dtype=bool)
    if options.right >= 0:
        visible &= rel >= -options.right
    if options.left >= 0:
        visible &= rel <= options.left
    if options.slopes is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            logits = logits - options.slopes[:, :, None, None] * np.abs(rel).astype(work)
    visible = np.broadcast_to(visible, logits.shape)
    if not np.isfinite(logits[visible]).all():
        raise ValueError(
            f"the logits overflow {np.dtype(work).name} (softmax_scale * q . k, or an ALiBi slope times a distance): "
            f"scale the inputs down"
        )
    top = np.max(np.where(visible, logits, -np.inf), axis=-1, initial=-np.inf)  # (batch, nheads, L)
    sink = None
    if with_sink and options.sinks is not None:
        sink = np.broadcast_to(options.sinks[None, :, None], top.shape)
        top = np.maximum(top, sink)
    top = np.where(np.isfinite(top), top, 0.0).astype(work)  # rows with nothing: any finite shift
    weights = np.exp(np.where(visible, logits - top[..., None], -np.inf))  # exp(-inf) = 0, no warning
    total = weights.sum(axis=-1)
    if sink is not None:
        total = total + np.exp(sink - top)
    seen = total > 0  # the largest term is exp(0) = 1 whenever anything is visible
    lse = np.full(total.shape, -np.inf, dtype=work)
    np.add(top, np.log(total, where=seen, out=np.zeros_like(total)), out=lse, where=seen)
    probs = np.divide(weights, total[..., None], out=np.zeros_like(weights), where=seen[..., None])
    out = np.swapaxes(probs @ vh, 1, 2)  # (batch, L, nheads, D_v)
    return _Part(out, lse, probs)


def _merge(a: _Part, b: _Part) -> _Part:
    """Two parts over disjoint key ranges (b's keys after a's) as one part over their union."""
    out, lse = merge_attention_states(a.out, a.lse, b.out, b.lse)
    probs = np.concatenate([_reweigh(a.probs, a.lse, lse), _reweigh(b.probs, b.lse, lse)], axis=-1)
    return _Part(out, lse, probs)


def _reweigh(probs: Array, lse_part: Array, lse: Array) -> Array:
    """probs relative to lse_part as probabilities relative to lse >= lse_part: times exp(lse_part - lse)."""
    seen = np.isfinite(lse_part)
    factor = np.exp(np.where(seen, lse_part, 0.0) - np.where(seen, lse, 0.0))
    return np.where(seen[..., None], probs * factor[..., None], 0.0).astype(probs.dtype)


# ----------------------------------------------------------------------------------------------------------------
# The public functions.

_Outputs = tuple[Array, Array, Array]


@overload
def flash_attn_func(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    dropout_p: float = ...,
    softmax_scale: float | None = ...,
    causal: bool = ...,
    window_size: tuple[int, int] = ...,
    softcap: float = ...,
    alibi_slopes: ArrayLike | None = ...,
    deterministic: bool = ...,
    return_attn_probs: Literal[False] = ...,
    *,
    sinks: ArrayLike | None = ...,
) -> Array: ...
@overload
def flash_attn_func(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    dropout_p: float = ...,
    softmax_scale: float | None = ...,
    causal: bool = ...,
    window_size: tuple[int, int] = ...,
    softcap: float = ...,
    alibi_slopes: ArrayLike | None = ...,
    deterministic: bool = ...,
    *,
    return_attn_probs: Literal[True],
    sinks: ArrayLike | None = ...,
) -> _Outputs: ...
@overload
def flash_attn_func(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    dropout_p: float = ...,
    softmax_scale: float | None = ...,
    causal: bool = ...,
    window_size: tuple[int, int] = ...,
    softcap: float = ...,
    alibi_slopes: ArrayLike | None = ...,
    deterministic: bool = ...,
    return_attn_probs: bool = ...,
    *,
    sinks: ArrayLike | None = ...,
) -> Array | _Outputs: ...
def flash_attn_func(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: ArrayLike | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    *,
    sinks: ArrayLike | None = None,
) -> Array | _Outputs:
    """FlashAttention's attention (module docstring): q (batch, L, nheads, D), k (batch, S, nheads_k, D),
    v (batch, S, nheads_k, D_v) give out (batch, L, nheads, D_v) in q's dtype; with return_attn_probs,
    (out, softmax_lse (batch, nheads, L), attn_probs (batch, nheads, L, S)). Causal and windows are aligned to the
    bottom right; a query that sees no key gets out = 0 and lse = -inf; sinks (nheads,) join every denominator."""
    return split_kv_attention(
        q, k, v, 1, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
        return_attn_probs, sinks=sinks,
    )  # fmt: skip


@overload
def split_kv_attention(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    splits: int | Sequence[int],
    dropout_p: float = ...,
    softmax_scale: float | None = ...,
    causal: bool = ...,
    window_size: tuple[int, int] = ...,
    softcap: float = ...,
    alibi_slopes: ArrayLike | None = ...,
    deterministic: bool = ...,
    return_attn_probs: Literal[False] = ...,
    *,
    sinks: ArrayLike | None = ...,
) -> Array: ...
@overload
def split_kv_attention(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    splits: int | Sequence[int],
    dropout_p: float = ...,
    softmax_scale: float | None = ...,
    causal: bool = ...,
    window_size: tuple[int, int] = ...,
    softcap: float = ...,
    alibi_slopes: ArrayLike | None = ...,
    deterministic: bool = ...,
    *,
    return_attn_probs: Literal[True],
    sinks: ArrayLike | None = ...,
) -> _Outputs: ...
@overload
def split_kv_attention(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    splits: int | Sequence[int],
    dropout_p: float = ...,
    softmax_scale: float | None = ...,
    causal: bool = ...,
    window_size: tuple[int, int] = ...,
    softcap: float = ...,
    alibi_slopes: ArrayLike | None = ...,
    deterministic: bool = ...,
    return_attn_probs: bool = ...,
    *,
    sinks: ArrayLike | None = ...,
) -> Array | _Outputs: ...
def split_kv_attention(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    splits: int | Sequence[int],
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: ArrayLike | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    *,
    sinks: ArrayLike | None = None,
) -> Array | _Outputs:
    """flash_attn_func computed as split-KV decoding and ring attention do: attention over each chunk of keys, each
    giving (out, lse), folded left to right with merge_attention_states; the sink, if any, is one more part
    (out = 0, lse = sink). `splits` is the number of chunks (1 <= splits; sizes as numpy.array_split, so some may be
    empty when splits > S) or the increasing list of inner boundaries, each in [0, S] (a repeated boundary makes an
    empty chunk). Returns what flash_attn_func returns."""
    qa, ka, va = _check_qkv(q, k, v, packed=False)
    work = _work_dtype(qa.dtype)
    batch, _, nheads, headdim = qa.shape
    options = _check_options(
        batch, nheads, headdim, work, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
        deterministic, sinks,
    )  # fmt: skip
    want_probs = _flag("return_attn_probs", return_attn_probs)
    S = ka.shape[1]
    bounds = _split_points(splits, S)
    qw, kw, vw = (a.astype(work) for a in (qa, ka, va))
    part: _Part | None = None
    for start, stop in itertools.pairwise(bounds):
        chunk = _attend(qw, kw[:, start:stop], vw[:, start:stop], options, start, S, with_sink=False)
        part = chunk if part is None else _merge(part, chunk)
    assert part is not None  # bounds has at least two entries
    if options.sinks is not None:
        sink_lse = np.broadcast_to(options.sinks[None, :, None], part.lse.shape)
        out, lse = merge_attention_states(part.out, part.lse, np.zeros_like(part.out), sink_lse)
        part = _Part(out, lse, _reweigh(part.probs, part.lse, lse))
    out = np.asarray(part.out.astype(qa.dtype))
    return (out, part.lse, part.probs) if want_probs else out


def _split_points(splits: int | Sequence[int], S: int) -> list[int]:
    """[0, inner boundaries..., S] from a number of chunks or the inner boundaries."""
    if isinstance(splits, (int, np.integer)) and not isinstance(splits, bool):
        count = as_count("splits", int(splits), minimum=1)
        return [int(point) for point in np.linspace(0, S, count + 1).round().astype(int)] if S else [0] * (count + 1)
    if isinstance(splits, (str, bytes)) or not isinstance(splits, Sequence):
        raise TypeError(f"splits must be a number of chunks or a sequence of boundaries; got {splits!r}")
    inner = [as_count(f"splits[{n}]", point) for n, point in enumerate(splits)]
    points = [0, *inner, S]
    if any(b < a for a, b in itertools.pairwise(points)):
        raise ValueError(f"splits must be non-decreasing boundaries in [0, S] = [0, {S}]; got {list(splits)}")
    return points


def merge_attention_states(
    out_a: ArrayLike, lse_a: ArrayLike, out_b: ArrayLike, lse_b: ArrayLike
) -> tuple[Array, Array]:
    """The log-sum-exp merge of attention over two disjoint sets of keys into attention over their union:
    lse = log(exp(lse_a) + exp(lse_b)) and out = exp(lse_a - lse) out_a + exp(lse_b - lse) out_b.

    Shapes as FlashAttention's: out (..., L, nheads, D_v) with lse (..., nheads, L), e.g. flash_attn_func's
    (batch, L, nheads, D_v) with (batch, nheads, L), or the varlen (total, nheads, D_v) with (nheads, total).
    lse = -inf marks a part that saw no key: it gets weight 0 and its out is ignored, even if not finite; when both
    are -inf the result is out = 0, lse = -inf. An lse of +inf or NaN is refused (FlashAttention's non-split kernel
    writes +inf for a row with no key: map it to -inf first). Works in float64 when any input is float64, else
    float32; returns out in that dtype and lse likewise."""
    arrays = {
        name: np.asarray(a) for name, a in (("out_a", out_a), ("lse_a", lse_a), ("out_b", out_b), ("lse_b", lse_b))
    }
    for name, array in arrays.items():
        _float_dtype(name, array)
    oa, la, ob, lb = arrays.values()
    if oa.shape != ob.shape or oa.ndim < 3:
        raise ValueError(
            f"out_a and out_b must have one shape (..., L, nheads, D_v); got shapes {oa.shape}, {ob.shape}"
        )
    expected = (*oa.shape[:-3], oa.shape[-2], oa.shape[-3])
    for name, lse in (("lse_a", la), ("lse_b", lb)):
        if lse.shape != expected:
            raise ValueError(
                f"{name} must have shape (..., nheads, L) = {expected} for out of shape {oa.shape}; got {lse.shape}"
            )
        if np.isnan(lse).any() or np.isposinf(lse).any():
            raise ValueError(f"{name} must be finite or -inf (a part with no key); found NaN or +inf")
    work = np.float64 if any(np.dtype(a.dtype).itemsize >= 8 for a in arrays.values()) else np.float32
    la, lb = la.astype(work), lb.astype(work)
    top = np.maximum(la, lb)
    seen = np.isfinite(top)
    shift = np.where(seen, top, 0.0)
    wa, wb = np.exp(la - shift), np.exp(lb - shift)  # exp(-inf) = 0; the larger one is exactly 1 where seen
    total = wa + wb
    lse = np.full(top.shape, -np.inf, dtype=work)
    np.add(shift, np.log(total, where=seen, out=np.zeros_like(total)), out=lse, where=seen)
    out = np.zeros(oa.shape, dtype=work)
    for weight, part in ((wa, oa), (wb, ob)):
        share = np.swapaxes(np.divide(weight, total, out=np.zeros_like(weight), where=seen), -1, -2)[..., None]
        np.add(out, share * np.where(share > 0, part.astype(work), 0.0), out=out)  # a weight-0 part is ignored
    return out, lse


# ----------------------------------------------------------------------------------------------------------------
# Packed variable-length batches.


def _cu_seqlens(name: str, value: ArrayLike, total: int, total_name: str) -> Array:
    cu = np.asarray(value)
    if cu.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array (int32 as FlashAttention's); got dtype {cu.dtype}")
    if cu.ndim != 1 or cu.shape[0] < 1:
        raise ValueError(f"{name} must have shape (batch + 1,); got shape {cu.shape}")
    cu = cu.astype(np.int64)
    if cu[0] != 0 or cu[-1] != total or (np.diff(cu) < 0).any():
        raise ValueError(f"{name} must be non-decreasing from 0 to {total_name} = {total}; got {cu.tolist()}")
    return cu


@overload
def flash_attn_varlen_func(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    cu_seqlens_q: ArrayLike,
    cu_seqlens_k: ArrayLike,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = ...,
    softmax_scale: float | None = ...,
    causal: bool = ...,
    window_size: tuple[int, int] = ...,
    softcap: float = ...,
    alibi_slopes: ArrayLike | None = ...,
    deterministic: bool = ...,
    return_attn_probs: Literal[False] = ...,
    *,
    sinks: ArrayLike | None = ...,
) -> Array: ...
@overload
def flash_attn_varlen_func(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    cu_seqlens_q: ArrayLike,
    cu_seqlens_k: ArrayLike,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = ...,
    softmax_scale: float | None = ...,
    causal: bool = ...,
    window_size: tuple[int, int] = ...,
    softcap: float = ...,
    alibi_slopes: ArrayLike | None = ...,
    deterministic: bool = ...,
    *,
    return_attn_probs: Literal[True],
    sinks: ArrayLike | None = ...,
) -> _Outputs: ...
@overload
def flash_attn_varlen_func(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    cu_seqlens_q: ArrayLike,
    cu_seqlens_k: ArrayLike,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = ...,
    softmax_scale: float | None = ...,
    causal: bool = ...,
    window_size: tuple[int, int] = ...,
    softcap: float = ...,
    alibi_slopes: ArrayLike | None = ...,
    deterministic: bool = ...,
    return_attn_probs: bool = ...,
    *,
    sinks: ArrayLike | None = ...,
) -> Array | _Outputs: ...
def flash_attn_varlen_func(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    cu_seqlens_q: ArrayLike,
    cu_seqlens_k: ArrayLike,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: ArrayLike | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    *,
    sinks: ArrayLike | None = None,
) -> Array | _Outputs:
    """flash_attn_func on a packed batch: q (total_q, nheads, D), k (total_k, nheads_k, D), v (total_k, nheads_k,
    D_v); sequence b is q[cu_seqlens_q[b]:cu_seqlens_q[b + 1]] against k, v[cu_seqlens_k[b]:cu_seqlens_k[b + 1]],
    and attends only within itself, with causal and windows aligned bottom-right by its own lengths (L_b, S_b).
    cu_seqlens_* are integer (batch + 1,) arrays, non-decreasing from 0 to total_*; empty sequences are allowed;
    max_seqlen_* must bound every length. alibi_slopes is (nheads,) or (batch, nheads). Returns out (total_q, nheads,
    D_v) in q's dtype; with return_attn_probs, (out, softmax_lse (nheads, total_q), attn_probs (batch, nheads,
    max_seqlen_q, max_seqlen_k), each sequence's weights in its top-left corner and zeros elsewhere)."""
    qa, ka, va = _check_qkv(q, k, v, packed=True)
    work = _work_dtype(qa.dtype)
    cu_q = _cu_seqlens("cu_seqlens_q", cu_seqlens_q, qa.shape[0], "total_q (q's axis 0)")
    cu_k = _cu_seqlens("cu_seqlens_k", cu_seqlens_k, ka.shape[0], "total_k (k's axis 0)")
    if cu_q.shape != cu_k.shape:
        raise ValueError(
            f"cu_seqlens_q and cu_seqlens_k must have one length (batch + 1); got shapes {cu_q.shape}, {cu_k.shape}"
        )
    batch, nheads = cu_q.shape[0] - 1, qa.shape[1]
    for name, bound, cu in (("max_seqlen_q", max_seqlen_q, cu_q), ("max_seqlen_k", max_seqlen_k, cu_k)):
        longest = int(np.diff(cu).max(initial=0))
        if as_count(name, bound) < longest:
            raise ValueError(f"{name} must be at least the longest sequence, {longest}; got {bound}")
    options = _check_options(
        batch, nheads, qa.shape[-1], work, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
        deterministic, sinks,
    )  # fmt: skip
    want_probs = _flag("return_attn_probs", return_attn_probs)
    qw, kw, vw = (a.astype(work) for a in (qa, ka, va))
    out = np.zeros((qa.shape[0], nheads, va.shape[-1]), dtype=work)
    lse = np.full((nheads, qa.shape[0]), -np.inf, dtype=work)
    probs = np.zeros((batch, nheads, int(max_seqlen_q), int(max_seqlen_k)), dtype=work)
    for b in range(batch):
        q0, q1, k0, k1 = int(cu_q[b]), int(cu_q[b + 1]), int(cu_k[b]), int(cu_k[b + 1])
        one = options._replace(slopes=None if options.slopes is None else options.slopes[b : b + 1])
        part = _attend(qw[None, q0:q1], kw[None, k0:k1], vw[None, k0:k1], one, 0, k1 - k0, with_sink=True)
        out[q0:q1], lse[:, q0:q1], probs[b, :, : q1 - q0, : k1 - k0] = part.out[0], part.lse[0], part.probs[0]
    result = np.asarray(out.astype(qa.dtype))
    return (result, lse, probs) if want_probs else result
