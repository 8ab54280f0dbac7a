"""Edges (issue 18): what a function that returns (rather than raises) gives for no inputs (N = 0)."""

from __future__ import annotations

from typing import Any

import numpy as np

from properties.catalogues.mistakes._base import Array, Pair, _reference, mistake


@mistake("none at N = 0", "wrong shape on the edge")
def empty_output_of_width_D(*arrays: Array) -> Pair:
    """Correct for N >= 1; for N = 0 returns X' of shape (D, 0), the shape of X, instead of (D_v, 0)."""
    if arrays[0].shape[1] == 0:
        return np.zeros_like(arrays[0]), np.zeros((0, 0))
    return _reference(arrays)


@mistake("every option at N = 0", "wrong shape on the edge")
def empty_output_with_options_of_width_D(
    *arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None
) -> Pair:
    """Correct with every option for N >= 1; for N = 0 returns X' of shape (D, 0) instead of (D_v, 0)."""
    if arrays[0].shape[1] == 0:
        return np.zeros_like(arrays[0]), np.zeros((0, 0))
    return _reference(arrays, mask=mask, causal=causal, bias=bias)
