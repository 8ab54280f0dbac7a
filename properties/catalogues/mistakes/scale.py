"""Mistakes in the logit scale: 1/sqrt(D), 1/D_q, a hard-coded D_q, no scale, |q|^2."""

from __future__ import annotations

import numpy as np

from properties.catalogues.mistakes._base import Array, Pair, correct_attention, stable_softmax


def scale_by_sqrt_D(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Scales by 1/sqrt(D), the input dimension, instead of 1/sqrt(D_q): right only when D_q = D."""
    return correct_attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / np.sqrt(X.shape[0]))


def scale_hard_coded(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Scales by 1/sqrt(4), the notebook's D_q, for every problem."""
    return correct_attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / np.sqrt(4))


def scale_by_D_q(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Scales by 1/D_q instead of 1/sqrt(D_q)."""
    return correct_attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / omega_q.shape[0])


def query_norm_squared_scale(*arrays: Array) -> tuple[Array, Array]:
    """Divides the logits by |q_n|^2 (over-normalised queries): sharper queries give flatter attention."""
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = arrays
    Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
    A = stable_softmax((K.T @ Q) / np.maximum((Q * Q).sum(axis=0, keepdims=True), 1e-12))
    return V @ A, A


def scale_by_sqrt_D_v(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Scales by 1/sqrt(D_v), the value dimension, instead of 1/sqrt(D_q)."""
    return correct_attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / np.sqrt(omega_v.shape[0]))


def not_scaled(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Leaves out the 1/sqrt(D_q) of eq. 12.9: eq. 12.8 where 12.9 was asked."""
    return correct_attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1.0)


def scaled_by_sqrt_D_q(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Divides by sqrt(D_q) where eq. 12.8 (self_attention) has no scale."""
    return correct_attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / np.sqrt(omega_q.shape[0]))
