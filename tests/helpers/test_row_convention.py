"""The row-convention adapter: a kernel returning (out, weights) is judged on its weights."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from attention.rows import scaled_dot_product_attention
from properties import test_attention_matrix, test_masks
from properties.helpers.row_convention import SdpaImplementation

Array = NDArray[np.float64]


def kernel_returning_weights(
    query: Array, key: Array, value: Array, attn_mask: Any = None, is_causal: bool = False, scale: Any = None
) -> tuple[Array, Array]:
    """The numpy kernel returning (out, weights), weights (B, H, L, S) from the identity as values."""
    out = scaled_dot_product_attention(query, key, value, attn_mask, 0.0, is_causal, scale)
    S = key.shape[-2]
    identity = np.broadcast_to(np.eye(S), (*key.shape[:-2], S, S))
    return out, scaled_dot_product_attention(query, key, identity, attn_mask, 0.0, is_causal, scale)


@pytest.mark.meta
def test_weights_returned_by_a_kernel_are_taken_as_the_attention_matrix() -> None:
    """A kernel returning (out, weights) is judged on those weights: the attention-matrix laws hold, and the
    masked weights are read in the row convention (weights[l, s] is attentions[s, l])."""
    kernel = SdpaImplementation(kernel_returning_weights, "scaled", "kernel_returning_weights")
    test_attention_matrix.test_attention_columns_are_probability_distributions(implementation=kernel)
    test_masks.test_attentions_are_distributions_over_the_visible_keys(implementation=kernel)


@pytest.mark.slow  # imports and compiles jax: run by pytest -m slow (CI)
def test_jax_targets_are_compiled_whole_and_untraceable_ones_called_op_by_op() -> None:
    """jax arrays reach a target through jax.jit (one compilation a shape, its keywords static); a target that
    reads a value into Python (not traceable) gets the same answer op by op, and is called so from then on."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    from properties.helpers import row_convention

    traced = []

    def traceable(query: Any, key: Any, value: Any, scale: Any = None) -> Any:
        traced.append(query.shape)  # its Python body runs once a shape under jax.jit, at each call op by op
        return jax.nn.dot_product_attention(query, key, value, scale=scale)

    def untraceable(query: Any, key: Any, value: Any, scale: Any = None) -> Any:
        if float(jnp.max(jnp.abs(query))) > 1e30:  # a value read into Python: a tracer error under jax.jit
            raise ValueError("too large")
        return jax.nn.dot_product_attention(query, key, value, scale=scale)

    q = jnp.asarray(np.random.default_rng(0).standard_normal((1, 3, 1, 2)), dtype=jnp.float32)
    expected = np.asarray(jax.nn.dot_product_attention(q, q, q, scale=0.5))
    for target in (traceable, untraceable):
        for _ in range(2):
            out = row_convention.call_target("target", target, "jax", q, q, q, scale=0.5)
            np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-6)
    assert untraceable in row_convention.JAX_EAGER and traceable not in row_convention.JAX_EAGER
    assert traced == [q.shape]  # traced (and compiled) once for the two calls
