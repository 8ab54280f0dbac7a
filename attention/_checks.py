"""Argument checking: called first, so the numerical core may assume clean, finite, float arrays."""

from __future__ import annotations

import operator
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.floating]


def as_float_array(name: str, value: ArrayLike) -> FloatArray:
    """Return `value` as a float array without copying it when it already is one.

    Integer and bool arrays become float64; complex, object, string and other dtypes raise TypeError.
    """
    array = np.asarray(value)
    kind = array.dtype.kind
    if kind in "biu":
        return array.astype(np.float64)
    if kind != "f":
        raise TypeError(f"{name} must be a real (float, integer or bool) array; got dtype {array.dtype}")
    return array


def as_count(name: str, value: int, minimum: int = 0) -> int:
    """`value` as an int of at least `minimum`: TypeError for a non-integer, ValueError below the minimum."""
    try:
        count = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer; got {type(value).__name__} {value!r}") from None
    if count < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {count}")
    return count


def check_finite(name: str, array: FloatArray) -> None:
    """Raise ValueError naming `name` when `array` holds NaN or infinity."""
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(f"{name} must be finite; found {array[tuple(bad)]} at index {tuple(int(i) for i in bad)}")


def check_matrix(name: str, array: FloatArray, rows: int | None, cols: int | None, expected: str) -> None:
    """Check that `array` is 2-D with the given number of rows and columns (None: any)."""
    if (
        array.ndim != 2
        or (rows is not None and array.shape[0] != rows)
        or (cols is not None and array.shape[1] != cols)
    ):
        raise ValueError(f"{name} must have shape {expected}; got shape {array.shape}")


def as_bias_column(name: str, array: FloatArray, rows: int, expected: str) -> FloatArray:
    """Return a bias of shape (rows, 1) or (rows,) as a (rows, 1) view; anything else raises ValueError.

    A (1, rows) row is refused rather than broadcast: it would silently add the same number
    to every row of the projection for rows = 1, and the wrong thing for every other size.
    """
    if array.shape == (rows,):
        return array.reshape(rows, 1)
    if array.shape == (rows, 1):
        return array
    raise ValueError(f"{name} must have shape {expected} or ({rows},); got shape {array.shape}")


class CheckedArguments(NamedTuple):
    """Checked arguments of self-attention, all of one float dtype, each beta a column."""

    X: FloatArray
    omega_v: FloatArray
    omega_q: FloatArray
    omega_k: FloatArray
    beta_v: FloatArray
    beta_q: FloatArray
    beta_k: FloatArray


def check_self_attention_arguments(
    X: ArrayLike,
    omega_v: ArrayLike,
    omega_q: ArrayLike,
    omega_k: ArrayLike,
    beta_v: ArrayLike,
    beta_q: ArrayLike,
    beta_k: ArrayLike,
) -> CheckedArguments:
    """Validate the notebook's seven arguments and bring them to one float dtype.

    Shapes: X is D x N; omega_q and omega_k are D_q x D with D_q >= 1; omega_v is D_v x D;
    each beta is (rows, 1) or (rows,). The common dtype follows numpy's promotion of the inputs,
    with integer and bool inputs counting as float64.
    """
    arrays = {
        name: as_float_array(name, value)
        for name, value in (
            ("X", X),
            ("omega_v", omega_v),
            ("omega_q", omega_q),
            ("omega_k", omega_k),
            ("beta_v", beta_v),
            ("beta_q", beta_q),
            ("beta_k", beta_k),
        )
    }
    x = arrays["X"]
    if x.ndim != 2:
        raise ValueError(f"X must be a 2-D array of shape (D, N), inputs as columns; got shape {x.shape}")
    D = x.shape[0]
    check_matrix("omega_q", arrays["omega_q"], None, D, f"(D_q, D) = (D_q, {D})")
    D_q = arrays["omega_q"].shape[0]
    if D_q == 0:
        raise ValueError(f"omega_q must have at least one row (D_q >= 1); got shape {arrays['omega_q'].shape}")
    check_matrix("omega_k", arrays["omega_k"], D_q, D, f"(D_q, D) = ({D_q}, {D}), like omega_q")
    check_matrix("omega_v", arrays["omega_v"], None, D, f"(D_v, D) = (D_v, {D})")
    D_v = arrays["omega_v"].shape[0]
    for name, rows, label in (("beta_v", D_v, "D_v"), ("beta_q", D_q, "D_q"), ("beta_k", D_q, "D_q")):
        arrays[name] = as_bias_column(name, arrays[name], rows, f"({label}, 1) = ({rows}, 1)")
    for name, array in arrays.items():
        check_finite(name, array)
    dtype = np.result_type(*arrays.values())
    return CheckedArguments(**{name: array.astype(dtype, copy=False) for name, array in arrays.items()})
