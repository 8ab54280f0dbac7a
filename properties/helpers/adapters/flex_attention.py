"""FlexAttention (torch.nn.attention.flex_attention, written against torch 2.13) behind flash_attn_func's signature,
on CPU in eager mode, so that the flash convention's laws check it:

    attention-check properties.helpers.adapters.flex_attention:flash_attn_func --convention flash --array torch

q (batch, L, nheads, D), k (batch, S, nheads_k, D), v (batch, S, nheads_k, D_v) as torch tensors (or anything
torch.as_tensor takes) become Flex's (batch, heads, length, width) by a transpose; out comes back as
(batch, L, nheads, D_v) in q's dtype. Each option is one of Flex's own mechanisms:

- softmax_scale is Flex's `scale` (None: Flex's default 1 / sqrt(D), FlashAttention's too);
- softcap > 0 and alibi_slopes are a `score_mod`, which Flex applies to the scaled score: softcap tanh(s / softcap),
  then minus slope |rel(i, j)| (not capped), FlashAttention's order (docs FLASH-CONVENTIONS.md);
- causal and window_size are a `mask_mod` turned into a `block_mask`, aligned bottom-right as FlashAttention's:
  rel(i, j) = i + S - L - j, causal keeps rel >= 0, a window (left, right) keeps -right <= rel <= left (-1: that
  side unbounded); with neither, no block mask;
- grouped and multi-query heads (nheads_k < nheads) are Flex's enable_gqa;
- return_attn_probs=True returns (out, softmax_lse, attn_probs): softmax_lse (batch, nheads, L) is Flex's
  auxiliary output (return_aux=AuxRequest(lse=True); an empty tensor when L = 0, where Flex gives None), in its
  dtype (float32 for inputs narrower than float32); attn_probs (batch, nheads, L, S) are Flex's own weights,
  from a second call with the identity as values (out = weights when value = I), in q's dtype.

Flex's choices at the edges, observed in 2.13: a query that sees no key (a mask hiding every key from it) gets
out = 0 and lse = -inf (FlashAttention's kernel writes lse = +inf there). Flex itself raises IndexError on an empty
key set (S = 0, from an internal max over the keys), its block-mask builder fails on L = 0, and it returns no lse
when L = 0. The adapter asks Flex the same question in a form it takes: for S = 0, one zero key hidden from every
query by the block mask (so out = 0 and lse = -inf, Flex's own answer for a query that sees no key); for L = 0, no
block mask (there is nothing to mask) and an empty lse. ALiBi is -slope |rel| under every mask, as in
attention/flash.py (FlashAttention's kernel adds +slope j under causal: the same outputs, an lse higher by
slope (i + S - L)).

dropout_p must be 0 (Flex has no dropout); deterministic is accepted and changes nothing (eager Flex computes the
full score matrix). In eager mode Flex warns once per process that it is not compiled (a UserWarning of
torch.nn.attention.flex_attention): the adapter ignores that warning category from that module, nothing else.
torch is imported at the first call, so this module imports without it.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["flash_attn_func"]

# Where Flex's eager-mode warning is raised from (warnings.warn's module, a regular expression).
FLEX_MODULE = r"torch\.nn\.attention\.flex_attention"


def _heads_first(name: str, array: Any) -> Any:
    """A (batch, length, heads, width) tensor as Flex's (batch, heads, length, width)."""
    import torch

    tensor = torch.as_tensor(array)
    if tensor.ndim != 4:
        raise ValueError(f"{name} must have shape (batch, seqlen, nheads, headdim); got shape {tuple(tensor.shape)}")
    return tensor.transpose(1, 2)


def _window(causal: bool, window_size: Any) -> tuple[int, int]:
    """(left, right) with -1 for an unbounded side; causal sets right to 0."""
    if not isinstance(window_size, tuple | list) or len(window_size) != 2:
        raise TypeError(f"window_size must be a pair (left, right) of ints; got {window_size!r}")
    left, right = (int(side) for side in window_size)
    if min(left, right) < -1:
        raise ValueError(f"window_size sides must be >= -1 (-1: unbounded); got {window_size!r}")
    return left, 0 if causal else right


def flash_attn_func(
    q: Any,
    k: Any,
    v: Any,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Any = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
) -> Any:
    """FlexAttention called as flash_attn_func (module docstring): out (batch, L, nheads, D_v), or with
    return_attn_probs=True (out, softmax_lse (batch, nheads, L), attn_probs (batch, nheads, L, S))."""
    import torch
    from torch.nn.attention.flex_attention import AuxRequest, create_block_mask, flex_attention

    if dropout_p != 0.0:
        raise ValueError(f"dropout_p must be 0.0 (FlexAttention has no dropout); got {dropout_p!r}")
    query, key, value = (_heads_first(name, array) for name, array in (("q", q), ("k", k), ("v", v)))
    B, H, L, _ = query.shape
    H_k, S = key.shape[1], key.shape[2]
    if H_k == 0 or H % H_k:
        raise ValueError(
            f"nheads (q's axis 2) must be a multiple of nheads_k >= 1 (k's axis 2); got nheads = {H}, nheads_k = "
            f"{H_k} (q of shape {(B, L, H, query.shape[3])}, k of shape {(B, S, H_k, key.shape[3])})"
        )
    if softcap < 0:
        raise ValueError(f"softcap must be >= 0 (0 turns it off); got {softcap!r}")
    left, right = _window(bool(causal), window_size)
    offset = S - L  # bottom-right: query i is position i + S - L of the key sequence

    slopes = None
    if alibi_slopes is not None:
        raw = torch.as_tensor(alibi_slopes)
        if tuple(raw.shape) not in ((H,), (B, H)):
            raise ValueError(
                f"alibi_slopes must have shape (nheads,) = ({H},) or (batch, nheads) = ({B}, {H}); got shape "
                f"{tuple(raw.shape)}"
            )
        slopes = raw.to(query.dtype).broadcast_to((B, H)).contiguous()

    def score_mod(score: Any, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        if softcap > 0:
            score = softcap * torch.tanh(score / softcap)
        if slopes is not None:
            score = score - slopes[b, h] * torch.abs(q_idx + offset - kv_idx)
        return score

    def mask_mod(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        rel = q_idx + offset - kv_idx
        if right < 0:
            return rel <= left
        if left < 0:
            return rel >= -right
        return (rel >= -right) & (rel <= left)

    def no_key(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
        return kv_idx < 0  # False everywhere: the query sees no key

    if S == 0:  # Flex raises on an empty key set: asked instead what a query that sees no key gets (out 0, lse -inf)
        key, value = key.new_zeros((B, H_k, 1, key.shape[3])), value.new_zeros((B, H_k, 1, value.shape[3]))
        block_mask = create_block_mask(no_key, None, None, L, 1, device=query.device)
    elif L and (left >= 0 or right >= 0):  # with no query there is nothing to mask (Flex's mask builder fails)
        block_mask = create_block_mask(mask_mod, None, None, L, S, device=query.device)
    else:
        block_mask = None
    options: dict[str, Any] = {
        "score_mod": score_mod if softcap > 0 or slopes is not None else None,
        "block_mask": block_mask,
        "scale": softmax_scale,
        "enable_gqa": H_k != H,
    }
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=FLEX_MODULE)
        # The lse is always asked for, so that Flex compiles one graph for both uses (its eager path traces each new
        # combination of options and sizes once: it costs nothing more here, the scores being materialised anyway).
        out, aux = flex_attention(query, key, value, return_aux=AuxRequest(lse=True), **options)
        if not return_attn_probs:
            return out.transpose(1, 2)
        keys = key.shape[2]
        identity = torch.eye(keys, dtype=value.dtype, device=value.device).repeat(B, H_k, 1, 1)
        probs = flex_attention(query, key, identity, return_aux=AuxRequest(lse=True), **options)[0][..., :S]
    # Flex returns no lse when it has no entries (L = 0): an empty one of its dtype.
    lse = (
        aux.lse if aux.lse is not None else torch.empty((B, H, L), dtype=torch.promote_types(out.dtype, torch.float32))
    )
    return out.transpose(1, 2), lse, probs
