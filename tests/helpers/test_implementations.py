"""The implementation wrapper: a problem beyond the range of the dtype a function returns is set aside, counted."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from properties.helpers.implementations import SET_ASIDE, BeyondRange, Implementation
from properties.helpers.problems import AttentionProblem


def in_float32(*arrays: Any) -> Any:
    with np.errstate(over="ignore", invalid="ignore"):
        X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = (np.asarray(a, dtype=np.float32) for a in arrays)
        Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
        logits = K.T @ Q
        A = np.exp(logits - logits.max(axis=0))
        A /= A.sum(axis=0)
        return V @ A, A


def problem_of(entry: float) -> AttentionProblem:
    one, zero = np.ones((1, 1)), np.zeros((1, 1))
    return AttentionProblem(np.array([[entry, 1.0]]), one, one, one, zero, zero, zero)


def test_a_problem_beyond_the_returned_dtype_is_set_aside_and_counted() -> None:
    """1e200 does not fit float32: set aside (BeyondRange outside a law), counted; 1e10 (logits 1e20) fits and is
    judged; float64 results are never set aside."""
    SET_ASIDE.clear()
    with pytest.raises(BeyondRange, match="beyond the range of float32"):
        Implementation(in_float32, "unscaled")(problem_of(1e200))
    assert sum(SET_ASIDE.values()) == 1
    assert Implementation(in_float32, "unscaled")(problem_of(1e10)).X_prime.dtype == np.float32
    Implementation(lambda *a: in_float32(*a)[0].astype(np.float64), "unscaled")(problem_of(1e200))
    assert sum(SET_ASIDE.values()) == 1
