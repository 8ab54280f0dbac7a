"""Exact self-attention in numpy, in the convention of "Understanding Deep Learning", notebook 12.1."""

from attention.blockwise import blockwise_scaled_dot_product_self_attention
from attention.flash import flash_attn_func, flash_attn_varlen_func, merge_attention_states, split_kv_attention
from attention.multihead import multihead_scaled_self_attention
from attention.positional import sinusoidal_positional_encoding
from attention.rows_backward import scaled_dot_product_attention_backward
from attention.self_attention import scaled_dot_product_self_attention, self_attention
from attention.self_attention_backward import (
    SelfAttentionCotangents,
    scaled_dot_product_self_attention_vjp,
    self_attention_vjp,
)
from attention.softmax import softmax_cols

__all__ = [
    "SelfAttentionCotangents",
    "blockwise_scaled_dot_product_self_attention",
    "flash_attn_func",
    "flash_attn_varlen_func",
    "merge_attention_states",
    "multihead_scaled_self_attention",
    "scaled_dot_product_attention_backward",
    "scaled_dot_product_self_attention",
    "scaled_dot_product_self_attention_vjp",
    "self_attention",
    "self_attention_vjp",
    "sinusoidal_positional_encoding",
    "softmax_cols",
    "split_kv_attention",
]
