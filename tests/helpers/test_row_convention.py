"""The row-convention adapter: a kernel returning (out, weights) is judged on its weights."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from attention.rows import scaled_dot_product_attention
from properties import test_attention_matrix, test_masks
from properties.helpers import row_convention
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


def kernel_with_mask_and_bias(
    query: Array, key: Array, value: Array, *, mask: Any = None, bias: Any = None, is_causal: bool = False,
    scale: Any = None,
) -> Array:  # fmt: skip
    """Attention in numpy on (B, H, L, E) rows with jax's keywords (mask, bias, top-left is_causal, scale, grouped
    heads), a query that sees no key getting the mean of all values (jax's convention)."""
    L, S = query.shape[-2], key.shape[-2]
    group = query.shape[1] // key.shape[1]
    key, value = np.repeat(key, group, axis=1), np.repeat(value, group, axis=1)
    s = 1.0 / np.sqrt(query.shape[-1]) if scale is None else scale
    logits = s * query @ np.swapaxes(key, -1, -2) + (0.0 if bias is None else bias)
    visible = np.ones((1, 1, L, S), dtype=bool) if mask is None else mask
    if is_causal:
        visible = visible & np.tri(L, S, dtype=bool)
    logits = np.where(visible, logits, -1e300)
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True)) if S else logits
    weights = weights / weights.sum(axis=-1, keepdims=True) if S else weights
    return np.asarray(weights @ value)


@pytest.mark.parametrize("seed", range(40))
def test_calls_padded_to_buckets_give_the_results_of_the_calls_themselves(seed: int) -> None:
    """A call padded to bucketed shapes (zero columns, zero queries, zero keys hidden by the mask), cut back, gives
    the call's own output, with masks, causal, biases and grouped heads; a query that sees no key keeps its keys
    unpadded, so that its convention (here the mean of all values) is that of the call itself."""
    rng = np.random.default_rng(seed)
    B, H_k, group = rng.integers(1, 3), rng.integers(1, 3), rng.integers(1, 3)
    L, S, E_v = (int(n) for n in rng.integers(0, 12, size=3))
    E = int(rng.integers(1, 12))
    query, key = rng.standard_normal((B, H_k * group, L, E)), rng.standard_normal((B, H_k, S, E))
    value = rng.standard_normal((B, H_k, S, E_v))
    keywords: dict[str, Any] = {"is_causal": bool(rng.integers(2))}
    if rng.integers(2):
        keywords["mask"] = rng.random((B, 1, L, S)) < (0.3 if seed % 4 == 0 else 0.8)  # some queries see no key
    if rng.integers(2):
        keywords["bias"] = rng.standard_normal((1, 1, L, S))
    if rng.integers(2):
        keywords["scale"] = float(rng.uniform(0.1, 2.0))
    padded = row_convention.padded_to_buckets(query, key, value, keywords, "mask")
    if padded is None:  # nothing to pad: widths and lengths on the buckets already, or no padding keeps the path
        assert E_v == E  # values narrower or wider than the keys are always padded (jax needs them as wide)
        return
    q, k, v = padded.arrays
    assert q.shape[-2] - L == k.shape[-2] - S if keywords["is_causal"] else True
    sees_nothing = not row_convention.every_query_sees_a_key(keywords.get("mask"), keywords["is_causal"], L, S)
    unmasked = "mask" not in keywords
    assert (
        k.shape[-2] == (S if unmasked or sees_nothing or S == 0 else row_convention.bucket(S)) or keywords["is_causal"]
    )
    # the call's own path: no mask added to a call without one, no scale to a call without one at its own width
    assert ("mask" in padded.keywords) == (not unmasked) or k.shape[-2] > S
    assert "scale" in padded.keywords or q.shape[-1] == E
    out = kernel_with_mask_and_bias(q, k, v, **padded.keywords)[..., :L, :E_v]
    np.testing.assert_allclose(out, kernel_with_mask_and_bias(query, key, value, **keywords), rtol=0, atol=1e-13)


@pytest.mark.slow
@pytest.mark.parametrize("chosen", ["", "off"])
def test_jax_targets_keep_their_compilations_in_a_persistent_cache(tmp_path: Any, chosen: str) -> None:
    """--array jax turns on jax's persistent compilation cache in ATTENTION_JAX_CACHE (or the user's cache
    directory), where a jitted call leaves its executable; "off", or jax's own JAX_COMPILATION_CACHE_DIR, wins."""
    pytest.importorskip("jax")
    import os
    import subprocess
    import sys

    directory = tmp_path / "jax-cache"
    code = (
        "import jax, jax.numpy as jnp\n"
        "from properties.helpers.row_convention import Convention\n"
        "Convention(array='jax', dtype='float32').check_available()\n"
        "jax.jit(lambda a: a @ a.T)(jnp.ones((3, 5))).block_until_ready()\n"
        "print(jax.config.jax_compilation_cache_dir)\n"
    )
    environment = {**os.environ, "ATTENTION_JAX_CACHE": chosen or str(directory)}
    environment.pop("JAX_COMPILATION_CACHE_DIR", None)
    printed = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True)
    if chosen == "off":
        assert printed.stdout.strip() in ("None", "") and not directory.exists()
    else:
        assert printed.stdout.strip() == str(directory) and any(directory.rglob("*"))
