"""Golden values of notebook 12.2 (multi-head self-attention), on the multi-head attention under test."""

from __future__ import annotations

import numpy as np
import pytest

from properties.catalogues import mistakes as b
from properties.helpers.checks import assert_close
from properties.helpers.implementations import Multihead
from properties.helpers.meta import assert_law_fails
from properties.helpers.problems import ARGUMENT_ORDER, MultiheadProblem
from properties.helpers.tolerances import epsilon_of, multihead_error
from regression.goldens import load

pytestmark = pytest.mark.golden
GOLDEN = load("notebook_12_2")


def inputs() -> tuple[np.ndarray, list[tuple[np.ndarray, ...]], np.ndarray]:
    data = GOLDEN["inputs"]
    heads = [tuple(np.array(head[name]) for name in ARGUMENT_ORDER[1:]) for head in data["heads"]]
    return np.array(data["X"]), heads, np.array(data["omega_c"])


def test_multihead_output_matches_the_values_printed_in_the_notebook(multihead: Multihead) -> None:
    """X' as notebook 12.2 prints it (3 decimals): within half a unit of the last printed place plus the
    forward-error bounds of two evaluations (the notebook's float64 one and this one): the errors add."""
    printed = GOLDEN["notebook_printed"]
    X, heads, omega_c = inputs()
    X_prime = multihead(X, heads, omega_c)
    derived = multihead_error(MultiheadProblem(X, tuple(heads), omega_c), epsilon_of(X_prime.dtype))  # type: ignore[arg-type]
    tolerance = 0.5 * 10.0 ** -printed["decimals"] + 2 * derived
    assert_close(X_prime, np.array(printed["X_prime"]), tolerance,
                 what="multi-head X' against the notebook's printed values")  # fmt: skip


@pytest.mark.meta
def test_multihead_output_matches_the_printed_values_catches_unscaled_heads() -> None:
    assert_law_fails(test_multihead_output_matches_the_values_printed_in_the_notebook,
                     multihead=b.broken_multihead(b.unscaled_heads))  # fmt: skip


def test_multihead_output_matches_the_50_digit_computation(multihead: Multihead) -> None:
    """X' against the independent 50-digit computation, within the heads' forward-error bounds carried
    through omega_c (tolerances.multihead_error, with the measured sizes max |V| of the head outputs)."""
    X, heads, omega_c = inputs()
    measured = np.vstack([np.abs(h[0] @ X + h[3]).max(axis=1, keepdims=True) for h in heads])  # max |V| per row
    X_prime = multihead(X, heads, omega_c)
    problem = MultiheadProblem(X, tuple(heads), omega_c)  # type: ignore[arg-type]
    tolerance = multihead_error(problem, epsilon_of(X_prime.dtype), value_sizes=measured)
    assert_close(X_prime, np.array(GOLDEN["exact"]["X_prime"]), tolerance,
                 what="multi-head X' against the 50-digit values")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.unscaled_heads, b.mixing_transposed])
def test_multihead_output_matches_the_50_digit_computation_catches(bug: object) -> None:
    assert_law_fails(test_multihead_output_matches_the_50_digit_computation, multihead=b.broken_multihead(bug))
