"""Exact self-attention in numpy, in the convention of "Understanding Deep Learning", notebook 12.1."""

from attention.self_attention import scaled_dot_product_self_attention, self_attention
from attention.softmax import softmax_cols

__all__ = ["scaled_dot_product_self_attention", "self_attention", "softmax_cols"]
