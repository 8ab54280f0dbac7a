"""The exact vector-Jacobian products of `self_attention` and `scaled_dot_product_self_attention` (book eqs.
12.6-12.9, with the forward's options), in the book's column convention: the backward beside its forward.

Derivation. With X_qk = X + Pi (X when no positional encoding), X_v = X_qk (positional_mode="input") or X
("query_key"), Q = omega_q X_qk + beta_q 1^T, K = omega_k X_qk + beta_k 1^T, V = omega_v X_v + beta_v 1^T,
s = 1/sqrt(D_q) (scaled) or 1, S = s K^T Q + bias (N x N, S[m, n] the logit of key m for query n),
P = softmax_cols(S) over the visible keys of each column, and X' = V P: given the cotangents dX' (D_v x N) of
X' and dA (N x N, zero when not given) of the attentions P,

    dV = dX' P^T                                     (X' = V P is linear in V)
    dP = V^T dX' + dA                                (and in P)
    dS = P o (dP - 1 c^T),  c = 1^T (P o dP)         (the softmax's Jacobian diag(p) - p p^T, column by column;
                                                      c_n = sum_m P[m, n] dP[m, n] = sum_d X'[d, n] dX'[d, n]
                                                      + sum_m P[m, n] dA[m, n]: FlashAttention's D term)
    d bias = dS
    dQ = s K dS,  dK = s Q dS^T                      (S = s K^T Q)
    d omega_q = dQ X_qk^T,  d beta_q = dQ 1          (likewise k; v with dV and X_v)
    d X_qk = omega_q^T dQ + omega_k^T dK (+ omega_v^T dV when the values see Pi)
    d Pi = d X_qk,  dX = d X_qk (+ omega_v^T dV when they do not).

Masks: a masked entry has P = 0 whatever its logit, so dS = 0 there and nothing flows through its logit
(or its dA); a query with no visible key has a zero column of P, hence zero dS, dQ and no contribution to
any key or value: its inputs get gradient only through their roles as keys and values of other queries.
A key that no query sees gets zero dK and dV. As in the forward, the logits and values of masked entries
never enter, even when they would overflow.

P is recomputed as the forward computes it (`attention._core`): the logits shifted by their column maximum
over the visible keys (or not shifted when `exp_needs_no_shift` proves the exp cannot leave the normal range;
one choice and one softmax with the forward: `attention._core.softmax_choices` and `softmax_in_place`), so the
backward accepts exactly the logits the forward accepts (logits of 1e4 give finite gradients) and raises the
forward's ValueError where it does not. Every product of the backward is then a product of
finite arrays; one that overflows (enormous cotangents) raises a ValueError naming the remedy.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from attention._checks import (
    CheckedArguments,
    FloatArray,
    as_float_array,
    check_finite,
    check_matrix,
    check_self_attention_arguments,
)
from attention._core import (
    LOGIT_REMEDY,
    check_no_overflow,
    masked_softmax_cols,
    softmax_choices,
    softmax_in_place,
)
from attention.self_attention import PositionalMode, _check_options

COTANGENT_REMEDY = "reduce the magnitudes of d_X_prime and d_attentions (or of the inputs)"


class SelfAttentionCotangents(NamedTuple):
    """The cotangents of the forward's inputs, each of its input's shape (a beta given as (rows,) gets a
    (rows,) cotangent) and float dtype (integer and bool inputs count as float64); `positional` and `bias`
    are None when the forward was called without them."""

    X: FloatArray
    omega_v: FloatArray
    omega_q: FloatArray
    omega_k: FloatArray
    beta_v: FloatArray
    beta_q: FloatArray
    beta_k: FloatArray
    positional: FloatArray | None
    bias: FloatArray | None


def self_attention_vjp(
    X: ArrayLike,
    omega_v: ArrayLike,
    omega_q: ArrayLike,
    omega_k: ArrayLike,
    beta_v: ArrayLike,
    beta_q: ArrayLike,
    beta_k: ArrayLike,
    d_X_prime: ArrayLike,
    *,
    d_attentions: ArrayLike | None = None,
    positional: ArrayLike | None = None,
    positional_mode: PositionalMode = "input",
    mask: ArrayLike | None = None,
    causal: bool = False,
    bias: ArrayLike | None = None,
) -> SelfAttentionCotangents:
    """The vector-Jacobian product of `self_attention` (unscaled, eqs. 12.6-12.8) at the given inputs.

    Contract: with (X_prime, attentions) = self_attention(X, ..., beta_k, **options), returns the gradient of
    <d_X_prime, X_prime> + <d_attentions, attentions> (Frobenius inner products; d_attentions None counts as
    zero) with respect to every input: X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, and positional
    and bias when given (else None). d_X_prime must have X_prime's shape (D_v, N), d_attentions (N, N).
    The mask and causal options are not differentiable (booleans); positional_mode selects the graph.
    Bad arguments raise the forward's errors, then errors naming d_X_prime or d_attentions; the inputs are
    never modified. See the module's docstring for the derivation.
    """
    return _vjp(
        False, X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, d_X_prime, d_attentions,
        positional, positional_mode, mask, causal, bias,
    )  # fmt: skip


def scaled_dot_product_self_attention_vjp(
    X: ArrayLike,
    omega_v: ArrayLike,
    omega_q: ArrayLike,
    omega_k: ArrayLike,
    beta_v: ArrayLike,
    beta_q: ArrayLike,
    beta_k: ArrayLike,
    d_X_prime: ArrayLike,
    *,
    d_attentions: ArrayLike | None = None,
    positional: ArrayLike | None = None,
    positional_mode: PositionalMode = "input",
    mask: ArrayLike | None = None,
    causal: bool = False,
    bias: ArrayLike | None = None,
) -> SelfAttentionCotangents:
    """The vector-Jacobian product of `scaled_dot_product_self_attention` (eq. 12.9) at the given inputs.

    As `self_attention_vjp` (same contract and options), with the logits scaled by s = 1/sqrt(D_q): the
    gradient of <d_X_prime, X_prime> + <d_attentions, attentions> with respect to every input.
    """
    return _vjp(
        True, X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, d_X_prime, d_attentions,
        positional, positional_mode, mask, causal, bias,
    )  # fmt: skip


def _vjp(
    scaled: bool,
    X: ArrayLike,
    omega_v: ArrayLike,
    omega_q: ArrayLike,
    omega_k: ArrayLike,
    beta_v: ArrayLike,
    beta_q: ArrayLike,
    beta_k: ArrayLike,
    d_X_prime: ArrayLike,
    d_attentions: ArrayLike | None,
    positional: ArrayLike | None,
    positional_mode: PositionalMode,
    mask: ArrayLike | None,
    causal: bool,
    bias: ArrayLike | None,
) -> SelfAttentionCotangents:
    """Check every argument (the forward's checks, then the cotangents'), compute, return in the inputs' shapes."""
    inputs = (X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k)
    arguments = check_self_attention_arguments(*inputs)
    Pi, positions_in_values, visible, bias_array = _check_options(
        arguments, positional, positional_mode, mask, causal, bias
    )
    N, D_v = arguments.X.shape[1], arguments.omega_v.shape[0]
    dX_prime = as_float_array("d_X_prime", d_X_prime)
    check_matrix("d_X_prime", dX_prime, D_v, N, f"(D_v, N) = ({D_v}, {N}), like X_prime")
    check_finite("d_X_prime", dX_prime)
    dA = None
    if d_attentions is not None:
        dA = as_float_array("d_attentions", d_attentions)
        check_matrix("d_attentions", dA, N, N, f"(N, N) = ({N}, {N}), like attentions")
        check_finite("d_attentions", dA)
    optional = [array for array in (Pi, bias_array, dX_prime, dA) if array is not None]
    dtype = np.result_type(arguments.X, *optional)
    work = CheckedArguments(*(array.astype(dtype, copy=False) for array in arguments))

    def cast(array: FloatArray | None) -> FloatArray | None:
        return None if array is None else array.astype(dtype, copy=False)

    gradients = attend_backward(
        work, scaled, dX_prime.astype(dtype, copy=False), cast(dA), cast(Pi), positions_in_values, visible,
        cast(bias_array),
    )  # fmt: skip

    def shaped(gradient: FloatArray, given: ArrayLike, name: str) -> FloatArray:
        return gradient.reshape(np.shape(given)).astype(as_float_array(name, given).dtype, copy=False)

    return SelfAttentionCotangents(
        X=shaped(gradients.X, X, "X"),
        omega_v=shaped(gradients.omega_v, omega_v, "omega_v"),
        omega_q=shaped(gradients.omega_q, omega_q, "omega_q"),
        omega_k=shaped(gradients.omega_k, omega_k, "omega_k"),
        beta_v=shaped(gradients.beta_v, beta_v, "beta_v"),
        beta_q=shaped(gradients.beta_q, beta_q, "beta_q"),
        beta_k=shaped(gradients.beta_k, beta_k, "beta_k"),
        positional=None if gradients.positional is None or Pi is None else gradients.positional.astype(Pi.dtype),
        bias=None if gradients.bias is None or bias_array is None else gradients.bias.astype(bias_array.dtype),
    )


def attend_backward(
    arguments: CheckedArguments,
    scaled: bool,
    dX_prime: FloatArray,
    dA: FloatArray | None = None,
    Pi: FloatArray | None = None,
    positions_in_values: bool = True,
    visible: NDArray[np.bool_] | None = None,
    bias: FloatArray | None = None,
) -> SelfAttentionCotangents:
    """The backward of `attention._core.attend` on checked arguments of one float dtype: the cotangents in
    that dtype, betas' as columns, d Pi (None without Pi) and d bias (None without bias). The formulas are
    those of the module's docstring."""
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = arguments
    dtype = X.dtype
    s = 1 / np.sqrt(dtype.type(omega_q.shape[0])) if scaled else dtype.type(1)
    with np.errstate(over="ignore", invalid="ignore"):
        X_qk = X if Pi is None else X + Pi
        X_v = X_qk if positions_in_values else X
        Q = omega_q @ X_qk + beta_q
        K = omega_k @ X_qk + beta_k
        V = omega_v @ X_v + beta_v
    if visible is not None:
        # As in the forward: keys that no query sees and queries that see no key enter nothing.
        unseen = ~visible.any(axis=1)
        K[:, unseen] = 0.0
        V[:, unseen] = 0.0
        Q[:, ~visible.any(axis=0)] = 0.0
    check_no_overflow("the values V of visible keys", V, "reduce the magnitudes of X, omega_v, beta_v")
    check_no_overflow("the queries Q and keys K", np.concatenate([Q, K], axis=1), LOGIT_REMEDY)
    Q_s = Q * s if scaled else Q
    P = _softmax_of_logits(Q_s, K, visible, bias)
    with np.errstate(over="ignore", invalid="ignore"):
        dV = dX_prime @ P.T
        G = V.T @ dX_prime  # dP, overwritten by dS below
        if dA is not None:
            G += dA
        c = np.einsum("mn,mn->n", P, G)
        G -= c
        G *= P  # dS = P o (dP - 1 c^T); exactly 0 where P is (masked entries, queries with no visible key)
        dQ = (K @ G) * s
        dK = Q_s @ G.T
        d_omega_q, d_omega_k, d_omega_v = dQ @ X_qk.T, dK @ X_qk.T, dV @ X_v.T
        d_beta_q, d_beta_k, d_beta_v = (g.sum(axis=1, keepdims=True) for g in (dQ, dK, dV))
        d_X_qk = omega_q.T @ dQ + omega_k.T @ dK
        d_X_v = omega_v.T @ dV
        if positions_in_values:  # X_v is X_qk: dX = d X_qk = d Pi
            d_X_qk += d_X_v
            dX = d_X_qk
        else:
            dX = d_X_qk + d_X_v
    gradients = (dX, d_omega_v, d_omega_q, d_omega_k, d_beta_v, d_beta_q, d_beta_k)
    for name, gradient in zip(CheckedArguments._fields, gradients, strict=True):
        check_no_overflow(f"the cotangent of {name}", gradient, COTANGENT_REMEDY)
    check_no_overflow("the cotangent dS of the logits", G, COTANGENT_REMEDY)
    d_Pi = None if Pi is None else d_X_qk.copy()
    return SelfAttentionCotangents(*gradients, positional=d_Pi, bias=None if bias is None else G)


def _softmax_of_logits(
    Q_s: FloatArray, K: FloatArray, visible: NDArray[np.bool_] | None, bias: FloatArray | None
) -> FloatArray:
    """P = softmax_cols(K^T Q_s + bias) over the visible keys, as the forward computes it (attention._core: the
    masked softmax, or the dense path's `softmax_choices` and `softmax_in_place`); the forward's ValueError when a
    logit overflows."""
    with np.errstate(over="ignore", invalid="ignore"):
        logits: FloatArray = K.T @ Q_s
        if bias is not None:
            logits += bias
    if visible is not None:
        logits[~visible] = 0.0
        check_no_overflow("the visible logits K^T Q", logits, LOGIT_REMEDY)
        return masked_softmax_cols(logits, visible)
    softmax_in_place(logits, 0, *softmax_choices(Q_s, K, bias))
    return logits
