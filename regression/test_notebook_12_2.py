"""Golden values of notebook 12.2 (multi-head self-attention), on the multi-head attention under test."""

from __future__ import annotations

import numpy as np
import pytest

from properties.measures import assert_close
from properties.plugin import Multihead
from properties.problem import AttentionProblem
from properties.tolerances import error_bounds
from regression.goldens import load
from regression.make_goldens import notebook_12_2_inputs

pytestmark = pytest.mark.golden
GOLDEN = load("notebook_12_2")
NAMES = ("omega_v", "omega_q", "omega_k", "beta_v", "beta_q", "beta_k")


def inputs() -> tuple[np.ndarray, list[tuple[np.ndarray, ...]], np.ndarray]:
    data = GOLDEN["inputs"]
    heads = [tuple(np.array(head[name]) for name in NAMES) for head in data["heads"]]
    return np.array(data["X"]), heads, np.array(data["omega_c"])


@pytest.mark.reference_api
def test_inputs_are_the_notebooks_seeded_draws() -> None:
    assert notebook_12_2_inputs() == GOLDEN["inputs"]


def test_multihead_output_matches_the_values_printed_in_the_notebook(multihead: Multihead) -> None:
    """X' as notebook 12.2 prints it (3 decimals): within half a unit of the last printed place."""
    printed = GOLDEN["notebook_printed"]
    assert_close(multihead(*inputs()), np.array(printed["X_prime"]), 0.5 * 10.0 ** -printed["decimals"] + 1e-9,
                 what="multi-head X' against the notebook's printed values")  # fmt: skip


def test_multihead_output_matches_the_50_digit_computation(multihead: Multihead) -> None:
    """X' against the independent 50-digit computation, within the heads' forward-error bounds carried
    through omega_c: |delta X'| <= |omega_c| (stacked head bounds) + (rows of omega_c) u |omega_c| |stacked|."""
    X, heads, omega_c = inputs()
    head_bounds = np.vstack([
        error_bounds(AttentionProblem(X, *head), 1 / np.sqrt(head[1].shape[0])).x_prime for head in heads
    ])  # fmt: skip
    magnitudes = np.vstack(
        [np.abs(h[0] @ X + h[3]).max(axis=1, keepdims=True) * np.ones((1, X.shape[1])) for h in heads]
    )
    eps = float(np.finfo(np.float64).eps)
    tolerance = np.abs(omega_c) @ (head_bounds + omega_c.shape[1] * eps * magnitudes)
    assert_close(multihead(X, heads, omega_c), np.array(GOLDEN["exact"]["X_prime"]), tolerance,
                 what="multi-head X' against the 50-digit values")  # fmt: skip
