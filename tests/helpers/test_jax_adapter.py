"""The bundled jax adapter (properties/helpers/adapters/jax_attention.py): jax.nn.dot_product_attention with
flash_attn_func's and flash_attn_varlen_func's signatures, checked against float64 attention written here."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

jax = pytest.importorskip("jax")

from properties.helpers.adapters import jax_attention  # noqa: E402

Array = NDArray[np.float64]


def attention_rows(q: Array, k: Array, v: Array, scale: float, visible: NDArray[np.bool_]) -> tuple[Array, Array]:
    """Attention over (B, L, H, D) rows in float64 with grouped heads: out (B, L, H, D_v) and the natural-log lse
    (B, H, L); visible (L, S) says which keys each query sees."""
    group = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
    logits = scale * np.einsum("blhd,bshd->bhls", q, k)
    logits = np.where(visible, logits, -np.inf)
    top = logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits - top)
    total = weights.sum(axis=-1, keepdims=True)
    return np.einsum("bhls,bshd->blhd", weights / total, v), (top + np.log(total))[..., 0]


def problem(L: int, S: int, seed: int = 0, D: int = 3, D_v: int = 5) -> tuple[Array, Array, Array]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((2, L, 4, D)), rng.standard_normal((2, S, 2, D)), rng.standard_normal((2, S, 2, D_v))


def as_float32(q: Array, k: Array, v: Array) -> tuple[Array, Array, Array]:
    return q.astype(np.float32), k.astype(np.float32), v.astype(np.float32)


# float32 inputs, softmax in float32: a few units of float32's unit roundoff on these O(1) problems.
TOLERANCE = 1e-5


@pytest.mark.slow  # compiles jax
@pytest.mark.parametrize(("causal", "window"), [(False, (-1, -1)), (True, (-1, -1)), (False, (2, 1)), (True, (3, -1))])
def test_outputs_and_lse_are_attention_with_top_left_causal_and_windows(causal: bool, window: tuple[int, int]) -> None:
    """out and softmax_lse (the natural-log lse of the scaled logits, from jax's return_residual) equal attention
    over the keys that the top-left alignment shows (m <= n causal, n - left <= m <= n + right), on L != S."""
    q, k, v = problem(5, 9)
    scale = 0.7
    n, m = np.arange(5)[:, None], np.arange(9)[None, :]
    left, right = window
    visible = (m <= n if causal else m >= 0) & (m >= n - left if left >= 0 else m >= 0)
    visible &= m <= n + right if right >= 0 else m >= 0
    out, lse = jax_attention.flash_attn_func(*as_float32(q, k, v), softmax_scale=scale, causal=causal,
                                                    window_size=window, return_attn_probs=True)  # fmt: skip
    q32, k32, v32 = (a.astype(np.float64) for a in as_float32(q, k, v))  # what jax receives, exactly
    expected_out, expected_lse = attention_rows(q32, k32, v32, scale, visible)
    assert np.asarray(out).shape == (2, 5, 4, 5) and np.asarray(lse).shape == (2, 4, 5)
    np.testing.assert_allclose(np.asarray(out), expected_out, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(np.asarray(lse), expected_lse, rtol=0, atol=TOLERANCE * 10)  # lse up to |logits| ~ 10


@pytest.mark.slow  # compiles jax
def test_causal_is_aligned_top_left_not_bottom_right() -> None:
    """With L < S, jax's causal query n sees keys m <= n (top-left), not m <= n + S - L (FlashAttention's)."""
    q, k, v = problem(3, 6, seed=1)
    out = np.asarray(jax_attention.flash_attn_func(*as_float32(q, k, v), causal=True))
    n, m = np.arange(3)[:, None], np.arange(6)[None, :]
    top_left, _ = attention_rows(q, k, v, 1 / np.sqrt(3), m <= n)
    bottom_right, _ = attention_rows(q, k, v, 1 / np.sqrt(3), m <= n + 3)
    np.testing.assert_allclose(out, top_left, rtol=0, atol=TOLERANCE)
    assert np.abs(out - bottom_right).max() > 1e-2


@pytest.mark.slow  # compiles jax
def test_packed_batches_equal_each_sequence_alone_and_an_empty_key_sequence_gives_zeros() -> None:
    """flash_attn_varlen_func on three sequences (the middle one with no keys) equals flash_attn_func on each alone,
    in float64 (64-bit mode switched on for it); queries of a sequence without keys get zeros, as FlashAttention's."""
    x64 = jax.config.read("jax_enable_x64")
    rng = np.random.default_rng(2)
    cu_q, cu_k = np.array([0, 2, 5, 9], dtype=np.int32), np.array([0, 3, 3, 7], dtype=np.int32)
    q, k, v = rng.standard_normal((9, 2, 4)), rng.standard_normal((7, 1, 4)), rng.standard_normal((7, 1, 6))
    out, lse = jax_attention.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 4, 4, causal=True, return_attn_probs=True)
    assert out.shape == (9, 2, 6) and lse.shape == (2, 9) and out.dtype == np.float64
    for b in (0, 2):
        alone = np.asarray(jax_attention.flash_attn_func(q[None, cu_q[b]:cu_q[b + 1]], k[None, cu_k[b]:cu_k[b + 1]],
                                                         v[None, cu_k[b]:cu_k[b + 1]], causal=True))  # fmt: skip
        np.testing.assert_allclose(out[cu_q[b] : cu_q[b + 1]], alone[0], rtol=0, atol=1e-12)
    assert np.all(out[2:5] == 0)
    jax.config.update("jax_enable_x64", x64)  # as it was, for the tests that follow


def test_dropout_is_refused_and_bad_offsets_are_named() -> None:
    """jax has no dropout: dropout_p > 0 is a ValueError, as are offsets of two shapes."""
    q = np.zeros((1, 2, 1, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="dropout_p"):
        jax_attention.flash_attn_func(q, q, q, dropout_p=0.1)
    with pytest.raises(ValueError, match="cu_seqlens_q and cu_seqlens_k"):
        jax_attention.flash_attn_varlen_func(q[0], q[0], q[0], np.array([0, 2]), np.array([0, 1, 2]), 2, 2)
