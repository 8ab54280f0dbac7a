"""Self-attention in the book's column convention (eqs. 12.6-12.9): one core, scaled and unscaled,
with optional positional encodings (section 12.4.1), masks and additive logit biases."""

from __future__ import annotations

from typing import Literal

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
from attention._core import attend

PositionalMode = Literal["input", "query_key"]
POSITIONAL_MODES = ("input", "query_key")


def self_attention(
    X: ArrayLike,
    omega_v: ArrayLike,
    omega_q: ArrayLike,
    omega_k: ArrayLike,
    beta_v: ArrayLike,
    beta_q: ArrayLike,
    beta_k: ArrayLike,
    *,
    positional: ArrayLike | None = None,
    positional_mode: PositionalMode = "input",
    mask: ArrayLike | None = None,
    causal: bool = False,
    bias: ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Dot-product self-attention, book eqs. 12.6-12.8; returns (X_prime, attentions).

    X is D x N with the inputs as columns; omega_q, omega_k are D_q x D; omega_v is D_v x D; each beta is
    (rows, 1) or (rows,). With Q = omega_q X + beta_q 1^T, K = omega_k X + beta_k 1^T and
    V = omega_v X + beta_v 1^T: attentions = softmax_cols(K^T Q) is N x N, attentions[m, n] being the
    weight of key m for query n (every column sums to 1), and X_prime = V attentions is D_v x N.

    Keyword-only options:
    positional: a D x N matrix Pi (sinusoidal or learned) added to X, for queries, keys and values
        (positional_mode="input") or for queries and keys only (positional_mode="query_key").
    mask: boolean N x N, mask[m, n] True when key m is visible to query n; causal=True makes key m visible
        to query n iff m <= n (both may be given: a key must be visible under both).
    bias: an N x N matrix added to the (scaled) logits before the softmax (relative positions, ALiBi).
    Masked keys get weight exactly 0 and influence nothing. A query with no visible key gets a zero column
    in attentions and in X_prime.
    """
    arguments = check_self_attention_arguments(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k)
    return attend(arguments, False, *_check_options(arguments, positional, positional_mode, mask, causal, bias))


def scaled_dot_product_self_attention(
    X: ArrayLike,
    omega_v: ArrayLike,
    omega_q: ArrayLike,
    omega_k: ArrayLike,
    beta_v: ArrayLike,
    beta_q: ArrayLike,
    beta_k: ArrayLike,
    *,
    positional: ArrayLike | None = None,
    positional_mode: PositionalMode = "input",
    mask: ArrayLike | None = None,
    causal: bool = False,
    bias: ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Scaled dot-product self-attention, book eq. 12.9; returns (X_prime, attentions).

    As `self_attention` (and with the same keyword-only options), with
    attentions = softmax_cols(K^T Q / sqrt(D_q) + bias), where D_q = omega_q.shape[0] is the dimension of
    the queries and keys (not of the inputs).
    """
    arguments = check_self_attention_arguments(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k)
    return attend(arguments, True, *_check_options(arguments, positional, positional_mode, mask, causal, bias))


Options = tuple[FloatArray | None, bool, "NDArray[np.bool_] | None", FloatArray | None]


def _check_options(
    arguments: CheckedArguments,
    positional: ArrayLike | None,
    positional_mode: str,
    mask: ArrayLike | None,
    causal: bool,
    bias: ArrayLike | None,
) -> Options:
    """Validate the keyword options; return (Pi, Pi for the values too?, visibility or None, bias or None)."""
    D, N = arguments.X.shape
    Pi = None
    if positional_mode not in POSITIONAL_MODES:
        raise ValueError(f"positional_mode must be one of {POSITIONAL_MODES}; got {positional_mode!r}")
    if positional is not None:
        Pi = as_float_array("positional", positional)
        check_matrix("positional", Pi, D, N, f"(D, N) = ({D}, {N}), like X")
        check_finite("positional", Pi)
    visible = None
    if mask is not None:
        mask_array = np.asarray(mask)
        if mask_array.dtype != np.bool_:
            raise TypeError(
                f"mask must be a boolean array (True: key m visible to query n); got dtype {mask_array.dtype}"
            )
        check_matrix("mask", mask_array, N, N, f"(N, N) = ({N}, {N})")
        visible = mask_array
    if not isinstance(causal, bool | np.bool_):
        raise TypeError(f"causal must be True or False; got {causal!r}")
    if causal:
        triangle = np.tri(N, dtype=np.bool_).T  # [m, n] True iff m <= n
        visible = triangle if visible is None else visible & triangle
    bias_array = None
    if bias is not None:
        bias_array = as_float_array("bias", bias)
        check_matrix("bias", bias_array, N, N, f"(N, N) = ({N}, {N})")
        check_finite("bias", bias_array)
    return Pi, positional_mode == "input", visible, bias_array
