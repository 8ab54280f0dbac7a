"""Mistakes in multi-head attention, f(X, heads, omega_c) (each tagged with `mistake`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from properties.catalogues.mistakes._base import Array, _reference, correct_attention, mistake
from properties.catalogues.mistakes.positions import positional_bias


def _head_outputs(X: Array, heads: Any) -> list[Array]:
    return [_reference((X, *head))[0] for head in heads]


@mistake("multi-head heads", "scale missing")
def unscaled_heads(X: Array, heads: Any, omega_c: Array) -> Array:
    """Forgets every head's 1/sqrt(D_q) scale."""
    return np.asarray(omega_c @ np.vstack([correct_attention(X, *head, scale=1.0)[0] for head in heads]))


@mistake("multi-head heads", "heads mixed up")
def heads_stacked_in_reverse(X: Array, heads: Any, omega_c: Array) -> Array:
    """Stacks the head outputs last head first."""
    return np.asarray(omega_c @ np.vstack(_head_outputs(X, heads)[::-1]))


@mistake("multi-head heads", "positions invented")
def positional_heads(X: Array, heads: Any, omega_c: Array) -> Array:
    """Each head favours earlier keys (positional_bias): no longer permutation equivariant."""
    return np.asarray(omega_c @ np.vstack([positional_bias(X, *head)[0] for head in heads]))


@mistake("multi-head heads of different shapes", "wrong scale")
def shared_scale(X: Array, heads: Any, omega_c: Array) -> Array:
    """Scales every head by 1/sqrt of the total query dimension of all heads."""
    total = sum(head[1].shape[0] for head in heads)
    return np.asarray(omega_c @ np.vstack([correct_attention(X, *head, scale=1 / np.sqrt(total))[0] for head in heads]))


@mistake("multi-head heads of different shapes", "wrong scale")
def first_heads_scale_for_every_head(X: Array, heads: Any, omega_c: Array) -> Array:
    """Scales every head by 1/sqrt of the first head's D_q (right only when all heads have one D_q)."""
    s = 1 / np.sqrt(heads[0][1].shape[0])
    return np.asarray(omega_c @ np.vstack([correct_attention(X, *head, scale=s)[0] for head in heads]))


@mistake("multi-head mixing", "extra term")
def heads_with_a_residual(X: Array, heads: Any, omega_c: Array) -> Array:
    """Adds X to the output when the shapes allow (a transformer block's residual)."""
    out = omega_c @ np.vstack(_head_outputs(X, heads))
    return np.asarray(out + X if out.shape == X.shape else out + 1.0)


@mistake("multi-head square mixing", "transposed")
def mixing_transposed(X: Array, heads: Any, omega_c: Array) -> Array:
    """Applies omega_c^T when omega_c is square (the row convention's H W_o read in the book's columns)."""
    stacked = np.vstack(_head_outputs(X, heads))
    mixer = omega_c.T if omega_c.shape[0] == omega_c.shape[1] else omega_c
    return np.asarray(mixer @ stacked)


@mistake("multi-head heads", "heads mixed up")
def heads_interleaved(X: Array, heads: Any, omega_c: Array) -> Array:
    """Stacks the head outputs row by row (row d of head h at d H + h, a reshape in the wrong order) when
    every head has the same D_v, and correctly otherwise."""
    outputs = _head_outputs(X, heads)
    if len({output.shape[0] for output in outputs}) == 1:
        stacked = np.stack(outputs, axis=1).reshape(-1, X.shape[1])
    else:
        stacked = np.vstack(outputs)
    return np.asarray(omega_c @ stacked)


@mistake("multi-head heads", "parameters mixed up")
def keys_of_the_next_head(X: Array, heads: Any, omega_c: Array) -> Array:
    """Head h forms its keys with head h + 1's omega_k (cyclically) where the shapes agree (an indexing slip)."""
    mixed = []
    for h, head in enumerate(heads):
        other = heads[(h + 1) % len(heads)][2]
        omega_k = other if other.shape == head[2].shape else head[2]
        mixed.append((head[0], head[1], omega_k, *head[3:]))
    return np.asarray(omega_c @ np.vstack(_head_outputs(X, mixed)))


@mistake("multi-head heads", "parameters mixed up")
def value_bias_of_the_first_head(X: Array, heads: Any, omega_c: Array) -> Array:
    """Every head adds the first head's beta_v where the shapes agree (one bias broadcast to all heads)."""
    first = heads[0][3]
    mixed = [(*head[:3], first if first.shape == head[3].shape else head[3], *head[4:]) for head in heads]
    return np.asarray(omega_c @ np.vstack(_head_outputs(X, mixed)))
