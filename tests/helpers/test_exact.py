"""The law-side exact attention (properties/helpers/exact.py) against the independent 50-digit computation of
regression/exact.py: within the forward-error bound of one float64 evaluation, with a mask, a bias, a scale, a
query that sees no key, and logits large enough that an unshifted softmax would overflow."""

from __future__ import annotations

import numpy as np
import pytest

from properties.helpers.exact import exact_attention, softmax_columns
from properties.helpers.problems import AttentionProblem
from properties.helpers.tolerances import FLOAT64_EPS, error_bounds
from regression.exact import self_attention_exact_with_options, to_decimal, to_float


def problem(seed: int, D: int, D_q: int, D_v: int, N: int, size: float = 1.0) -> AttentionProblem:
    rng = np.random.default_rng(seed)
    return AttentionProblem(*(size * rng.standard_normal(shape) for shape in AttentionProblem.shapes(D, D_q, D_v, N)))


def fifty_digits(
    p: AttentionProblem, scaled: bool, visible: np.ndarray | None, bias: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    arrays = [to_decimal(a.tolist()) for a in p.arrays()]
    X_prime, A = self_attention_exact_with_options(
        *arrays,
        scaled=scaled,
        visible=None if visible is None else visible.tolist(),
        bias=None if bias is None else to_decimal(bias.tolist()),
    )
    return np.array(to_float(X_prime)).reshape(p.D_v, p.N), np.array(to_float(A)).reshape(p.N, p.N)


CASES = {
    "scaled": (problem(1, 3, 4, 2, 5), True, None, None),
    "unscaled, causal": (problem(2, 2, 3, 3, 4), False, np.triu(np.ones((4, 4), dtype=bool)), None),
    "scaled, mask hiding every key from one query, bias": (
        problem(3, 4, 2, 3, 4),
        True,
        np.array([[1, 0, 1, 1], [0, 0, 1, 1], [1, 0, 0, 1], [1, 0, 1, 0]], dtype=bool),
        np.random.default_rng(4).standard_normal((4, 4)),
    ),
    "large logits": (problem(5, 2, 2, 2, 3, size=30.0), True, None, None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_exact_attention_agrees_with_the_50_digit_computation(name: str) -> None:
    p, scaled, visible, bias = CASES[name]
    scale = 1 / np.sqrt(p.D_q) if scaled else 1.0
    X_prime, A = exact_attention(p, scale, visible=visible, bias=bias)
    X_exact, A_exact = fifty_digits(p, scaled, visible, bias)
    bounds = error_bounds(p, scale, FLOAT64_EPS)
    if bias is not None:
        bounds = bounds.with_logit_offset(float(np.abs(bias).max()))
    assert np.all(np.abs(A - A_exact) <= bounds.attentions), name
    assert np.all(np.abs(X_prime - X_exact) <= bounds.x_prime), name


def test_a_column_with_no_visible_entry_is_zero_and_hidden_entries_are_zero() -> None:
    logits = np.array([[1.0, 800.0], [2.0, -800.0]])
    weights = softmax_columns(logits, np.array([[True, False], [False, False]]))
    assert weights.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert np.allclose(softmax_columns(logits).sum(axis=0), 1.0)
