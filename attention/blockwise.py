"""Blockwise (memory-efficient) scaled dot-product self-attention: an online softmax over blocks of keys,
as in FlashAttention, that never forms the N x N attention matrix."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from attention._checks import FloatArray, as_count, check_self_attention_arguments
from attention._core import (
    LOGIT_REMEDY,
    check_no_overflow,
    exp_needs_no_shift,
    logit_bound,
    logits_may_overflow,
)

DEFAULT_BLOCK_SIZE = 512


def blockwise_scaled_dot_product_self_attention(
    X: ArrayLike,
    omega_v: ArrayLike,
    omega_q: ArrayLike,
    omega_k: ArrayLike,
    beta_v: ArrayLike,
    beta_q: ArrayLike,
    beta_k: ArrayLike,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> FloatArray:
    """X' of scaled dot-product self-attention (eq. 12.9), computed block by block; returns X' only.

    Queries are taken block_size at a time; for each block, keys and values stream past block_size at a
    time while a running maximum m, a running sum l and a running weighted sum of values are kept per query
    (each rescaled by exp(m_old - m_new) when m grows). When the logits are small enough that exp needs no
    shift (attention._core.exp_needs_no_shift), m and the rescaling are dropped. Extra memory: O(D N + block_size^2).
    """
    arguments = check_self_attention_arguments(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k)
    block = as_count("block_size", block_size, minimum=1)
    X_, omega_v_, omega_q_, omega_k_, beta_v_, beta_q_, beta_k_ = arguments
    N = X_.shape[1]
    dtype = X_.dtype
    with np.errstate(over="ignore", invalid="ignore"):
        scale = 1 / np.sqrt(dtype.type(omega_q_.shape[0]))
        queries = (omega_q_ @ X_ + beta_q_) * scale
        keys_t = X_.T @ omega_k_.T + beta_k_.T  # keys and values as rows, so that each block is contiguous
        values_t = X_.T @ omega_v_.T + beta_v_.T
    for what, array in (("the queries", queries), ("the keys", keys_t), ("the values", values_t)):
        check_no_overflow(what, array, "reduce the magnitudes of X and the weights")
    bound = logit_bound(queries, keys_t.T)
    shift_free = exp_needs_no_shift(bound, dtype, N, values_t)  # before out_t: its temporary is V's size
    D_v = values_t.shape[1]
    out_t = np.empty((N, D_v), dtype=dtype)
    if shift_free:  # no running maximum: sums and weighted sums of exp(scores) only
        for q0 in range(0, N, block):
            q = np.ascontiguousarray(queries[:, q0 : q0 + block])
            total = np.zeros((1, q.shape[1]), dtype=dtype)
            accumulated = np.zeros((D_v, q.shape[1]), dtype=dtype)
            for k0 in range(0, N, block):
                scores = keys_t[k0 : k0 + block] @ q  # (keys in block) x (queries in block)
                with np.errstate(under="ignore"):
                    np.exp(scores, out=scores)
                    total += scores.sum(axis=0, keepdims=True)
                    accumulated += values_t[k0 : k0 + block].T @ scores
            out_t[q0 : q0 + q.shape[1]] = (accumulated / total).T
        return np.asarray(out_t.T)
    check_blocks = logits_may_overflow(bound, dtype)
    for q0 in range(0, N, block):
        q = queries[:, q0 : q0 + block]
        running_max = np.full((1, q.shape[1]), -np.inf, dtype=dtype)
        running_sum = np.zeros((1, q.shape[1]), dtype=dtype)
        accumulated = np.zeros((D_v, q.shape[1]), dtype=dtype)
        for k0 in range(0, N, block):
            with np.errstate(over="ignore", invalid="ignore"):
                scores = keys_t[k0 : k0 + block] @ q  # (keys in block) x (queries in block)
            block_max = scores.max(axis=0, keepdims=True)
            if check_blocks:
                check_no_overflow("the logits K^T Q / sqrt(D_q)", scores, LOGIT_REMEDY)
            new_max = np.maximum(running_max, block_max)
            with np.errstate(under="ignore"):
                correction = np.exp(running_max - new_max)  # exp(-inf) = 0 on the first block
                np.subtract(scores, new_max, out=scores)
                np.exp(scores, out=scores)
            running_sum = running_sum * correction + scores.sum(axis=0, keepdims=True)
            accumulated *= correction
            accumulated += values_t[k0 : k0 + block].T @ scores
            running_max = new_max
        out_t[q0 : q0 + q.shape[1]] = (accumulated / running_sum).T
    return np.asarray(out_t.T)
