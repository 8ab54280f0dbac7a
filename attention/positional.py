"""Sinusoidal positional encodings (Vaswani et al.; book section 12.4.1), in the column convention."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from attention._checks import as_count


def sinusoidal_positional_encoding(D: int, N: int) -> NDArray[np.float64]:
    """Pi, D x N: Pi[2i, n] = sin(n / 10000^(2i/D)) and Pi[2i+1, n] = cos(n / 10000^(2i/D)).

    Column n encodes position n. For odd D the last row is a sine. Each (sin, cos) pair is a unit vector
    turning by a fixed angle per position, so Pi[:, n+k] is Pi[:, n] rotated pair by pair, independently of n.
    """
    D, N = as_count("D", D), as_count("N", N)
    frequencies = 10000.0 ** (-2.0 * np.arange((D + 1) // 2) / D) if D else np.zeros(0)
    angles = np.outer(frequencies, np.arange(N, dtype=np.float64))
    Pi = np.empty((D, N))
    Pi[0::2] = np.sin(angles)
    Pi[1::2] = np.cos(angles[: D // 2])
    return Pi
