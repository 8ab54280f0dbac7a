"""Differential check of the reference backward: every entry of the float64 vjp against the derivative of the
independent 50-digit forward (regression/exact.py), on fixed small problems with every option.

The exact gradient. Entry i of the gradient of F(x) = <dX', X'(x)> + <dA, A(x)> is (F(x + t e_i) - F(x - t e_i))
/ (2t) with t = 1e-20, in 50-digit decimal arithmetic: the truncation error is t^2 |F'''| / 6 ~ 1e-40 and the
rounding error 1e-50 |F| / t ~ 1e-30 (times the magnitudes of these unit-sized problems), far below float64.

The float64 bound (first order in u = 2^-53, gamma_k = k u; inputs exact, so only the vjp's own rounding counts).
With M the "magnitude graph" of the backward (the same formulas on absolute values: M_Q = |omega_q| M_Xqk +
|beta_q|, M_S = s M_K^T M_Q + |bias|, M_dV = |dX'| P^T, M_dP = M_V^T |dX'| + |dA|, M_c = 1^T (P o M_dP),
M_dS = P o (M_dP + 1 M_c), M_dQ = s M_K M_dS, M_dK = s M_Q M_dS^T, then through the projections), each computed
quantity y has |y^ - y| <= eps_y M_y, and a product or sum adds the eps of its factors and a gamma of its length:
  - Q, K, V: gamma_(D+2); logits S: gamma_a M_S with a = 2 D + D_q + 8 (the projections, the D_q-term product,
    the scale, the bias, the shift by the column maximum);
  - weights P: relative eps_P = 2 gamma_a max M_S + gamma_(N+4) (softmax moves by at most 2 max |dS| relative,
    the exp, the N-term sum and the division add N + 4 roundings);
  - dS: 2 eps_P (P enters directly and through c) + gamma_(D+D_v+3) (dP) + gamma_(N+3) (c, the subtraction, the
    product); dQ, dK: + gamma_(D+2) + gamma_(N+1); the projections' cotangents: + gamma_(N+1); dX: +
    gamma_(2 D_q + D_v + 2).
So every cotangent g satisfies |g^ - g| <= (2 eps_P + gamma_c) M_g with c = 3 N + 2 D + 2 D_q + 2 D_v + 13.
The test allows twice that (for the second-order terms), plus 1e-25 M_g for the 50-digit value's own error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import Any

import numpy as np
import pytest

from attention import (
    scaled_dot_product_self_attention,
    scaled_dot_product_self_attention_vjp,
    self_attention,
    self_attention_vjp,
)
from properties.helpers.problems import ARGUMENT_ORDER, AttentionProblem
from regression.exact import PRECISION, Matrix, self_attention_exact_with_options, to_decimal

# Checks of the bundled reference, not laws of a TARGET (properties/catalogues/registry.py).
pytestmark = pytest.mark.reference

# No category marker: these check the bundled reference's vjp, not a target; they are not laws of the battery
# (the gradient laws, with their meta-tests, come with issue 21's later steps).
U = 2.0**-53
T = Decimal("1e-20")


@dataclass(frozen=True)
class Case:
    """A small problem: sizes, options and a seed for the inputs and cotangents."""

    scaled: bool
    seed: int
    D: int = 2
    D_q: int = 2
    D_v: int = 2
    N: int = 3
    options: dict[str, Any] = field(default_factory=dict)
    d_attentions: bool = False


def make_case(case: Case) -> tuple[dict[str, np.ndarray], dict[str, Any], np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(case.seed)
    D, D_q, D_v, N = case.D, case.D_q, case.D_v, case.N
    shapes = AttentionProblem.shapes(D, D_q, D_v, N)
    arguments = {name: rng.standard_normal(shape) for name, shape in zip(ARGUMENT_ORDER, shapes, strict=True)}
    options = dict(case.options)
    if options.pop("with_positional", False):
        options["positional"] = rng.standard_normal((D, N))
    if options.pop("with_bias", False):
        options["bias"] = rng.standard_normal((N, N))
    d_X_prime = rng.standard_normal((D_v, N))
    d_attentions = rng.standard_normal((N, N)) if case.d_attentions else None
    return arguments, options, d_X_prime, d_attentions


MASK = np.array([[True, False, False, True], [False, False, True, True], [True, False, False, False], [True] * 4])
CASES = {
    "unscaled, dA": Case(scaled=False, seed=0, d_attentions=True),
    "scaled, positional input, bias": Case(scaled=True, seed=1, options={"with_positional": True, "with_bias": True}),
    "scaled, mask (a query sees no key), positional query_key, dA": Case(
        scaled=True,
        seed=2,
        N=4,
        D_q=3,
        options={"mask": MASK, "with_positional": True, "positional_mode": "query_key"},
        d_attentions=True,
    ),
    "unscaled, causal, bias": Case(scaled=False, seed=3, N=4, D_v=3, options={"causal": True, "with_bias": True}),
}


def exact_gradient(
    case: Case, arguments: dict[str, np.ndarray], options: dict[str, Any], d_X_prime: np.ndarray, dA: np.ndarray | None
) -> dict[str, np.ndarray]:
    """Every entry of the gradient of <dX', X'> + <dA, A> by 50-digit central differences with t = 1e-20."""
    N = case.N
    visible = None
    if "mask" in options or options.get("causal"):
        visible = np.ones((N, N), dtype=bool) if "mask" not in options else options["mask"].copy()
        if options.get("causal"):
            visible &= np.tri(N, dtype=bool).T
    differentiable = {name: to_decimal(a.tolist()) for name, a in arguments.items()}
    for name in ("positional", "bias"):
        if name in options:
            differentiable[name] = to_decimal(options[name].tolist())
    weights_X, weights_A = to_decimal(d_X_prime.tolist()), None if dA is None else to_decimal(dA.tolist())

    def F(values: dict[str, Matrix]) -> Decimal:
        X_prime, attentions = self_attention_exact_with_options(
            *(values[name] for name in ARGUMENT_ORDER),
            scaled=case.scaled,
            positional=values.get("positional"),
            positional_mode=options.get("positional_mode", "input"),
            visible=None if visible is None else visible.tolist(),
            bias=values.get("bias"),
        )
        with localcontext() as context:
            context.prec = PRECISION
            total = sum(
                (w * x for wr, xr in zip(weights_X, X_prime, strict=True) for w, x in zip(wr, xr, strict=True)),
                Decimal(0),
            )
            if weights_A is not None:
                total += sum(
                    (w * a for wr, ar in zip(weights_A, attentions, strict=True) for w, a in zip(wr, ar, strict=True)),
                    Decimal(0),
                )
        return total

    gradient = {}
    for name, matrix in differentiable.items():
        entries = np.zeros((len(matrix), len(matrix[0])))
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                with localcontext() as context:
                    context.prec = PRECISION
                    up, down = value + T, value - T
                plus = {**differentiable, name: [*matrix[:i], [*row[:j], up, *row[j + 1 :]], *matrix[i + 1 :]]}
                minus = {**differentiable, name: [*matrix[:i], [*row[:j], down, *row[j + 1 :]], *matrix[i + 1 :]]}
                with localcontext() as context:
                    context.prec = PRECISION
                    entries[i, j] = float((F(plus) - F(minus)) / (2 * T))
        gradient[name] = entries
    return gradient


def magnitude_bounds(
    case: Case,
    arguments: dict[str, np.ndarray],
    options: dict[str, Any],
    d_X_prime: np.ndarray,
    dA: np.ndarray | None,
    P: np.ndarray,
) -> dict[str, np.ndarray]:
    """The bound (2 eps_P + gamma_c) M_g of the module's docstring, doubled, for every cotangent g."""
    D, D_q, D_v, N = case.D, case.D_q, case.D_v, case.N
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = (np.abs(arguments[name]) for name in ARGUMENT_ORDER)
    Pi = np.abs(options.get("positional", np.zeros((D, N))))
    in_values = options.get("positional_mode", "input") == "input"
    s = 1 / np.sqrt(D_q) if case.scaled else 1.0
    M_Xqk = X + Pi
    M_Xv = M_Xqk if in_values else X
    M_Q, M_K, M_V = omega_q @ M_Xqk + beta_q, omega_k @ M_Xqk + beta_k, omega_v @ M_Xv + beta_v
    M_S = s * M_K.T @ M_Q + np.abs(options.get("bias", np.zeros((N, N))))
    gamma_a = (2 * D + D_q + 8) * U
    eps_P = 2 * gamma_a * M_S.max() + (N + 4) * U
    c = 3 * N + 2 * D + 2 * D_q + 2 * D_v + 13
    factor = 2 * (2 * eps_P + c * U) + 1e-25
    dXp = np.abs(d_X_prime)
    M_dV = dXp @ P.T
    M_dP = M_V.T @ dXp + (0 if dA is None else np.abs(dA))
    M_dS = P * (M_dP + (P * M_dP).sum(axis=0))
    M_dQ, M_dK = s * M_K @ M_dS, s * M_Q @ M_dS.T
    M_dXqk = omega_q.T @ M_dQ + omega_k.T @ M_dK + (omega_v.T @ M_dV if in_values else 0)
    M_dX = M_dXqk + (0 if in_values else omega_v.T @ M_dV)
    bounds = {
        "X": M_dX,
        "omega_v": M_dV @ M_Xv.T,
        "omega_q": M_dQ @ M_Xqk.T,
        "omega_k": M_dK @ M_Xqk.T,
        "beta_v": M_dV.sum(axis=1, keepdims=True),
        "beta_q": M_dQ.sum(axis=1, keepdims=True),
        "beta_k": M_dK.sum(axis=1, keepdims=True),
        "positional": M_dXqk,
        "bias": M_dS,
    }
    return {name: factor * bound for name, bound in bounds.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_vjp_agrees_with_50_digit_derivatives(name: str) -> None:
    """Every entry of the float64 vjp is within the derived bound of the 50-digit derivative of the forward."""
    case = CASES[name]
    arguments, options, d_X_prime, dA = make_case(case)
    vjp: Callable[..., Any] = scaled_dot_product_self_attention_vjp if case.scaled else self_attention_vjp
    computed = vjp(*arguments.values(), d_X_prime, d_attentions=dA, **options)._asdict()
    exact = exact_gradient(case, arguments, options, d_X_prime, dA)
    forward = scaled_dot_product_self_attention if case.scaled else self_attention
    P = forward(*arguments.values(), **options)[1]
    bounds = magnitude_bounds(case, arguments, options, d_X_prime, dA, P)
    for what, truth in exact.items():
        error = np.abs(computed[what] - truth)
        assert np.all(error <= bounds[what]), (
            f"{name}: d {what} off by {error.max():.3g}; bound {bounds[what].ravel()[error.argmax()]:.3g}"
        )


def test_the_bound_rejects_a_wrong_gradient() -> None:
    """The unscaled vjp is far outside the bound of the scaled forward's 50-digit gradient: the check has teeth."""
    case = CASES["scaled, positional input, bias"]
    arguments, options, d_X_prime, dA = make_case(case)
    unscaled: Callable[..., Any] = self_attention_vjp
    wrong = unscaled(*arguments.values(), d_X_prime, d_attentions=dA, **options)
    exact = exact_gradient(case, arguments, options, d_X_prime, dA)
    P = scaled_dot_product_self_attention(*arguments.values(), **options)[1]
    bounds = magnitude_bounds(case, arguments, options, d_X_prime, dA, P)
    assert np.abs(wrong.omega_q - exact["omega_q"]).max() > 1e6 * bounds["omega_q"].max()
