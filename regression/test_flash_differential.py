"""Differential check of the bundled FlashAttention-signature kernel (attention/flash.py) against the independent
50-digit computation of regression/exact.py, on fixed problems that use every option at once.

These test the bundled kernel, not a TARGET: they are marked `reference`, not with a category (so the registry does not
count them as laws), and skip under --impl. A law on --convention flash targets can reuse
regression.exact.flash_attention_exact."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from attention import flash_attn_func
from regression.exact import flash_attention_exact, tanh_exact

# Checks of the bundled reference, not laws of a TARGET (properties/catalogues/registry.py).
pytestmark = pytest.mark.reference


@pytest.fixture(autouse=True)
def _only_for_the_bundled_kernel(request: pytest.FixtureRequest) -> None:
    if request.config.getoption("--impl"):
        pytest.skip("a check of the bundled flash kernel (attention/flash.py), not of --impl TARGET")


def problem(B: int, L: int, S: int, H: int, H_k: int, D: int, D_v: int, seed: int) -> tuple[Any, Any, Any]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((B, L, H, D)),
        rng.standard_normal((B, S, H_k, D)),
        rng.standard_normal((B, S, H_k, D_v)),
    )


PROBLEMS: dict[str, tuple[tuple[Any, Any, Any], dict[str, Any]]] = {
    # L < S, GQA, causal with a left window, a cap that bends the logits, ALiBi and sinks.
    "causal-window-softcap-alibi-sinks": (
        problem(1, 3, 5, 2, 1, 3, 2, seed=20),
        {"causal": True, "window_size": (2, -1), "softcap": 1.5, "alibi_slopes": [0.5, 0.125], "sinks": [0.3, -0.7]},
    ),
    # L > S: the first queries see no key (out 0, lse -inf); a two-sided window, an explicit scale, no sink.
    "wide-window-softcap-alibi": (
        problem(2, 5, 3, 4, 2, 2, 3, seed=21),
        {
            "window_size": (1, 0),
            "causal": True,
            "softcap": 0.8,
            "softmax_scale": 1.3,
            "alibi_slopes": [1, 0.5, 0.25, 0],
        },
    ),
}


def forward_error(q: Any, k: Any, v: Any, options: dict[str, Any], eps: float) -> tuple[float, float]:
    """(out, lse) bounds of one computation in a dtype of precision eps: a logit is off by at most
    delta = eps ((D + 4) A + 2 max|slope| (L + S) + 4), A = |scale| D max|q| max|k| (dot product, scale, tanh with
    derivative <= 1, the bias); the lse by delta + (S + 4) eps; a weight by 2 delta + (S + 4) eps relatively, and the
    weighted sum of the values adds S eps: out within max|v| (2 delta + (2 S + 8) eps). Doubled for the rounding of
    the bound itself and the output's final rounding."""
    D, L, S = q.shape[-1], q.shape[1], k.shape[1]
    scale = options.get("softmax_scale") or 1 / math.sqrt(D)
    A = abs(scale) * D * np.abs(q).max() * np.abs(k).max()
    alibi = max(np.abs(options.get("alibi_slopes", [0])).max(), 0) * (L + S)
    delta = eps * ((D + 4) * A + 2 * alibi + 4)
    return float(2 * np.abs(v).max() * (2 * delta + (2 * S + 8) * eps)), float(2 * (delta + (S + 4) * eps))


@pytest.mark.parametrize("name", PROBLEMS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_flash_kernel_agrees_with_a_50_digit_computation(name: str, dtype: Any) -> None:
    """out and softmax_lse within the forward-error bound of the working dtype of the 50-digit truth; rows with no
    key exactly 0 and -inf."""
    (q, k, v), options = PROBLEMS[name]
    q, k, v = (a.astype(dtype) for a in (q, k, v))
    exact_out, exact_lse = flash_attention_exact(q.tolist(), k.tolist(), v.tolist(), **options)
    kernel_options: dict[str, Any] = {
        key: np.asarray(value) if isinstance(value, list) else value for key, value in options.items()
    }
    out, lse, _ = flash_attn_func(q, k, v, return_attn_probs=True, **kernel_options)
    truth_out = np.array([[[[float(x) for x in row] for row in heads] for heads in rows] for rows in exact_out])
    truth_lse = np.array(
        [[[-math.inf if x is None else float(x) for x in row] for row in heads] for heads in exact_lse]
    )
    out_bound, lse_bound = forward_error(q, k, v, options, float(np.finfo(dtype).eps))
    assert np.abs(out.astype(np.float64) - truth_out).max() <= out_bound
    empty = np.isinf(truth_lse)
    assert np.array_equal(lse[empty], truth_lse[empty]) and np.all(out.transpose(0, 2, 1, 3)[empty] == 0)
    assert np.abs(lse[~empty] - truth_lse[~empty]).max(initial=0.0) <= lse_bound
    if name == "wide-window-softcap-alibi":
        assert empty.any() and not empty.all()  # the problem reaches rows with no visible key


def test_the_50_digit_tanh_is_tanh() -> None:
    for x in (-30.0, -1.5, -1e-20, 0.0, 0.3, 2.0, 700.0):
        assert abs(float(tanh_exact(Decimal(x))) - math.tanh(x)) <= 2 * math.ulp(math.tanh(x) or 1e-300)
