"""Tails and tiles (issue 9): sparsified weights, and blocked kernels that mishandle block boundaries."""

from __future__ import annotations

import numpy as np

from properties.catalogues.mistakes._base import Array, Pair, correct_attention, mistake


def _zeroed_below(threshold: float, arrays: tuple[Array, ...]) -> Pair:
    """Correct attention with every weight below `threshold` zeroed and each column renormalised."""
    _, A = correct_attention(*arrays, scale=1 / np.sqrt(arrays[2].shape[0]))
    A = np.where(threshold > A, 0.0, A)
    A /= A.sum(axis=0, keepdims=True)
    return (arrays[1] @ arrays[0] + arrays[4]) @ A, A


@mistake("none", "tail zeroed")
def tail_weights_zeroed(*arrays: Array) -> Pair:
    """Zeroes every weight below 1e-8 and renormalises (a "sparsification" shortcut)."""
    return _zeroed_below(1e-8, arrays)


@mistake("none", "tail zeroed")
def tail_weights_zeroed_below_1e_100(*arrays: Array) -> Pair:
    """Zeroes every weight below 1e-100 and renormalises: far below anything a plot shows."""
    return _zeroed_below(1e-100, arrays)


@mistake("none", "tail zeroed")
def tail_weights_zeroed_below_1e_200(*arrays: Array) -> Pair:
    """Zeroes every weight below 1e-200 and renormalises."""
    return _zeroed_below(1e-200, arrays)


@mistake("none", "tail zeroed")
def tail_weights_zeroed_below_1e_300(*arrays: Array) -> Pair:
    """Zeroes every weight below 1e-300 and renormalises: 8 orders above float64's smallest normal number."""
    return _zeroed_below(1e-300, arrays)


TILE = 16  # the block size of the blocked mistakes below


def _blocked(arrays: tuple[Array, ...], *, drop_tail: bool = False, reuse_first_queries: bool = False) -> Array:
    """X' by an online softmax over blocks of TILE keys for blocks of TILE queries, with one of two mistakes."""
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = arrays
    Q = (omega_q @ X + beta_q) / np.sqrt(omega_q.shape[0])
    K, V = omega_k @ X + beta_k, omega_v @ X + beta_v
    N = X.shape[1]
    key_end = N - N % TILE if drop_tail and N > TILE else N
    out = np.empty((V.shape[0], N))
    for q0 in range(0, N, TILE):
        width = min(TILE, N - q0)
        q = Q[:, :width] if reuse_first_queries else Q[:, q0 : q0 + width]
        running_max, total = np.full(width, -np.inf), np.zeros(width)
        acc = np.zeros((V.shape[0], width))
        for k0 in range(0, key_end, TILE):
            scores = K[:, k0 : k0 + TILE].T @ q
            new_max = np.maximum(running_max, scores.max(axis=0))
            correction = np.exp(running_max - new_max)
            weights = np.exp(scores - new_max)
            total = total * correction + weights.sum(axis=0)
            acc = acc * correction + V[:, k0 : k0 + TILE] @ weights
            running_max = new_max
        out[:, q0 : q0 + width] = acc / total
    return out


def blocked_dropping_the_tail_block(*arrays: Array) -> Array:
    """A FlashAttention-style kernel (tiles of 16) that skips the last partial block of keys when N > 16."""
    return _blocked(arrays, drop_tail=True)


def blocked_reusing_the_first_query_block(*arrays: Array) -> Array:
    """A FlashAttention-style kernel (tiles of 16) that uses the first block of queries for every block."""
    return _blocked(arrays, reuse_first_queries=True)
