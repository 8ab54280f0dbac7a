"""Softmax over the columns of a matrix (book eq. 12.5), stable for every finite input."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from attention._checks import FloatArray, as_float_array, check_finite


def softmax_cols(data_in: ArrayLike) -> FloatArray:
    """Softmax of each column of `data_in` (along axis 0): every column is non-negative and sums to 1.

    Each column is shifted by its maximum before exponentiating, so no finite input overflows
    (a column like [1e5, -1e5, 0] gives [1, 0, 0]). Keeps float32 as float32; integers become float64.
    A 1-D input is treated as a single column.
    """
    data = as_float_array("data_in", data_in)
    if data.ndim not in (1, 2):
        raise ValueError(f"data_in must be a 1-D or 2-D array (softmax over axis 0); got shape {data.shape}")
    check_finite("data_in", data)
    return _softmax_cols(data)


def _softmax_cols(data: FloatArray) -> FloatArray:
    """Core of softmax_cols for finite float input: shift by the column max, exponentiate, normalise."""
    if data.shape[0] == 0:
        empty: FloatArray = data.copy()
        return empty
    # The shift can overflow to -inf when a column spans more than the float range (1e308 - -1e308);
    # exp(-inf) = 0 is then the right weight, and underflow of tiny weights to 0 is likewise exact enough.
    with np.errstate(over="ignore", under="ignore"):
        column_max = data.max(axis=0, keepdims=True)
        shifted: FloatArray = data - column_max
        np.exp(shifted, out=shifted)
    # The column max contributes exp(0) = 1, so every denominator lies in [1, N]: no division by zero.
    shifted /= shifted.sum(axis=0, keepdims=True)
    return shifted
