"""Multi-head self-attention (book eqs. 12.10-12.12; notebook 12.2)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from attention._checks import FloatArray, as_float_array, check_finite, check_matrix, check_self_attention_arguments
from attention._core import attend

Head = tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike, ArrayLike, ArrayLike]


def multihead_scaled_self_attention(X: ArrayLike, heads: Sequence[Head], omega_c: ArrayLike) -> FloatArray:
    """X' = omega_c [Sa_1[X]; ...; Sa_H[X]] (eq. 12.12), each head Sa_h scaled dot-product self-attention.

    `heads` holds one tuple (omega_v, omega_q, omega_k, beta_v, beta_q, beta_k) per head, in the notebook's
    argument order; every head is scaled by its own 1/sqrt(D_q). The head outputs are stacked vertically,
    first head on top, into a (sum of the heads' D_v) x N matrix, which omega_c multiplies.
    """
    if isinstance(heads, np.ndarray) or not isinstance(heads, Sequence) or len(heads) == 0:
        raise TypeError("heads must be a non-empty sequence of (omega_v, omega_q, omega_k, beta_v, beta_q, beta_k)")
    checked = []
    for h, head in enumerate(heads):
        if not isinstance(head, Sequence) or len(head) != 6:
            seen = type(head).__name__ + (f" of length {len(head)}" if isinstance(head, Sequence) else "")
            raise TypeError(
                f"heads[{h}] must be a tuple (omega_v, omega_q, omega_k, beta_v, beta_q, beta_k); got {seen}"
            )
        try:
            checked.append(check_self_attention_arguments(X, *head))
        except (ValueError, TypeError) as error:
            raise type(error)(f"heads[{h}]: {error}") from None
    stacked_rows = sum(arguments.omega_v.shape[0] for arguments in checked)
    mixer = as_float_array("omega_c", omega_c)
    check_matrix("omega_c", mixer, None, stacked_rows, f"(D, sum of the heads' D_v) = (D, {stacked_rows})")
    check_finite("omega_c", mixer)
    stacked = np.vstack([attend(arguments, True)[0] for arguments in checked])
    dtype = np.result_type(stacked, mixer)
    return np.asarray(mixer.astype(dtype, copy=False) @ stacked.astype(dtype, copy=False))
