"""The law-side exact attention (properties/helpers/exact.py) against the independent 50-digit computation of
regression/exact.py: within the forward-error bound of one float64 evaluation, with a mask, a bias, a scale, a
query that sees no key, and logits large enough that an unshifted softmax would overflow."""

from __future__ import annotations

from typing import Any

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


def flash_problem(B: int, L: int, S: int, H: int, H_k: int, D: int, D_v: int, seed: int, size: float = 1.0) -> Any:
    from properties.helpers.flash_convention import FlashProblem

    rng = np.random.default_rng(seed)
    shapes = [(B, L, H, D), (B, S, H_k, D), (B, S, H_k, D_v)]
    return FlashProblem(*(size * rng.standard_normal(shape) for shape in shapes))


# (problem, options): sinks with and without a mask, a query that sees no key (with and without a sink), a softcap
# with ALiBi, large logits that an unshifted exp would overflow, a sink above every logit.
FLASH_CASES: dict[str, tuple[Any, dict[str, Any]]] = {
    "sinks, grouped heads": (flash_problem(1, 3, 5, 2, 1, 3, 2, seed=11), {"sinks": [0.4, -1.2]}),
    "causal window, softcap, alibi, sinks": (
        flash_problem(2, 3, 4, 2, 2, 2, 3, seed=12),
        {"causal": True, "window_size": (1, -1), "softcap": 1.5, "alibi_slopes": [0.5, 0.125], "sinks": [0.3, -0.7]},
    ),
    "rows with no key, no sink": (flash_problem(1, 5, 2, 2, 1, 2, 2, seed=13), {"window_size": (0, 0)}),
    "rows with no key, a sink": (flash_problem(1, 5, 2, 1, 1, 2, 2, seed=14), {"window_size": (0, 0), "sinks": [2.0]}),
    "large logits, a sink above them": (flash_problem(1, 2, 3, 1, 1, 2, 2, seed=15, size=30.0), {"sinks": [900.0]}),
}


@pytest.mark.parametrize("name", list(FLASH_CASES))
def test_flash_exact_attention_and_its_lse_agree_with_the_50_digit_computation(name: str) -> None:
    """flash_convention.exact_attention (exact.py's softmax_with_lse along the keys, with sinks) against
    regression/exact.py's flash_attention_exact: out and lse within row_bounds of one float64 evaluation (the
    ALiBi bias in l_n, a sink as one more key); a query with nothing to attend to has out 0 and lse -inf exactly,
    and with a sink out 0 and lse = the sink."""
    from properties.helpers.flash_convention import distances, exact_attention, row_bounds, visibility
    from regression.exact import flash_attention_exact

    p, options = FLASH_CASES[name]
    scale = 1 / np.sqrt(p.D)
    sinks = None if "sinks" not in options else np.asarray(options["sinks"], dtype=np.float64)
    seen = visibility(p.L, p.S, causal=options.get("causal", False), window=options.get("window_size", (-1, -1)))
    bias = None
    if "alibi_slopes" in options:
        bias = -np.asarray(options["alibi_slopes"])[None, :, None, None] * distances(p.L, p.S)
    out, lse = exact_attention(p, scale, visible=seen, bias=bias, softcap=options.get("softcap", 0.0), sinks=sinks)
    exact_out, exact_lse = flash_attention_exact(p.q.tolist(), p.k.tolist(), p.v.tolist(), **options)
    truth_out = np.array([[[[float(x) for x in row] for row in heads] for heads in rows] for rows in exact_out])
    truth_lse = np.array([[[-np.inf if x is None else float(x) for x in row] for row in heads] for heads in exact_lse])
    offset = 0.0 if bias is None else float(np.abs(bias).max())
    bounds = row_bounds(p, scale, FLOAT64_EPS, offset=offset, sinks=sinks)
    assert np.all(np.abs(out - truth_out.reshape(out.shape)) <= bounds.out), name
    empty = np.isinf(truth_lse)
    assert np.array_equal(lse[empty], truth_lse[empty]), name
    assert np.all(np.abs(lse[~empty] - truth_lse[~empty]) <= bounds.lse[~empty]), name
    if name.startswith("rows with no key"):
        unseen = ~seen.any(axis=1)
        assert unseen.any() and np.all(out[:, unseen] == 0)
        if sinks is not None:
            assert np.all(lse[:, :, unseen] == sinks[0])


def test_softmax_with_lse_is_softmax_columns_along_axis_0_and_its_log_sum_exp() -> None:
    """The one softmax: softmax_columns is softmax_with_lse along axis 0; the lse is log sum exp of the visible
    entries (-inf with none); a sink joins the denominator only."""
    from properties.helpers.exact import softmax_with_lse

    logits = np.random.default_rng(6).standard_normal((4, 3))
    visible = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 1, 0]], dtype=bool)
    weights, lse = softmax_with_lse(logits, visible)
    assert np.array_equal(weights, softmax_columns(logits, visible))
    assert np.allclose(lse[:2], [np.log(np.exp(logits[visible[:, n], n]).sum()) for n in range(2)], rtol=0, atol=1e-15)
    assert lse[2] == -np.inf
    rows, sunk = softmax_with_lse(logits.T, visible.T, axis=1, sink=np.full(3, 0.5))
    assert sunk[2] == 0.5 and np.all(rows[2] == 0)
    assert np.allclose(rows.sum(axis=1) + np.exp(0.5 - sunk), 1.0, rtol=0, atol=1e-15)
