"""Where a correct implementation changes path: skipping the shift by the maximum on the wrong evidence."""

from __future__ import annotations

from typing import Any

import numpy as np

from properties.catalogues.mistakes._base import Array, Pair, _projections, _visible, masked_attention

LOG_MAX = float(np.log(np.finfo(np.float64).max))  # ~709.78: exp of anything larger overflows


SHIFTED_PATH = 700.0  # the two-path kernels below take their shifted path once some |logit| reaches this


def _scaled_logits(arrays: tuple[Array, ...]) -> tuple[Array, Array]:
    """(K^T Q / sqrt(D_q), V): the logits and values of the problem, without options."""
    Q, K, V = _projections(arrays, None, "input")
    return (K.T @ Q) / np.sqrt(Q.shape[0]), V


def _reaches(logits: Array, limit: float) -> bool:
    """Whether some |logit| reaches `limit`."""
    return bool(np.abs(logits).max(initial=0.0) >= limit)


def shift_skipped_below_the_exp_limit(*arrays: Array) -> Pair:
    """Skips the shift by the column maximum when every logit is below log(max float), forgetting that N of
    them must also sum below it: N = 5 logits of 708.3 each sum to inf, and every weight becomes 0."""
    logits, V = _scaled_logits(arrays)
    if _reaches(logits, LOG_MAX):
        return masked_attention(arrays)
    with np.errstate(over="ignore", under="ignore"):
        weights = np.exp(logits)
        A = weights * (1 / weights.sum(axis=0, keepdims=True))
    return V @ A, A


def online_unshifted_for_moderate_logits(*arrays: Array) -> Array:
    """An online softmax over all keys at once that skips the running maximum whenever every |logit| is below
    SHIFTED_PATH (so that exp stays finite), forgetting the values it multiplies before normalising: exp(400)
    times a value of 1e200 overflows."""
    logits, V = _scaled_logits(arrays)
    if _reaches(logits, SHIFTED_PATH):
        return masked_attention(arrays)[0]
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        weights = np.exp(logits)
        return np.asarray((V @ weights) / weights.sum(axis=0, keepdims=True))


def online_blocks_skipping_the_first_key_when_shifted(*arrays: Array) -> Array:
    """An online softmax over blocks of 3 keys whose shifted path (taken once a logit reaches SHIFTED_PATH) starts
    its key loop at 1 instead of 0: with large logits the first key is never seen."""
    logits, V = _scaled_logits(arrays)
    if not _reaches(logits, SHIFTED_PATH):
        return masked_attention(arrays)[0]
    N = logits.shape[1]
    running_max, total, acc = np.full(N, -np.inf), np.zeros(N), np.zeros((V.shape[0], N))
    for k0 in range(1, N, 3):
        scores = logits[k0 : k0 + 3]
        new_max = np.maximum(running_max, scores.max(axis=0))
        correction = np.exp(running_max - new_max)
        with np.errstate(under="ignore"):
            weights = np.exp(scores - new_max)
        total = total * correction + weights.sum(axis=0)
        acc = acc * correction + V[:, k0 : k0 + 3] @ weights
        running_max = new_max
    return np.asarray(acc / total)


def bias_subtracted_on_the_shifted_path(
    *arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None
) -> Pair:
    """Adds the bias on the shift-free path but subtracts it on the shifted one (taken once a logit, bias
    included, reaches SHIFTED_PATH): two copies of the same code, one edited wrongly."""
    visible = _visible(arrays[0].shape[1], mask, causal)
    if bias is None:
        return masked_attention(arrays, visible=visible)
    large = _reaches(_scaled_logits(arrays)[0] + np.asarray(bias), SHIFTED_PATH)
    return masked_attention(arrays, visible=visible, bias=-np.asarray(bias) if large else bias)
