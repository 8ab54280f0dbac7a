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
