"""The bundled reference's own API: input validation, dtypes, edge shapes, no warnings, no mutation."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from attention import multihead_scaled_self_attention, scaled_dot_product_self_attention, self_attention, softmax_cols
from attention._core import BLOCK_ELEMENTS
from properties.helpers.problems import ARGUMENT_ORDER
from properties.helpers.strategies import TWO_SLABS_N, long_sequence_example
from regression.goldens import notebook_12_1_problem

FUNCTIONS = [self_attention, scaled_dot_product_self_attention]
NAMES = ARGUMENT_ORDER


def arguments(D: int = 3, D_q: int = 2, D_v: int = 4, N: int = 5, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    shapes = {
        "X": (D, N),
        "omega_v": (D_v, D),
        "omega_q": (D_q, D),
        "omega_k": (D_q, D),
        "beta_v": (D_v, 1),
        "beta_q": (D_q, 1),
        "beta_k": (D_q, 1),
    }
    return {name: rng.standard_normal(shape) for name, shape in shapes.items()}


def call(function: Callable[..., Any], args: dict[str, Any]) -> Any:
    return function(*(args[name] for name in NAMES))


@pytest.fixture(params=FUNCTIONS, ids=["unscaled", "scaled"])
def function(request: pytest.FixtureRequest) -> Callable[..., Any]:
    return request.param  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("name", "shape", "expected"),
    [
        ("X", (3,), "2-D array of shape (D, N)"),
        ("X", (3, 5, 1), "2-D array of shape (D, N)"),
        ("omega_q", (2, 4), "(D_q, D) = (D_q, 3)"),
        ("omega_k", (2, 4), "(D_q, D) = (2, 3)"),
        ("omega_k", (3, 3), "(D_q, D) = (2, 3)"),
        ("omega_v", (4, 2), "(D_v, D) = (D_v, 3)"),
        ("beta_v", (3, 1), "(D_v, 1) = (4, 1)"),
        ("beta_q", (3,), "(D_q, 1) = (2, 1)"),
        ("beta_k", (1, 2), "(D_q, 1) = (2, 1)"),
        ("beta_k", (2, 5), "(D_q, 1) = (2, 1)"),
    ],
)
def test_shape_mismatches_raise_value_errors_naming_the_argument(
    function: Callable[..., Any], name: str, shape: tuple[int, ...], expected: str
) -> None:
    args = arguments()
    args[name] = np.ones(shape)
    with pytest.raises(ValueError, match=r"^" + name + r" must .*") as info:
        call(function, args)
    message = str(info.value)
    assert expected in message and str(shape) in message


def test_a_beta_given_as_a_flat_vector_is_accepted(function: Callable[..., Any]) -> None:
    args = arguments()
    flat = {**args, **{name: args[name].ravel() for name in ("beta_v", "beta_q", "beta_k")}}
    for got, expected in zip(call(function, flat), call(function, args), strict=True):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_raise_value_errors_naming_the_argument(
    function: Callable[..., Any], name: str, bad: float
) -> None:
    args = arguments()
    args[name] = args[name].copy()
    args[name].flat[0] = bad
    with pytest.raises(ValueError, match=rf"^{name} must be finite"):
        call(function, args)


def test_zero_query_dimension_raises(function: Callable[..., Any]) -> None:
    args = arguments()
    args.update(omega_q=np.ones((0, 3)), omega_k=np.ones((0, 3)), beta_q=np.ones((0, 1)), beta_k=np.ones((0, 1)))
    with pytest.raises(ValueError, match=r"^omega_q must have at least one row"):
        call(function, args)


@pytest.mark.parametrize("dtype", [np.complex128, object, np.str_])
def test_non_real_dtypes_raise_type_errors_naming_the_argument(function: Callable[..., Any], dtype: Any) -> None:
    args = arguments()
    args["omega_k"] = args["omega_k"].astype(dtype)
    with pytest.raises(TypeError, match=r"^omega_k must be a real"):
        call(function, args)


def test_overflowing_logits_raise_a_clear_error_without_warnings(function: Callable[..., Any]) -> None:
    args = arguments()
    args["omega_q"] = args["omega_q"] * 1e300
    args["omega_k"] = args["omega_k"] * 1e300
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"logits .* overflow"):
            call(function, args)


def test_overflowing_values_raise_a_clear_error_without_warnings(function: Callable[..., Any]) -> None:
    args = arguments()
    args["X"] = args["X"] * 1e300
    args["omega_v"] = args["omega_v"] * 1e300
    args["omega_q"] = args["omega_q"] * 1e-300
    args["omega_k"] = args["omega_k"] * 1e-300
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"values .* overflow"):
            call(function, args)


def test_no_inputs_give_empty_outputs(function: Callable[..., Any]) -> None:
    X_prime, attentions = call(function, arguments(N=0))
    assert X_prime.shape == (4, 0) and attentions.shape == (0, 0)


@pytest.mark.parametrize(
    "options",
    [
        {"causal": True},
        {"causal": True, "mask": np.zeros((0, 0), dtype=bool)},
        {"causal": True, "bias": np.zeros((0, 0), np.float32)},
        {"causal": True, "positional": np.zeros((3, 0), np.float32), "positional_mode": "query_key"},
    ],
    ids=["causal", "causal-mask", "causal-bias", "causal-positional"],
)
def test_no_inputs_give_empty_outputs_under_every_option(function: Callable[..., Any], options: dict[str, Any]) -> None:
    """N = 0 on the masked path (issue 10): empty outputs of the right shapes and dtype, no error, no warning."""
    args = {name: value.astype(np.float32) for name, value in arguments(N=0).items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X_prime, attentions = function(*(args[name] for name in NAMES), **options)
    assert X_prime.shape == (4, 0) and attentions.shape == (0, 0)
    assert X_prime.dtype == np.float32 and attentions.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_dtypes_are_kept(function: Callable[..., Any], dtype: Any) -> None:
    args = {name: value.astype(dtype) for name, value in arguments().items()}
    X_prime, attentions = call(function, args)
    assert X_prime.dtype == dtype and attentions.dtype == dtype


def test_float32_results_are_within_float32_rounding_of_float64(function: Callable[..., Any]) -> None:
    """Forward-error bound of tolerances.ErrorBounds with float32's epsilon."""
    from properties.helpers.implementations import Implementation
    from properties.helpers.problems import AttentionProblem

    args = arguments()
    problem = AttentionProblem(**args)
    implementation = Implementation(function, "unscaled" if function is self_attention else "scaled")
    bounds = implementation.bounds(problem, float(np.finfo(np.float32).eps))
    X32, A32 = call(function, {name: value.astype(np.float32) for name, value in args.items()})
    # The float32 inputs are themselves rounded: a further relative u per entry, inside the k u bound.
    X64, A64 = call(function, args)
    assert (np.abs(X32 - X64) <= bounds.x_prime).all() and (np.abs(A32 - A64) <= bounds.attentions).all()


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_])
def test_integer_and_bool_inputs_are_promoted_to_float64(function: Callable[..., Any], dtype: Any) -> None:
    args = {name: (value > 0).astype(dtype) for name, value in arguments().items()}
    X_prime, attentions = call(function, args)
    assert X_prime.dtype == np.float64 and attentions.dtype == np.float64


def test_mixed_inputs_follow_numpy_promotion(function: Callable[..., Any]) -> None:
    args = {name: value.astype(np.float32) for name, value in arguments().items()}
    args["beta_v"] = args["beta_v"].astype(np.float64)
    X_prime, attentions = call(function, args)
    assert X_prime.dtype == attentions.dtype == np.result_type(np.float32, np.float64)


def test_inputs_are_not_modified_and_unusual_layouts_work(function: Callable[..., Any]) -> None:
    args = arguments()
    expected = call(function, args)
    unusual = {
        "X": np.asfortranarray(args["X"]),
        "omega_v": args["omega_v"].copy(),
        "omega_q": np.broadcast_to(args["omega_q"][:1], args["omega_q"].shape),
        "omega_k": args["omega_k"][:, ::-1][:, ::-1],
        "beta_v": args["beta_v"],
        "beta_q": args["beta_q"],
        "beta_k": args["beta_k"],
    }
    for value in unusual.values():
        if value.flags.writeable and value.base is None:
            value.setflags(write=False)
    snapshot = {name: value.copy() for name, value in unusual.items()}
    X_prime, _ = call(function, unusual)
    for name, value in unusual.items():
        np.testing.assert_array_equal(value, snapshot[name], err_msg=f"{name} was modified")
    assert X_prime.shape == expected[0].shape


def test_the_scale_uses_the_query_dimension_not_the_input_dimension() -> None:
    """With D_q != D, scaled attention equals unscaled attention on queries divided by sqrt(D_q)."""
    args = arguments(D=3, D_q=5)
    scaled = call(scaled_dot_product_self_attention, args)
    divided = call(
        self_attention,
        {**args, "omega_q": args["omega_q"] / np.sqrt(5), "beta_q": args["beta_q"] / np.sqrt(5)},
    )
    np.testing.assert_allclose(scaled[1], divided[1], rtol=1e-12, atol=1e-15)


def test_no_runtime_warning_escapes_for_extreme_inputs(function: Callable[..., Any]) -> None:
    args = arguments()
    args["omega_q"] = args["omega_q"] * 1e150
    args["omega_k"] = args["omega_k"] * 1e150
    args["X"] = args["X"] * 1e-300
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X_prime, attentions = call(function, args)
        assert np.isfinite(X_prime).all() and np.isfinite(attentions).all()
        problem = notebook_12_1_problem()
        call(function, {name: getattr(problem, name) * 300 for name in NAMES})


def test_softmax_cols_is_stable_for_huge_spreads() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(softmax_cols(np.array([[1e5], [-1e5], [0.0]])), [[1.0], [0.0], [0.0]])
        extreme = np.array([[1.7e308, -1.7e308], [-1.7e308, 1.7e308]])
        np.testing.assert_array_equal(softmax_cols(extreme), np.eye(2))


def test_softmax_cols_keeps_float32_and_validates() -> None:
    assert softmax_cols(np.zeros((3, 2), dtype=np.float32)).dtype == np.float32
    assert softmax_cols(np.zeros((3, 2), dtype=np.int64)).dtype == np.float64
    with pytest.raises(ValueError, match=r"^data_in must be finite"):
        softmax_cols(np.array([[np.nan]]))
    with pytest.raises(ValueError, match=r"^data_in must be a 1-D or 2-D array"):
        softmax_cols(np.zeros((2, 2, 2)))
    with pytest.raises(TypeError, match=r"^data_in must be a real"):
        softmax_cols(np.zeros((2, 2), dtype=complex))


def test_softmax_cols_takes_a_vector_as_one_column() -> None:
    """A 1-D input is one column: its softmax has the input's shape and equals that of the (N, 1) column."""
    z = np.array([1.0, -2.0, 0.5])
    np.testing.assert_array_equal(softmax_cols(z), softmax_cols(z[:, None])[:, 0])


@pytest.mark.parametrize("head", [(np.eye(2),) * 5, (np.eye(2),) * 7, np.eye(2)])
def test_multihead_rejects_a_head_that_is_not_six_arrays(head: Any) -> None:
    """Each head must be a sequence of six arrays; anything else is a TypeError naming heads[h] and what it got."""
    X = np.zeros((2, 3))
    with pytest.raises(
        TypeError, match=r"^heads\[0\] must be a tuple \(omega_v, .*; got (tuple of length [57]|ndarray)"
    ):
        multihead_scaled_self_attention(X, [head], np.eye(2))


@pytest.mark.parametrize(
    ("keyword", "value", "error", "pattern"),
    [
        ("positional", np.ones((3, 4)), ValueError, r"^positional must have shape \(D, N\) = \(3, 5\)"),
        ("positional", np.full((3, 5), np.nan), ValueError, r"^positional must be finite"),
        ("positional_mode", "values", ValueError, r"^positional_mode must be one of"),
        ("mask", np.ones((5, 5)), TypeError, r"^mask must be a boolean array"),
        ("mask", np.ones((5, 4), dtype=bool), ValueError, r"^mask must have shape \(N, N\) = \(5, 5\)"),
        ("causal", 1, TypeError, r"^causal must be True or False"),
        ("bias", np.ones((4, 5)), ValueError, r"^bias must have shape \(N, N\) = \(5, 5\)"),
        ("bias", np.full((5, 5), np.inf), ValueError, r"^bias must be finite"),
    ],
)
def test_bad_keyword_arguments_raise_errors_naming_them(
    function: Callable[..., Any], keyword: str, value: Any, error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        function(*(arguments()[name] for name in NAMES), **{keyword: value})


def test_queries_without_visible_keys_get_zero_columns_without_warnings(function: Callable[..., Any]) -> None:
    mask = np.ones((5, 5), dtype=bool)
    mask[:, 2] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X_prime, attentions = function(*(arguments()[name] for name in NAMES), mask=mask)
    assert (X_prime[:, 2] == 0).all() and (attentions[:, 2] == 0).all()
    assert np.isfinite(X_prime).all() and np.allclose(np.delete(attentions, 2, axis=1).sum(axis=0), 1.0)


def test_hidden_keys_may_hold_values_that_would_overflow(function: Callable[..., Any]) -> None:
    args = arguments()
    args["X"] = args["X"].copy()
    args["X"][:, 4] = 1e300  # key 4 is hidden from everyone, and hides its own query's output too
    mask = np.ones((5, 5), dtype=bool)
    mask[4, :] = False
    mask[:, 4] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X_prime, _ = function(*(args[name] for name in NAMES), mask=mask)
    reference, _ = function(*(arguments()[name] for name in NAMES), mask=mask)
    np.testing.assert_array_equal(X_prime, reference)


@pytest.mark.parametrize(("D", "N", "error"), [(-1, 3, ValueError), (2, -1, ValueError), (2.5, 3, TypeError)])
def test_sinusoidal_encoding_validates_its_sizes(D: Any, N: Any, error: type[Exception]) -> None:
    from attention import sinusoidal_positional_encoding

    with pytest.raises(error, match=r"^[DN] must be"):
        sinusoidal_positional_encoding(D, N)


def test_sinusoidal_encoding_follows_its_formula_with_odd_D() -> None:
    from attention import sinusoidal_positional_encoding

    Pi = sinusoidal_positional_encoding(5, 7)
    n = np.arange(7)
    for i in range(3):
        np.testing.assert_allclose(Pi[2 * i], np.sin(n / 10000 ** (2 * i / 5)), rtol=0, atol=1e-15)
        if 2 * i + 1 < 5:
            np.testing.assert_allclose(Pi[2 * i + 1], np.cos(n / 10000 ** (2 * i / 5)), rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_shift_free_and_the_shifted_softmax_agree(dtype: Any) -> None:
    """Small logits take the path without the max shift, a constant bias of 1000 (which softmax ignores) the
    shifted one; full and blockwise give the same attentions and X' on both, to a few rounding errors."""
    from attention import blockwise_scaled_dot_product_self_attention
    from attention._core import exp_needs_no_shift, logit_bound

    args = [value.astype(dtype) for value in arguments(D=6, D_q=3, D_v=5, N=40).values()]
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = args
    queries = (omega_q @ X + beta_q) / np.sqrt(dtype(3))
    keys, values = omega_k @ X + beta_k, omega_v @ X + beta_v
    assert exp_needs_no_shift(logit_bound(queries, keys), np.dtype(dtype), 40, values)
    assert not exp_needs_no_shift(logit_bound(queries, keys, 1000.0), np.dtype(dtype), 40)
    shift_free = scaled_dot_product_self_attention(*args)
    shifted = scaled_dot_product_self_attention(*args, bias=np.full((40, 40), 1000, dtype=dtype))
    tolerance = 200 * np.finfo(dtype).eps
    np.testing.assert_allclose(shift_free[1], shifted[1], rtol=tolerance, atol=tolerance)
    size = tolerance * np.abs(values).max()  # X' entries are sums of values: their errors scale with max |V|
    np.testing.assert_allclose(shift_free[0], shifted[0], rtol=tolerance, atol=size)
    for block_size in (7, 512):
        blockwise = blockwise_scaled_dot_product_self_attention(*args, block_size=block_size)
        np.testing.assert_allclose(blockwise, shift_free[0], rtol=tolerance, atol=size)


def test_the_long_example_of_the_battery_crosses_a_slab_of_the_full_path() -> None:
    """The battery's fixed long example must reach the full path's second slab of queries (BLOCK_ELEMENTS // N rows
    a slab), the code a single-slab problem never runs."""
    N = long_sequence_example(TWO_SLABS_N).N
    assert N > BLOCK_ELEMENTS // N
