"""Measurements that return numbers, and assertions that wrap them and report the worst case."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


class LawViolation(AssertionError):
    """A law of self-attention does not hold on an example."""


@dataclass(frozen=True)
class Discrepancy:
    """The worst entry of |actual - expected| measured against its tolerance."""

    ratio: float  # worst error / tolerance; inf for a non-finite actual value; 0 when everything agrees
    index: tuple[int, ...]
    actual: float
    expected: float
    error: float
    tolerance: float

    def __str__(self) -> str:
        return (
            f"worst error {self.error:.3g} at index {self.index} (got {self.actual!r}, expected "
            f"{self.expected!r}) against tolerance {self.tolerance:.3g}: {self.ratio:.3g} x tolerance"
        )


def discrepancy(actual: ArrayLike, expected: ArrayLike, tolerance: ArrayLike) -> Discrepancy:
    """Measure how far `actual` is from `expected`, entry by entry, in units of `tolerance` (broadcast)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    a, e, t = np.broadcast_arrays(a, e, np.asarray(tolerance, dtype=np.float64))
    if a.size == 0:
        return Discrepancy(0.0, (), 0.0, 0.0, 0.0, 0.0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        error = np.abs(a - e)
        ratio = np.where(np.isfinite(a), error / t, np.inf)
        ratio = np.where(error == 0, 0.0, ratio)
    flat = int(np.argmax(ratio))
    index = tuple(int(i) for i in np.unravel_index(flat, a.shape))
    return Discrepancy(
        float(ratio[index]), index, float(a[index]), float(e[index]), float(error[index]), float(t[index])
    )


def assert_close(actual: ArrayLike, expected: ArrayLike, tolerance: ArrayLike, *, what: str) -> None:
    """Raise LawViolation naming `what` unless |actual - expected| <= tolerance everywhere."""
    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape != e.shape:
        raise LawViolation(f"{what}: shape {a.shape}, expected shape {e.shape}")
    worst = discrepancy(a, e, tolerance)
    if worst.ratio > 1.0:
        raise LawViolation(f"{what}: {worst}")


def assert_finite(array: ArrayLike, *, what: str) -> None:
    """Raise LawViolation naming `what` at the first NaN or infinity."""
    a = np.asarray(array)
    finite = np.isfinite(a)
    if not finite.all():
        index = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise LawViolation(f"{what}: non-finite value {float(a[index])!r} at index {index}")


def assert_at_most(smaller: ArrayLike, larger: ArrayLike, tolerance: ArrayLike, *, what: str) -> None:
    """Raise LawViolation naming `what` unless smaller <= larger + tolerance everywhere."""
    s, big, t = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (smaller, larger, tolerance)))
    with np.errstate(invalid="ignore"):
        excess = s - big - t
    bad = ~(excess <= 0)
    if bad.any():
        worst = np.where(bad, np.nan_to_num(excess, nan=np.inf), -np.inf)
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(worst)), s.shape))
        raise LawViolation(
            f"{what}: {float(s[index])!r} exceeds {float(big[index])!r} by {s[index] - big[index]:.3g} "
            f"at index {index}, beyond tolerance {t[index]:.3g}"
        )


def entropy(attentions: NDArray[np.floating]) -> NDArray[np.float64]:
    """Shannon entropy (nats) of every column, with 0 log 0 = 0."""
    a = np.asarray(attentions, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0)), 0.0)
    return np.asarray(-terms.sum(axis=0))
