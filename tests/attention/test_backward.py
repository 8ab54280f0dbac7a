"""The reference backward passes (attention/self_attention_backward.py, attention/rows_backward.py): against
central differences of the float64 forward for every option, their identities, argument errors, no mutation,
large logits.

Central differences. For a direction delta (in one argument, max |delta| = 1) and a cotangent c, let
phi(t) = <c, f(x + t delta)>. Then (phi(h) - phi(-h)) / (2h) = phi'(0) + h^2 phi'''(xi) / 6 + (e+ - e-) / (2h),
xi in [-h, h], where |e+-| <= eps_phi is the rounding error of one float64 evaluation of phi. phi is analytic in
t (products, exp, division by a positive sum), so phi''' is bounded on [-2H, 2H]; we estimate that bound M3 by
the largest third difference (phi(2r) - 2 phi(r) + 2 phi(-r) - phi(-2r)) / (2 r^3) at r = H and H/2 (each equals
phi''' somewhere in [-2r, 2r], up to O(r^2 phi^(5))) and take ten times it. eps_phi <= C u Phi, with Phi the sum
of |c| times the magnitudes of the outputs (the forward-error model of the forward: C = 4 (N + D + 10) covers
its sums of N and D terms and the relative error of the weights, which is (D + logit size) u on these unit-sized
problems). With h = u^(1/3) (the inputs and directions are of unit size) the two terms balance at about
u^(2/3) ~ 4e-11 relative; the tolerance is 10 M3 h^2 / 6 + C u Phi / h. A wrong gradient (a dropped term, a
missing scale) is off by O(1).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from attention import (
    scaled_dot_product_attention_backward,
    scaled_dot_product_self_attention,
    scaled_dot_product_self_attention_vjp,
    self_attention,
    self_attention_vjp,
)
from attention.rows import scaled_dot_product_attention
from properties import test_gradients

U = float(np.finfo(np.float64).eps) / 2
H_STEP = U ** (1 / 3)
NAMES = ("X", "omega_v", "omega_q", "omega_k", "beta_v", "beta_q", "beta_k")
# Typed loosely for the tests, which unpack their arguments from dicts and lists.
row_backward: Callable[..., Any] = scaled_dot_product_attention_backward
scaled_vjp: Callable[..., Any] = scaled_dot_product_self_attention_vjp
unscaled_vjp: Callable[..., Any] = self_attention_vjp
PAIRS: list[Any] = [
    (self_attention, self_attention_vjp),
    (scaled_dot_product_self_attention, scaled_dot_product_self_attention_vjp),
]


def central_difference_tolerance(phi: Callable[[float], float], magnitude: float, terms: int) -> tuple[float, float]:
    """(central difference at h = u^(1/3), its error bound) for phi'(0): see the module's docstring."""
    h = H_STEP
    third = max(
        abs(phi(2 * r) - 2 * phi(r) + 2 * phi(-r) - phi(-2 * r)) / (2 * r**3) for r in (1e-2, 5e-3)
    )  # fmt: skip
    tolerance = 10 * third * h * h / 6 + 4 * (terms + 10) * U * magnitude / h
    return (phi(h) - phi(-h)) / (2 * h), tolerance


def notebook_problem(seed: int, D: int = 3, D_q: int = 2, D_v: int = 4, N: int = 5) -> Any:
    """The seven arguments by name (Any: unpacked into the functions' positional arguments)."""
    rng = np.random.default_rng(seed)
    shapes = [(D, N), (D_v, D), (D_q, D), (D_q, D), (D_v, 1), (D_q,), (D_q, 1)]  # beta_q flat: kept flat
    return {name: rng.standard_normal(shape) for name, shape in zip(NAMES, shapes, strict=True)}


def notebook_options(name: str, D: int = 3, N: int = 5, seed: int = 1) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    mask = rng.random((N, N)) < 0.6
    mask[:, 2] = False  # query 2 sees no key
    mask[4, :] = False  # key 4 is seen by no query
    options: dict[str, dict[str, Any]] = {
        "plain": {},
        "positional input": {"positional": rng.standard_normal((D, N))},
        "positional query_key": {"positional": rng.standard_normal((D, N)), "positional_mode": "query_key"},
        "mask": {"mask": mask},
        "causal": {"causal": True},
        "bias": {"bias": rng.standard_normal((N, N))},
        "everything": {
            "positional": rng.standard_normal((D, N)),
            "positional_mode": "query_key",
            "mask": mask,
            "causal": True,
            "bias": rng.standard_normal((N, N)),
        },
    }
    return options[name]


OPTION_NAMES = ["plain", "positional input", "positional query_key", "mask", "causal", "bias", "everything"]


@pytest.mark.parametrize("pair", PAIRS, ids=["unscaled", "scaled"])
@pytest.mark.parametrize("option", OPTION_NAMES)
@pytest.mark.parametrize("with_d_attentions", [False, True], ids=["dX'", "dX' and dA"])
def test_notebook_vjp_agrees_with_central_differences(pair: Any, option: str, with_d_attentions: bool) -> None:
    """<grad_a, delta> equals the central difference of <dX', X'> + <dA, A> along delta in argument a alone,
    for every differentiable argument a, within the bound of the module's docstring."""
    forward, vjp = pair
    arguments = notebook_problem(0)
    options = notebook_options(option)
    rng = np.random.default_rng(2)
    X_prime, attentions = forward(*arguments.values(), **options)
    d_X_prime = rng.standard_normal(X_prime.shape)
    d_attentions = rng.standard_normal(attentions.shape) if with_d_attentions else None
    cotangents = vjp(*arguments.values(), d_X_prime, d_attentions=d_attentions, **options)
    differentiable: dict[str, Any] = {**arguments, **{k: options[k] for k in ("positional", "bias") if k in options}}
    assert (cotangents.positional is None) == ("positional" not in options)
    assert (cotangents.bias is None) == ("bias" not in options)
    for name, value in differentiable.items():
        gradient = getattr(cotangents, name)
        assert gradient.shape == np.shape(value), f"d {name}: shape {gradient.shape}, the input's {np.shape(value)}"
        direction = rng.uniform(-1, 1, np.shape(value))

        def phi(t: float, name: str = name, direction: Any = direction) -> float:
            moved = {**differentiable, name: differentiable[name] + t * direction}
            keywords: dict[str, Any] = {**options, **{k: moved.pop(k) for k in ("positional", "bias") if k in moved}}
            out, weights = forward(*moved.values(), **keywords)
            return float(np.sum(d_X_prime * out) + (0.0 if d_attentions is None else np.sum(d_attentions * weights)))

        magnitude = float(np.sum(np.abs(d_X_prime) * np.abs(X_prime)) + np.abs(d_X_prime).sum())
        if d_attentions is not None:
            magnitude += float(np.abs(d_attentions).sum())
        estimate, tolerance = central_difference_tolerance(phi, magnitude * 10, sum(np.shape(arguments["X"])))
        assert abs(float(np.sum(gradient * direction)) - estimate) <= tolerance, (
            f"<d {name}, delta> = {np.sum(gradient * direction)!r}, central difference {estimate!r} +- {tolerance:.2e}"
        )


def test_the_central_difference_check_has_teeth() -> None:
    """The scaled forward's directional derivative is not that of the unscaled vjp: the check above would fail."""
    arguments = notebook_problem(0)
    d_X_prime = np.random.default_rng(2).standard_normal((4, 5))
    wrong = unscaled_vjp(*arguments.values(), d_X_prime)
    direction = np.random.default_rng(3).uniform(-1, 1, (2, 3))

    def phi(t: float) -> float:
        moved = {**arguments, "omega_q": arguments["omega_q"] + t * direction}
        return float(np.sum(d_X_prime * scaled_dot_product_self_attention(*moved.values())[0]))

    estimate, tolerance = central_difference_tolerance(phi, float(np.abs(d_X_prime).sum() * 10), 8)
    assert abs(float(np.sum(wrong.omega_q * direction)) - estimate) > 1e3 * tolerance


# --- the row kernel ---------------------------------------------------------------------------------------------


def row_problem(seed: int, batch: tuple[int, ...], L: int, S: int, E: int = 4, E_v: int = 3) -> Any:
    rng = np.random.default_rng(seed)
    return [
        rng.standard_normal((*batch, L, E)),
        rng.standard_normal((*batch, S, E)),
        rng.standard_normal((*batch, S, E_v)),
    ]


def row_cases() -> dict[str, Any]:
    rng = np.random.default_rng(5)
    bool_mask = rng.random((4, 6)) < 0.5
    bool_mask[1] = False  # query 1 sees no key
    bool_mask[:, 3] = False  # key 3 is seen by no query
    float_mask = rng.standard_normal((2, 1, 4, 6))
    float_mask[..., 2, :] = -np.inf  # query 2 sees no key
    float_mask[..., 0, 1] = -np.inf
    q, _, _ = row_problem(6, (2, 4), 3, 5)
    _, k, v = row_problem(7, (2, 2), 3, 5)
    return {
        "L < S": (row_problem(0, (2,), 4, 6), {}),
        "L > S": (row_problem(1, (2, 3), 7, 3), {}),
        "causal L < S": (row_problem(2, (2,), 4, 6), {"is_causal": True}),
        "causal L > S": (row_problem(3, (), 6, 4), {"is_causal": True}),
        "bool mask": (row_problem(4, (2, 3), 4, 6), {"attn_mask": bool_mask}),
        "float mask": (row_problem(5, (2, 3), 4, 6), {"attn_mask": float_mask, "scale": 0.3}),
        # A float mask of shape (L, S) on a batch of one axis: the batch is (2,), not the mask's leading axes.
        "float mask (L, S)": (row_problem(10, (2,), 4, 6), {"attn_mask": float_mask[0, 0]}),
        "gqa": ([q, k, v], {"enable_gqa": True}),
        "gqa causal": ([q, k, v], {"enable_gqa": True, "is_causal": True}),
        "broadcast key and value": ([row_problem(8, (2, 3), 4, 5)[0], *row_problem(9, (3,), 4, 5)[1:]], {}),
    }


ROW_CASES: Any = row_cases()


@pytest.mark.parametrize("case", list(ROW_CASES))
def test_row_backward_agrees_with_central_differences(case: str) -> None:
    """<d_query, delta_q>, <d_key, delta_k>, <d_value, delta_v> each equal the central difference of
    <d_out, out> along that argument alone, within the bound of the module's docstring."""
    inputs, keywords = ROW_CASES[case]
    out = scaled_dot_product_attention(*inputs, **keywords)
    d_out = np.random.default_rng(11).standard_normal(out.shape)
    gradients = row_backward(*inputs, d_out, **keywords)
    rng = np.random.default_rng(12)
    for index, (name, value, gradient) in enumerate(zip(("query", "key", "value"), inputs, gradients, strict=True)):
        assert gradient.shape == value.shape and gradient.dtype == value.dtype, name
        direction = rng.uniform(-1, 1, value.shape)

        def phi(t: float, index: int = index, direction: Any = direction) -> float:
            moved = list(inputs)
            moved[index] = moved[index] + t * direction
            return float(np.sum(d_out * scaled_dot_product_attention(*moved, **keywords)))

        magnitude = 10 * float(np.sum(np.abs(d_out) * (np.abs(out) + 1)))
        estimate, tolerance = central_difference_tolerance(phi, magnitude, inputs[1].shape[-2] + inputs[0].shape[-1])
        assert abs(float(np.sum(gradient * direction)) - estimate) <= tolerance, (
            f"{case}: <d_{name}, delta> = {np.sum(gradient * direction)!r}, central difference {estimate!r}"
        )


def row_magnitudes(inputs: list[Any], d_out: Any, keywords: dict[str, Any]) -> tuple[Any, Any]:
    """Entrywise bounds M_dk on s |dS|^T |q| and M_dv on P^T |dO| (the error of dk and dv is at most
    gamma_(S + E + E_v + 8) times them: dP, its row sums, dS and the last product each add a relative u per
    term; the weights' own error is (E + logit size) u)."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in inputs)
    s = keywords.get("scale") or 1 / np.sqrt(q.shape[-1])
    P = np.ones((*q.shape[:-1], k.shape[-2]))  # |P| <= 1: a crude but valid bound
    dP = np.abs(d_out) @ np.swapaxes(np.abs(v), -1, -2)
    dS = P * (dP + dP.max(axis=-1, keepdims=True))
    return s * np.swapaxes(dS, -1, -2) @ np.abs(q), np.swapaxes(P, -1, -2) @ np.abs(d_out)


@pytest.mark.parametrize("case", [c for c in ROW_CASES if not c.startswith("gqa") and not c.startswith("broadcast")])
def test_row_backward_identities(case: str) -> None:
    """Sum over keys of dk = 0 (adding one vector to every key shifts each query's logits by a constant);
    sum over keys of dv = sum over queries that see a key of d_out (each such row of P sums to one);
    <dq, q> = <dk, k> (q -> t q, k -> k / t changes nothing). Each holds with masks and causal attention.
    Tolerance: 8 (S + E + E_v + 8) u times the sum of the magnitudes of the terms (row_magnitudes)."""
    inputs, keywords = ROW_CASES[case]
    q, k, v = inputs
    out = scaled_dot_product_attention(*inputs, **keywords)
    d_out = np.random.default_rng(13).standard_normal(out.shape)
    dq, dk, dv = row_backward(*inputs, d_out, **keywords)
    M_dk, M_dv = row_magnitudes(inputs, d_out, keywords)
    gamma = 8 * (k.shape[-2] + q.shape[-1] + v.shape[-1] + 8) * U
    assert np.all(np.abs(dk.sum(axis=-2)) <= gamma * M_dk.sum(axis=-2)), f"{case}: sum over keys of dk is not 0"
    sees_a_key = np.any(out != 0, axis=-1, keepdims=True) | np.any(
        np.broadcast_to(_visible(q.shape[-2], k.shape[-2], keywords), (*out.shape[:-1], k.shape[-2])),
        axis=-1,
        keepdims=True,
    )
    expected = np.sum(d_out * sees_a_key, axis=-2)
    assert np.all(np.abs(dv.sum(axis=-2) - expected) <= gamma * M_dv.sum(axis=-2)), f"{case}: sum of dv"
    gauge = abs(float(np.sum(dq * q) - np.sum(dk * k)))
    assert gauge <= gamma * 2 * float(np.sum(M_dk * np.abs(k))), f"{case}: <dq, q> - <dk, k> = {gauge}"


def _visible(L: int, S: int, keywords: dict[str, Any]) -> Any:
    visible = np.ones((L, S), dtype=bool)
    if keywords.get("is_causal"):
        visible = np.tril(visible)
    mask = keywords.get("attn_mask")
    if mask is not None:
        visible = visible & (mask if mask.dtype == np.bool_ else mask > -np.inf)
    return visible


def test_masked_keys_and_queries_get_exactly_zero_gradients() -> None:
    """A key hidden from every query gets dk = dv = 0 exactly; a query that sees no key gets dq = 0 exactly."""
    inputs, keywords = ROW_CASES["bool mask"]
    d_out = np.random.default_rng(14).standard_normal((*inputs[0].shape[:-1], 3))
    dq, dk, dv = row_backward(*inputs, d_out, **keywords)
    assert not dk[..., 3, :].any() and not dv[..., 3, :].any()
    assert not dq[..., 1, :].any()
    inputs, keywords = ROW_CASES["float mask"]
    dq = row_backward(*inputs, d_out, **keywords)[0]
    assert not dq[..., 2, :].any()


def test_gqa_gradients_are_sums_over_each_group() -> None:
    """Under enable_gqa the gradient of a shared key/value head is the sum of the gradients of its copies."""
    (q, k, v), keywords = ROW_CASES["gqa"]
    d_out = np.random.default_rng(15).standard_normal((*q.shape[:-1], v.shape[-1]))
    dq, dk, dv = row_backward(q, k, v, d_out, **keywords)
    k_full, v_full = np.repeat(k, 2, axis=-3), np.repeat(v, 2, axis=-3)
    dq_full, dk_full, dv_full = row_backward(q, k_full, v_full, d_out)
    np.testing.assert_array_equal(dq, dq_full)
    np.testing.assert_allclose(dk, dk_full[:, 0::2] + dk_full[:, 1::2], rtol=0, atol=8 * U * np.abs(dk_full).max())
    np.testing.assert_allclose(dv, dv_full[:, 0::2] + dv_full[:, 1::2], rtol=0, atol=8 * U * np.abs(dv_full).max())


@pytest.mark.parametrize("pair", PAIRS, ids=["unscaled", "scaled"])
@pytest.mark.parametrize("option", OPTION_NAMES)
def test_notebook_vjp_identities(pair: Any, option: str) -> None:
    """d beta_k = sum over keys of dK = 0 (one vector added to every key shifts each column of logits by a
    constant: softmax ignores it); d beta_v = sum over keys of dV = the sum over queries that see a key of dX';
    <d omega_q, omega_q> + <d beta_q, beta_q> = <dQ, Q> equals <dK, K> = <d omega_k, omega_k> + <d beta_k, beta_k>
    (Q -> t Q, K -> K / t changes nothing). With every option, d_attentions included.
    Tolerance: 16 (N + D + D_v + 10) u times the magnitudes of the terms."""
    forward, vjp = pair
    arguments = notebook_problem(3)
    options = notebook_options(option)
    rng = np.random.default_rng(4)
    X_prime, attentions = forward(*arguments.values(), **options)
    d_X_prime, d_attentions = rng.standard_normal(X_prime.shape), rng.standard_normal(attentions.shape)
    g = vjp(*arguments.values(), d_X_prime, d_attentions=d_attentions, **options)
    D, N = arguments["X"].shape
    gamma = 16 * (N + D + 4 + 10) * U
    scale = np.max(np.abs(arguments["X"])) + np.max(np.abs(options.get("positional", 0)))
    Q_mag = np.abs(arguments["omega_q"]).sum() * scale + np.abs(arguments["beta_q"]).sum()
    K_mag = np.abs(arguments["omega_k"]).sum() * scale + np.abs(arguments["beta_k"]).sum()
    V_mag = np.abs(arguments["omega_v"]).sum() * scale + np.abs(arguments["beta_v"]).sum()
    dS_mag = 2 * (V_mag * np.abs(d_X_prime).sum() + np.abs(d_attentions).sum())
    assert np.all(np.abs(g.beta_k) <= gamma * dS_mag * Q_mag), f"d beta_k = {g.beta_k.ravel()} is not 0"
    sees = attentions.sum(axis=0) > 0
    expected = d_X_prime[:, sees].sum(axis=1, keepdims=True)
    assert np.all(np.abs(g.beta_v - expected) <= gamma * np.abs(d_X_prime).sum()), "d beta_v != sum of dX'"
    left = np.sum(g.omega_q * arguments["omega_q"]) + np.sum(g.beta_q * arguments["beta_q"])
    right = np.sum(g.omega_k * arguments["omega_k"]) + np.sum(g.beta_k * arguments["beta_k"])
    assert abs(left - right) <= gamma * dS_mag * Q_mag * K_mag, f"gauge: {left} != {right}"


# --- errors, mutation, dtypes, large logits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        ({"d_X_prime": np.zeros((4, 4))}, ValueError, "d_X_prime must have shape (D_v, N) = (4, 5)"),
        ({"d_X_prime": np.zeros(20)}, ValueError, "d_X_prime must have shape"),
        ({"d_X_prime": np.full((4, 5), np.nan)}, ValueError, "d_X_prime must be finite"),
        ({"d_X_prime": np.zeros((4, 5), dtype=complex)}, TypeError, "d_X_prime must be a real"),
        ({"d_attentions": np.zeros((5, 4))}, ValueError, "d_attentions must have shape (N, N) = (5, 5)"),
        ({"d_attentions": np.full((5, 5), np.inf)}, ValueError, "d_attentions must be finite"),
        ({"omega_k": np.zeros((3, 3))}, ValueError, "omega_k must have shape"),
        ({"mask": np.ones((5, 5))}, TypeError, "mask must be a boolean array"),
        ({"bias": np.zeros((4, 5))}, ValueError, "bias must have shape (N, N) = (5, 5)"),
        ({"positional_mode": "values"}, ValueError, "positional_mode must be one of"),
    ],
)
@pytest.mark.parametrize("vjp", [self_attention_vjp, scaled_dot_product_self_attention_vjp])
def test_notebook_vjp_rejects_bad_arguments_by_name(vjp: Any, change: dict[str, Any], error: Any, words: str) -> None:
    arguments = {**notebook_problem(0), "d_X_prime": np.ones((4, 5))}
    change = dict(change)  # the parameters are shared by both vjps
    keywords = {k: change.pop(k) for k in list(change) if k in ("d_attentions", "mask", "bias", "positional_mode")}
    arguments.update(change)
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        vjp(*arguments.values(), **keywords)


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        ({"d_out": np.zeros((2, 4, 4))}, ValueError, r"d_out must have the output's shape .* = \(2, 4, 3\)"),
        ({"key": np.zeros((2, 6, 5))}, ValueError, r"key must have shape \(\.\.\., S, E\) = \(\.\.\., S, 4\)"),
        ({"value": np.zeros((2, 5, 3))}, ValueError, r"value must have shape \(\.\.\., S, E_v\) = \(\.\.\., 6, E_v\)"),
        ({"query": np.zeros(4)}, ValueError, "query must have shape"),
        ({"query": np.full((2, 4, 4), np.nan)}, ValueError, "query must be finite"),
        ({"key": np.zeros((3, 6, 4))}, ValueError, "batch axes of query, key and value do not broadcast"),
        ({"dropout_p": 0.1}, ValueError, "dropout_p must be 0.0"),
        ({"is_causal": 1}, TypeError, "is_causal must be True or False"),
        ({"scale": "1"}, TypeError, "scale must be a real number"),
        ({"scale": np.inf}, ValueError, "scale must be finite"),
        ({"attn_mask": np.ones((4, 5), dtype=bool)}, ValueError, r"attn_mask must broadcast to .* \(2, 4, 6\)"),
        ({"attn_mask": np.ones((4, 6), dtype=np.int64)}, TypeError, "attn_mask must be a boolean or float"),
        ({"attn_mask": np.full((4, 6), np.nan)}, ValueError, "attn_mask .* must hold finite values or -inf"),
        ({"query": np.zeros((2, 3, 4, 4)), "key": np.zeros((2, 2, 6, 4)), "value": np.zeros((2, 2, 6, 3)),
          "d_out": np.zeros((2, 3, 4, 3)), "enable_gqa": True}, ValueError, "3 query heads .* not a multiple of 2"),
        ({"query": np.zeros((2, 4, 4, 4)), "key": np.zeros((2, 2, 6, 4)), "value": np.zeros((2, 3, 6, 3)),
          "d_out": np.zeros((2, 4, 4, 3)), "enable_gqa": True}, ValueError, "value must have key's 2 heads"),
        ({"query": np.zeros((2, 4, 4, 4)), "key": np.zeros((2, 2, 6, 4)), "value": np.zeros((6, 3)),
          "d_out": np.zeros((2, 4, 4, 3)), "enable_gqa": True}, ValueError, "value must have key's 2 heads"),
        ({"query": np.zeros((2, 4, 4, 4)), "key": np.zeros((3, 2, 6, 4)), "value": np.zeros((2, 2, 6, 3)),
          "d_out": np.zeros((2, 4, 4, 3)), "enable_gqa": True}, ValueError, "batch axes of query, key and value"),
    ],
)  # fmt: skip
def test_row_backward_rejects_bad_arguments_by_name(change: dict[str, Any], error: Any, words: str) -> None:
    q, k, v = row_problem(0, (2,), 4, 6)
    arguments: dict[str, Any] = {"query": q, "key": k, "value": v, "d_out": np.ones((2, 4, 3)), **change}
    with pytest.raises(error, match=words):
        row_backward(**arguments)


def test_inputs_are_never_modified() -> None:
    arguments = notebook_problem(0)
    options: Any = notebook_options("everything")
    d_X_prime, d_attentions = np.ones((4, 5)), np.ones((5, 5))
    everything = [*arguments.values(), *options.values(), d_X_prime, d_attentions]
    copies = [np.copy(a) for a in everything]
    for vjp in (unscaled_vjp, scaled_vjp):
        vjp(*arguments.values(), d_X_prime, d_attentions=d_attentions, **options)
    for original, copy in zip(everything, copies, strict=True):
        np.testing.assert_array_equal(original, copy)
    for inputs, keywords in ROW_CASES.values():
        copies = [np.copy(a) for a in (*inputs, *keywords.values())]
        d_out = np.ones(scaled_dot_product_attention(*inputs, **keywords).shape)
        row_backward(*inputs, d_out, **keywords)
        for original, copy in zip((*inputs, *keywords.values()), copies, strict=True):
            np.testing.assert_array_equal(original, copy)


def test_flat_betas_get_flat_cotangents_and_dtypes_follow_the_inputs() -> None:
    arguments = notebook_problem(0)
    arguments["beta_v"] = arguments["beta_v"].ravel().astype(np.float32)
    arguments["X"] = arguments["X"].astype(np.float32)
    g = scaled_vjp(*arguments.values(), np.ones((4, 5)))
    assert g.beta_v.shape == (4,) and g.beta_q.shape == (2,) and g.beta_k.shape == (2, 1)
    assert g.X.dtype == np.float32 and g.beta_v.dtype == np.float32 and g.omega_q.dtype == np.float64
    q, k, v = (a.astype(np.float32) for a in row_problem(0, (2,), 4, 6))
    grads = row_backward(q, k, v, np.ones((2, 4, 3), dtype=np.float32))
    assert all(g.dtype == np.float32 for g in grads)
    exact = row_backward(q.astype(float), k.astype(float), v.astype(float), np.ones((2, 4, 3)))
    for low, high in zip(grads, exact, strict=True):  # float32 work: about (S + E) u32 relative to the magnitudes
        assert np.abs(low - high).max() <= 64 * 2**-24 * (np.abs(high).max() + 1)


@pytest.mark.parametrize("pair", PAIRS, ids=["unscaled", "scaled"])
@pytest.mark.parametrize("option", ["plain", "mask", "causal", "bias"])
def test_large_logits_give_finite_gradients(pair: Any, option: str) -> None:
    """Logits of order 1e4 (the forward is fine: it shifts by the column maximum) give finite gradients,
    and the identities still hold: d beta_k is zero to rounding."""
    forward, vjp = pair
    arguments = notebook_problem(0)
    arguments["omega_q"] = arguments["omega_q"] * 100
    arguments["omega_k"] = arguments["omega_k"] * 100
    options = notebook_options(option)
    X_prime, attentions = forward(*arguments.values(), **options)
    assert np.isfinite(X_prime).all()
    g = vjp(*arguments.values(), np.ones_like(X_prime), d_attentions=np.ones_like(attentions), **options)
    for name, gradient in g._asdict().items():
        assert gradient is None or np.isfinite(gradient).all(), name
    q, k, v = row_problem(0, (2,), 4, 6)
    grads = row_backward(q * 100, k * 100, v, np.ones((2, 4, 3)), is_causal=True)
    assert all(np.isfinite(g).all() for g in grads)


def test_overflowing_logits_raise_the_forwards_error() -> None:
    arguments = notebook_problem(0)
    arguments["omega_q"] = arguments["omega_q"] * 1e155
    arguments["omega_k"] = arguments["omega_k"] * 1e155
    with pytest.raises(ValueError, match="logits"):
        scaled_dot_product_self_attention(*arguments.values())
    with pytest.raises(ValueError, match="logits"):
        scaled_vjp(*arguments.values(), np.ones((4, 5)))


def test_no_queries_give_empty_gradients() -> None:
    arguments = notebook_problem(0, N=0)
    g = unscaled_vjp(*arguments.values(), np.zeros((4, 0)), causal=True)
    assert g.X.shape == (3, 0) and not g.omega_q.any() and not g.beta_v.any()
    grads = row_backward(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros((0, 3)), np.zeros((0, 3)))
    assert [a.shape for a in grads] == [(0, 4), (0, 4), (0, 3)]


@pytest.mark.parametrize("broadcast", ["key and value", "query"])
def test_a_broadcast_batch_axis_gets_the_sum_of_its_copies(broadcast: str) -> None:
    """An input broadcast over the batch (batch axis of size 1) gets the sum of the gradients its copies would get:
    the same backward on explicitly repeated arrays, summed over the batch axis (exact up to the order of one sum)."""
    rng = np.random.default_rng(7)
    query, key, value = rng.normal(size=(2, 3, 4, 3)), rng.normal(size=(2, 3, 5, 3)), rng.normal(size=(2, 3, 5, 2))
    d_out = rng.normal(size=(2, 3, 4, 2))
    if broadcast == "query":
        query = query[:1]
    else:
        key, value = key[:1], value[:1]
    grads = row_backward(query, key, value, d_out)
    repeated = row_backward(*(np.broadcast_to(a, (2, *a.shape[1:])) for a in (query, key, value)), d_out)
    for given, full, source in zip(grads, repeated, (query, key, value), strict=True):
        expected = full.sum(axis=0, keepdims=True) if source.shape[0] == 1 else full
        assert given.shape == source.shape == expected.shape
        np.testing.assert_allclose(given, expected, rtol=1e-12, atol=1e-12)


def test_a_one_dimensional_mask_broadcasts_over_the_queries() -> None:
    """A 1-D attn_mask (S,) is valid (it broadcasts over the queries, as in the forward): the gradients equal those
    with the (L, S) mask it broadcasts to; a 0-D mask is refused by name."""
    (q, k, v), _ = ROW_CASES["bool mask"]
    d_out = np.random.default_rng(16).standard_normal((*q.shape[:-1], v.shape[-1]))
    for keys_seen in (np.array([True, False, True, True, False, True]), np.linspace(-1.0, 1.0, 6)):
        full = np.broadcast_to(keys_seen, (q.shape[-2], k.shape[-2]))
        for given, expected in zip(row_backward(q, k, v, d_out, attn_mask=keys_seen),
                                   row_backward(q, k, v, d_out, attn_mask=full), strict=True):  # fmt: skip
            np.testing.assert_array_equal(given, expected)
    with pytest.raises(ValueError, match="attn_mask"):
        row_backward(q, k, v, d_out, attn_mask=np.array(True))


@pytest.mark.parametrize("layout", ["3-D (H, L, E)", "5-D (A, B, H, L, E)", "query broadcast over the batch"])
def test_gqa_groups_heads_on_axis_minus_3_whatever_the_batch_axes(layout: str) -> None:
    """Under enable_gqa the heads are axis -3 however many batch axes come before it (none, or two), and a query
    broadcast over the batch of key and value gets its gradient summed over the batch: the gradients equal those
    with key and value repeated over each group (explicitly broadcast)."""
    rng = np.random.default_rng(17)
    batch = {"3-D (H, L, E)": ((), ()), "5-D (A, B, H, L, E)": ((2, 3), (2, 3)),
             "query broadcast over the batch": ((1,), (2,))}[layout]  # fmt: skip
    q = rng.standard_normal((*batch[0], 4, 3, 5))
    k, v = rng.standard_normal((*batch[1], 2, 6, 5)), rng.standard_normal((*batch[1], 2, 6, 3))
    out_batch = np.broadcast_shapes(batch[0], batch[1])
    d_out = rng.standard_normal((*out_batch, 4, 3, 3))
    dq, dk, dv = row_backward(q, k, v, d_out, enable_gqa=True)
    q_full = np.broadcast_to(q, (*out_batch, *q.shape[-3:]))
    dq_full, dk_full, dv_full = row_backward(q_full, np.repeat(k, 2, axis=-3), np.repeat(v, 2, axis=-3), d_out)
    expected_q = dq_full.sum(axis=0, keepdims=True) if q.shape[:-3] != out_batch else dq_full
    np.testing.assert_allclose(dq, expected_q, rtol=0, atol=8 * U * np.abs(dq_full).max())
    for given, full in ((dk, dk_full), (dv, dv_full)):
        pairs = full.reshape(*full.shape[:-3], 2, 2, *full.shape[-2:]).sum(axis=-3)
        np.testing.assert_allclose(given, pairs, rtol=0, atol=8 * U * np.abs(full).max())


@pytest.mark.parametrize(
    "law",
    [
        test_gradients.test_gradients_are_the_directional_derivatives_of_the_forward,
        test_gradients.test_gradients_are_the_directional_derivatives_of_the_output_and_the_attentions,
        test_gradients.test_the_cotangents_of_X_the_biases_and_the_positions_follow_from_the_projections,
    ],
    ids=lambda law: law.__name__.removeprefix("test_"),
)
@pytest.mark.parametrize("kind", ["scaled", "unscaled"])
def test_a_correct_notebook_vjp_passes_the_notebook_contracts_laws(law: Any, kind: str) -> None:
    """No false alarm on the laws of the notebook contract: the textbook vjp (P by a plain column softmax, no
    shift-free path, every cotangent by the chain rule written out; `textbook_vjp` with nothing broken, of the
    scaled kind or, with its scale set to 1, of the unscaled one) passes them, as the reference's vjps do."""
    from properties.catalogues.mistakes import broken_notebook_backward, textbook_vjp

    def vjp(*arguments: Any, **keywords: Any) -> Any:
        return textbook_vjp(*arguments, **keywords, unscaled=kind == "unscaled")

    vjp.__signature__ = inspect.signature(textbook_vjp)  # type: ignore[attr-defined]
    law(backward=broken_notebook_backward(vjp, kind))  # type: ignore[arg-type]
