"""The FlexAttention adapter (properties/helpers/adapters/flex_attention.py) against the bundled flash kernel
(attention.flash.flash_attn_func) on fixed problems, one a feature: out, softmax_lse and attn_probs within the
forward-error bounds of two float64 evaluations; each problem is chosen so that its feature changes the result by
far more than those bounds (an adapter that dropped or misaligned the option would fail). Flex compiles its eager
graph once per process (about 3 s): the tests that call it are slow (pytest -m slow, which CI runs) and skip
without torch."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from attention.flash import flash_attn_func as reference
from properties.helpers.adapters import flex_attention as adapter
from properties.helpers.flash_convention import FlashProblem, distances, exact_attention, row_bounds, visibility
from properties.helpers.tolerances import FLOAT64_EPS

Array = NDArray[np.float64]

# (B, L, S, H, H_k, D, D_v): L < S (a cache, grouped heads), L > S (queries that may see no key), one query.
SHAPES = {"L<S": (2, 3, 7, 4, 2, 4, 3), "L>S": (1, 9, 4, 2, 1, 3, 5)}
DECODE = (1, 1, 19, 2, 2, 8, 2)
FEATURES: dict[str, dict[str, Any]] = {
    "causal": {"causal": True},
    "window (1, 0)": {"window_size": (1, 0)},
    "window (2, 1)": {"window_size": (2, 1)},
    "window (-1, 1)": {"window_size": (-1, 1)},
    "window (0, -1)": {"window_size": (0, -1)},
    "softmax_scale": {"softmax_scale": 0.3},
    "softcap": {"softcap": 0.8},
    "alibi per head": {"alibi_slopes": np.array([0.5, 0.25, 0.125, 1.0])},
    "alibi per batch and head, causal, capped": {"alibi_slopes": "batch", "causal": True, "softcap": 2.0},
}


def draw(shape: tuple[int, ...], seed: int) -> tuple[Array, Array, Array]:
    B, L, S, H, H_k, D, D_v = shape
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1.5, (B, L, H, D)), rng.normal(0, 1.5, (B, S, H_k, D)), rng.normal(0, 1, (B, S, H_k, D_v))


def options_for(feature: dict[str, Any], B: int, H: int) -> dict[str, Any]:
    options = dict(feature)
    if isinstance(options.get("alibi_slopes"), str):
        options["alibi_slopes"] = np.linspace(0.1, 0.9, B * H).reshape(B, H)
    elif "alibi_slopes" in options:
        options["alibi_slopes"] = options["alibi_slopes"][:H]
    return options


def flex(q: Array, k: Array, v: Array, **options: Any) -> tuple[Array, Array, Array]:
    torch = pytest.importorskip("torch")
    query, key, value = (torch.tensor(a) for a in (q, k, v))
    if isinstance(options.get("alibi_slopes"), np.ndarray):
        options["alibi_slopes"] = torch.tensor(options["alibi_slopes"])
    out, lse, probs = adapter.flash_attn_func(query, key, value, **options, return_attn_probs=True)
    return out.numpy(), lse.numpy(), probs.numpy()


CASES = [
    *(pytest.param(shape, feature, id=f"{name}-{kind}") for name, feature in FEATURES.items()
      for kind, shape in SHAPES.items()),
    pytest.param(DECODE, {"causal": True, "softcap": 1.0, "alibi_slopes": "batch"}, id="decoding step"),
]  # fmt: skip


def top_left(problem: FlashProblem, scale: float, options: dict[str, Any]) -> Array:
    """out under the other causal alignment (top-left, torch's is_causal), law-side in float64."""
    L, S = problem.L, problem.S
    window = (-1, 0) if options.get("causal") else options.get("window_size", (-1, -1))
    slopes = options.get("alibi_slopes")
    bias = None
    if slopes is not None:
        bias = -np.broadcast_to(slopes, (problem.B, problem.H))[:, :, None, None] * distances(L, S, "top-left")
    visible = visibility(L, S, window=window, alignment="top-left")
    out, _ = exact_attention(problem, scale, visible=visible, bias=bias, softcap=options.get("softcap", 0.0))
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("shape", "feature"), CASES)
def test_the_adapter_agrees_with_the_bundled_flash_kernel(shape: tuple[int, ...], feature: dict[str, Any]) -> None:
    """Flex through the adapter = attention/flash.py on out, lse (-inf at the same queries: those that see no key)
    and probs, within the bounds of two float64 evaluations; the feature, or its alignment, moves the reference by
    far more than that (against no option and against the top-left reading)."""
    B, H = shape[0], shape[3]
    q, k, v = draw(shape, seed=len(feature) + shape[1])
    options = options_for(feature, B, H)
    out, lse, probs = flex(q, k, v, **options)
    expected_out, expected_lse, expected_probs = reference(q, k, v, return_attn_probs=True, **options)
    plain_out, _, _ = reference(q, k, v, return_attn_probs=True)
    problem = FlashProblem(q, k, v)
    scale = options.get("softmax_scale", 1 / np.sqrt(problem.D))
    slopes = options.get("alibi_slopes")
    offset = 0.0 if slopes is None else float(np.max(np.abs(slopes)) * distances(problem.L, problem.S).max())
    bound = row_bounds(problem, scale, FLOAT64_EPS, offset=offset) * 2
    np.testing.assert_array_less(np.abs(out - expected_out), bound.out + 1e-300)
    assert np.array_equal(np.isneginf(lse), np.isneginf(expected_lse)), (lse, expected_lse)
    seen = np.isfinite(expected_lse)
    np.testing.assert_array_less(np.abs(lse[seen] - expected_lse[seen]), bound.lse[seen] + 1e-300)
    np.testing.assert_allclose(probs, expected_probs, rtol=0, atol=float(np.max(bound.out / np.abs(v).max())))
    moved = max(
        np.max(np.abs(expected_out - plain_out)), np.max(np.abs(expected_out - top_left(problem, scale, options)))
    )
    assert moved > 1e6 * np.max(bound.out), "neither the feature nor its alignment changes anything here"


@pytest.mark.slow
def test_grouped_heads_read_their_own_key_value_head_and_float32_stays_float32() -> None:
    """nheads_k < nheads: query head h reads key/value head h // group; float32 in, out float32 and lse float32."""
    torch = pytest.importorskip("torch")
    q, k, v = draw((1, 5, 5, 4, 2, 4, 4), seed=7)
    k[:, :, 1] *= 3  # the two key/value heads differ a lot
    query, key, value = (torch.tensor(a, dtype=torch.float32) for a in (q, k, v))
    out = adapter.flash_attn_func(query, key, value, return_attn_probs=True)
    assert out[0].dtype == torch.float32 and out[1].dtype == torch.float32
    expected = reference(q, k, v)
    assert out[0].shape == expected.shape
    np.testing.assert_allclose(out[0].double().numpy(), expected, rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(("L", "S"), [(3, 0), (0, 0), (0, 3)])
@pytest.mark.parametrize("options", [{}, {"causal": True, "softcap": 1.0}, {"window_size": (1, 2)}], ids=str)
def test_empty_queries_or_keys_give_flex_answer_for_a_query_that_sees_no_key(L: int, S: int, options: Any) -> None:
    """S = 0 (Flex raises there) gives out = 0 and lse = -inf, as Flex gives a query whose keys are all masked;
    L = 0 gives empty out, lse and probs of the right shapes."""
    out, lse, probs = flex(*draw((2, L, S, 4, 2, 3, 5), seed=3), **options)
    assert (out.shape, lse.shape, probs.shape) == ((2, L, 4, 5), (2, 4, L), (2, 4, L, S))
    assert np.array_equal(out, np.zeros_like(out)) and np.all(np.isneginf(lse))


@pytest.mark.slow
def test_options_flex_cannot_honour_are_refused_by_name() -> None:
    """dropout_p != 0 (Flex has no dropout), alibi_slopes of another shape, nheads not a multiple of nheads_k and a
    window_size that is not a pair raise, naming the argument."""
    torch = pytest.importorskip("torch")
    q = torch.zeros((1, 2, 3, 4), dtype=torch.float64)
    with pytest.raises(ValueError, match="dropout_p"):
        adapter.flash_attn_func(q, q, q, dropout_p=0.1)
    with pytest.raises(ValueError, match="alibi_slopes"):
        adapter.flash_attn_func(q, q, q, alibi_slopes=torch.ones(2))
    with pytest.raises(ValueError, match="nheads_k"):
        adapter.flash_attn_func(q, q[:, :, :2], q[:, :, :2])  # 3 query heads, 2 key/value heads
    with pytest.raises(TypeError, match="window_size"):
        adapter.flash_attn_func(q, q, q, window_size=3)  # type: ignore[arg-type]


@pytest.mark.slow
def test_flex_eager_warning_does_not_leak() -> None:
    """Flex's once-per-process 'called without torch.compile()' UserWarning is filtered inside the adapter; made to
    fire again here, nothing reaches the caller."""
    torch = pytest.importorskip("torch")
    from torch.nn.attention import flex_attention

    flex_attention._WARNINGS_SHOWN.discard("flex_attention_performance")
    q = torch.ones((1, 3, 1, 2), dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adapter.flash_attn_func(q, q, q, causal=True)
    assert "flex_attention_performance" in flex_attention._WARNINGS_SHOWN  # the warning did fire, inside
    assert [str(w.message) for w in caught] == []


def test_the_adapter_imports_torch_only_when_called() -> None:
    """No module-level import of torch: the plugin and the default pytest run without it."""
    tree = ast.parse(Path(adapter.__file__).read_text())
    top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    names = [alias.name for node in top_level for alias in node.names] + [
        node.module or "" for node in top_level if isinstance(node, ast.ImportFrom)
    ]
    assert not [name for name in names if name.split(".")[0] == "torch"], names
