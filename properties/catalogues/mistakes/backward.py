"""Mistakes in hand-written backward passes of the row kernel: backward(query, key, value, d_out, attn_mask=None,
dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False) -> (d_query, d_key, d_value), each differentiating
attention.rows.scaled_dot_product_attention. Each is `textbook_backward` with one thing wrong. Those named
`notebook_vjp_...` follow the notebook's contract instead (backward(X, omega_v, ..., beta_k, d_X_prime, *,
d_attentions=None, positional=None, positional_mode="input", mask=None, causal=False) -> the cotangents of X, the
omegas, the betas and positional), each `textbook_vjp` of scaled_dot_product_self_attention with one thing wrong.

The textbook backward (rows as queries, P = softmax(s q k^T + mask) over the visible keys, O = P V):
dV = P^T dO, dP = dO V^T, dS = P o (dP - rowsum(dO o O)), dQ = s dS K, dK = s dS^T Q; a key/value head shared
by a group of query heads gets the sum of the group's gradients.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from properties.catalogues.mistakes._base import Array, _visible, mistake, rows_softmax

Grads = tuple[Array, Array, Array]


def _fold(gradient: Array, group: int, first_only: bool) -> Array:
    """The gradient of a key/value head from its `group` query heads' copies: their sum (or the first's)."""
    if group == 1:
        return gradient
    grouped = gradient.reshape(*gradient.shape[:-3], gradient.shape[-3] // group, group, *gradient.shape[-2:])
    return np.asarray(grouped[..., 0, :, :] if first_only else grouped.sum(axis=-3))


def textbook_backward(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False, *, broken: str = "",
    order: Any = None,
) -> Grads:  # fmt: skip
    """The backward in float64, correct for broken="", else with the named mistake; dV sums the queries in
    `order` (default: their own)."""
    q, k, v, dO = (np.asarray(a, dtype=np.float64) for a in (query, key, value, d_out))
    group = q.shape[-3] // k.shape[-3] if enable_gqa and k.shape[-3] != q.shape[-3] else 1
    k, v = np.repeat(k, group, axis=-3), np.repeat(v, group, axis=-3)
    if broken == "first_batch_keys":
        k = np.broadcast_to(k[:1], k.shape)
    L, S = q.shape[-2], k.shape[-2]
    s = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    causal_here = (is_causal and broken != "causal_forgotten") or broken == "always_causal"
    causal = np.tri(L, S, dtype=bool) if causal_here else np.ones((L, S), dtype=bool)
    padding = np.ones((L, S), dtype=bool) if attn_mask is None else np.asarray(attn_mask, dtype=bool)
    visible = causal if broken == "mask_forgotten" else causal & padding
    logits = q @ np.swapaxes(k, -1, -2) * (1.0 if broken == "unscaled_logits" else s)
    P = rows_softmax(logits, visible)
    dP = dO @ np.swapaxes(v, -1, -2)
    D = 0.0 if broken == "rowsum_dropped" else (P * dP).sum(axis=-2 if broken == "rowsum_over_queries" else -1,
                                                             keepdims=True)  # fmt: skip
    dS = P * (dP - D)
    dQ = s * (dS @ k) * (s if broken == "dq_scaled_twice" else 1.0)
    if broken == "flows_to_masked_keys":  # dK and dV from the weights without the key-padding mask
        P = rows_softmax(logits, causal)
        dS = P * (dP - (P * dP).sum(axis=-1, keepdims=True))
    order = np.arange(L) if order is None else order
    dV = P @ dO if broken == "dv_with_P" else np.swapaxes(P[..., order, :], -1, -2) @ dO[..., order, :]
    dK = (1.0 if broken == "dk_unscaled" else s) * (np.swapaxes(dS, -1, -2) @ q)
    first_only = broken == "groups_from_first_head"
    return dQ, _fold(dK, group, first_only), _fold(dV, group, first_only)


@mistake("backward", "missing term")
def backward_without_the_rowsum_term(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Grads:  # fmt: skip
    """Drops the softmax's D = rowsum(dO o O) term: dS = P o dP instead of P o (dP - D)."""
    return textbook_backward(query, key, value, d_out, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                             broken="rowsum_dropped")  # fmt: skip


@mistake("backward", "wrong axis")
def backward_rowsum_over_the_queries(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Grads:  # fmt: skip
    """Sums P o dP over the queries (axis -2) instead of over the keys: the notebook's column sum c = 1^T (P o dP)
    carried to rows without transposing (the shapes agree when L = S)."""
    return textbook_backward(query, key, value, d_out, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                             broken="rowsum_over_queries")  # fmt: skip


@mistake("backward,scale", "scale")
def backward_dk_without_the_scale(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Grads:  # fmt: skip
    """Computes dK = dS^T Q without the logit scale s."""
    return textbook_backward(query, key, value, d_out, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                             broken="dk_unscaled")  # fmt: skip


@mistake("backward,scale", "scale")
def backward_dq_scaled_twice(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Grads:  # fmt: skip
    """Multiplies dQ by the logit scale twice (s^2 dS K)."""
    return textbook_backward(query, key, value, d_out, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                             broken="dq_scaled_twice")  # fmt: skip


@mistake("backward", "transposed")
def backward_dv_with_P_not_its_transpose(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Grads:  # fmt: skip
    """Computes dV = P dO instead of P^T dO (the shapes agree when L = S)."""
    return textbook_backward(query, key, value, d_out, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                             broken="dv_with_P")  # fmt: skip


@mistake("backward,enable_gqa", "grouped heads")
def backward_groups_from_their_first_head(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Grads:  # fmt: skip
    """Gives a shared key/value head the dK and dV of the first query head of its group, not the group's sum."""
    return textbook_backward(query, key, value, d_out, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                             broken="groups_from_first_head")  # fmt: skip


@mistake("backward,is_causal", "mask forgotten")
def backward_forgets_the_causal_mask(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Grads:  # fmt: skip
    """Recomputes P without is_causal in the backward (the forward masks the future)."""
    return textbook_backward(query, key, value, d_out, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                             broken="causal_forgotten")  # fmt: skip


@mistake("backward,attn_mask", "mask forgotten")
def backward_forgets_the_key_padding_mask(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Grads:  # fmt: skip
    """Recomputes P without attn_mask in the backward (the forward hides the masked keys)."""
    return textbook_backward(query, key, value, d_out, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                             broken="mask_forgotten")  # fmt: skip


@mistake("backward,attn_mask", "gradient leak")
def backward_gradients_flow_to_masked_keys(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Grads:  # fmt: skip
    """dQ from the masked weights, but dK and dV from the weights without attn_mask: masked keys get gradient."""
    return textbook_backward(query, key, value, d_out, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                             broken="flows_to_masked_keys")  # fmt: skip


@mistake("backward,scale", "scale")
def backward_from_unscaled_logits(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Grads:  # fmt: skip
    """Recomputes P = softmax(q k^T) from unscaled logits (the forward scales them by s)."""
    return textbook_backward(query, key, value, d_out, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                             broken="unscaled_logits")  # fmt: skip


@mistake("backward", "tiles")
def backward_blocks_skip_the_partial_tile(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Grads:  # fmt: skip
    """Loops over full blocks of 16 keys for dK and dV and never reaches a partial last block (N % 16 keys)."""
    dQ, dK, dV = textbook_backward(query, key, value, d_out, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    full = dK.shape[-2] // 16 * 16
    if full:  # a sequence shorter than one block is one (full) block of its own
        dK[..., full:, :] = 0.0
        dV[..., full:, :] = 0.0
    return dQ, dK, dV


@mistake("backward", "hygiene")
def backward_scales_d_out_in_place(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Grads:  # fmt: skip
    """Folds the scale into d_out in place (d_out *= s) to save a product, and undoes it in dV."""
    s = 1 / np.sqrt(query.shape[-1]) if scale is None else scale
    d_out *= s
    dQ, dK, dV = textbook_backward(query, key, value, d_out, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    return dQ / s, dK / s, dV / s


_CALLS = [0]


@mistake("backward", "hygiene")
def backward_in_a_changing_order(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Grads:  # fmt: skip
    """Sums dV over the queries in an order that changes from call to call (atomic adds in a GPU kernel)."""
    _CALLS[0] += 1
    order = np.random.default_rng(_CALLS[0]).permutation(np.asarray(query).shape[-2])
    return textbook_backward(query, key, value, d_out, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                             order=order)  # fmt: skip


@mistake("backward", "hidden clipping")
def backward_clips_d_out(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Grads:  # fmt: skip
    """Clips d_out to [-1, 1] before using it (gradient clipping fused into the kernel)."""
    clipped = np.clip(np.asarray(d_out, dtype=np.float64), -1.0, 1.0)
    return textbook_backward(query, key, value, clipped, attn_mask, dropout_p, is_causal, scale, enable_gqa)


@mistake("backward,is_causal", "mask added")
def backward_always_causal(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Grads:  # fmt: skip
    """Applies the causal mask in the backward whatever is_causal says (a decoder's kernel reused)."""
    return textbook_backward(query, key, value, d_out, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                             broken="always_causal")  # fmt: skip


@mistake("backward", "batch")
def backward_keys_of_the_first_batch_element(
    query: Array, key: Array, value: Array, d_out: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Grads:  # fmt: skip
    """Recomputes P from the keys of batch element 0 for every batch element (a test with batch size 1 hides it)."""
    return textbook_backward(query, key, value, d_out, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                             broken="first_batch_keys")  # fmt: skip


# --- The notebook's contract -------------------------------------------------------------------------------


def textbook_vjp(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array,
    d_X_prime: Array, *, d_attentions: Any = None, positional: Any = None, positional_mode: str = "input",
    mask: Any = None, causal: bool = False, bias: Any = None, broken: str = "", unscaled: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """The cotangents of scaled_dot_product_self_attention in float64 (book's columns: P = softmax_cols(s K^T Q + bias)
    over the visible keys, X' = V P), correct for broken="", else with the named mistake:
    dV = dX' P^T, dP = V^T dX' + dA, dS = P o (dP - 1^T (P o dP)) = d bias, dQ = s K dS, dK = s Q dS^T, the chain rule
    through the projections (X_qk = X + positional; the values see the positions when positional_mode="input").
    unscaled=True gives the correct vjp of self_attention (s = 1)."""
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, dX_prime = (
        np.asarray(a, dtype=np.float64) for a in (X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, d_X_prime)
    )
    Pi = None if positional is None else np.asarray(positional, dtype=np.float64)
    X_qk = X if Pi is None else X + Pi
    X_v = X_qk if positional_mode == "input" else X
    Q, K, V = omega_q @ X_qk + beta_q, omega_k @ X_qk + beta_k, omega_v @ X_v + beta_v
    N = X.shape[1]
    s = 1.0 if broken == "unscaled" or unscaled else 1 / np.sqrt(omega_q.shape[0])
    visible = _visible(N, mask, causal)
    logits = s * K.T @ Q + (0.0 if bias is None else np.asarray(bias, dtype=np.float64))
    P = rows_softmax(logits, np.ones((N, N), dtype=bool) if visible is None else visible, axis=0)
    dV = dX_prime @ P.T
    dP = V.T @ dX_prime
    if d_attentions is not None and broken != "d_attentions_dropped":
        dP = dP + np.asarray(d_attentions, dtype=np.float64)
    dS = P * (dP - (P * dP).sum(axis=0, keepdims=True))
    dQ, dK = s * K @ dS, s * Q @ dS.T
    d_X_qk = omega_q.T @ dQ + omega_k.T @ dK
    d_X_v = omega_v.T @ dV
    values_path = broken != "values_path_dropped"
    if positional_mode == "input":
        d_Pi = d_X_qk + d_X_v if values_path else d_X_qk
        dX = d_Pi
    else:
        d_Pi = d_X_qk
        dX = d_X_qk + d_X_v if values_path else d_X_qk
    if broken == "positional_forgotten":
        d_Pi = np.zeros_like(d_Pi)
    return {
        "X": dX, "omega_v": dV @ X_v.T, "omega_q": dQ @ X_qk.T, "omega_k": dK @ X_qk.T,
        "beta_v": dV.sum(axis=1, keepdims=True), "beta_q": dQ.sum(axis=1, keepdims=True),
        "beta_k": dK.sum(axis=1, keepdims=True), "positional": None if Pi is None else d_Pi,
        "bias": None if bias is None else dS,
    }  # fmt: skip


@mistake("backward,d_attentions", "missing term")
def notebook_vjp_ignores_d_attentions(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array,
    d_X_prime: Array, *, d_attentions: Any = None, positional: Any = None, positional_mode: str = "input",
    mask: Any = None, causal: bool = False, bias: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """Takes d_attentions and drops it: the gradients of <d_X_prime, X_prime> alone, as if the attentions were
    not an output (the cotangent of a returned matrix forgotten)."""
    return textbook_vjp(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, d_X_prime, d_attentions=d_attentions,
                        positional=positional, positional_mode=positional_mode, mask=mask, causal=causal,
                        bias=bias, broken="d_attentions_dropped")  # fmt: skip


@mistake("backward,scale", "scale")
def notebook_vjp_without_the_scale(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array,
    d_X_prime: Array, *, d_attentions: Any = None, positional: Any = None, positional_mode: str = "input",
    mask: Any = None, causal: bool = False, bias: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """The vjp of self_attention (eq. 12.8) given for scaled_dot_product_self_attention (eq. 12.9): no 1/sqrt(D_q),
    neither in P nor in dQ and dK."""
    return textbook_vjp(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, d_X_prime, d_attentions=d_attentions,
                        positional=positional, positional_mode=positional_mode, mask=mask, causal=causal,
                        bias=bias, broken="unscaled")  # fmt: skip


@mistake("backward,positional", "missing term")
def notebook_vjp_forgets_the_positional_gradient(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array,
    d_X_prime: Array, *, d_attentions: Any = None, positional: Any = None, positional_mode: str = "input",
    mask: Any = None, causal: bool = False, bias: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """Returns a zero cotangent for the positional encoding (treated as a constant), though X + positional
    feeds the queries and keys."""
    return textbook_vjp(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, d_X_prime, d_attentions=d_attentions,
                        positional=positional, positional_mode=positional_mode, mask=mask, causal=causal,
                        bias=bias, broken="positional_forgotten")  # fmt: skip


@mistake("backward", "missing term")
def notebook_vjp_dX_without_the_values_path(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array,
    d_X_prime: Array, *, d_attentions: Any = None, positional: Any = None, positional_mode: str = "input",
    mask: Any = None, causal: bool = False, bias: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """dX = omega_q^T dQ + omega_k^T dK: forgets that X also makes the values (omega_v^T dV)."""
    return textbook_vjp(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, d_X_prime, d_attentions=d_attentions,
                        positional=positional, positional_mode=positional_mode, mask=mask, causal=causal,
                        bias=bias, broken="values_path_dropped")  # fmt: skip
