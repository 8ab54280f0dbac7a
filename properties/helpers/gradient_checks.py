"""What the gradient laws are built from: measurements on a backward pass that raise LawViolation with the worst
case, shared by the laws of properties/test_gradients.py and properties/test_gradient_structure.py. Their
tolerances come from the error model of properties/helpers/backward.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from properties.helpers.backward import Backward, GradientProblem, NotebookBackward, central_difference_step, inner
from properties.helpers.checks import LawViolation, assert_close
from properties.helpers.exact import exact_rows, softmax_columns

Array = NDArray[np.float64]
EPS64 = float(np.finfo(np.float64).eps)
Directions = tuple[Array, Array, Array]


def without_blind_queries(problem: GradientProblem) -> GradientProblem:
    """The problem with a zero output cotangent for every query that sees no key: what such a query outputs is a
    convention (zero, the mean of all values as jax's large negative fill gives, NaN: the conventions category
    judges it), and with a zero cotangent no gradient depends on it (the backward is linear in d_out)."""
    blind = np.logical_not(problem.visible().any(axis=1))
    if not blind.any():
        return problem
    return problem.replace(d_out=np.where(blind[:, None], 0.0, problem.d_out))


def exact_weights(query: Array, key: Array, scale: float, visible: NDArray[np.bool_]) -> Array:
    """P[b, h, l, s] = softmax over the visible keys s of scale q_l k_s, in float64 (a key/value head read by
    H / H_kv query heads; a query that sees no key gets zero weights)."""
    key = np.repeat(key, query.shape[1] // key.shape[1], axis=1)
    logits = scale * np.einsum("bhle,bhse->bhsl", query, key)  # columns are queries, as softmax_columns takes
    return np.stack([
        np.stack([softmax_columns(logits[b, h], visible.T).T for h in range(query.shape[1])])
        for b in range(query.shape[0])
    ])  # fmt: skip


def check_directional_derivative(backward: Backward, problem: GradientProblem, directions: Directions) -> None:
    """<dq, δq> + <dk, δk> + <dv, δv> must equal the central difference of phi(t) = <d_out, f(q + t δq, ...)>.

    f is the forward under test when it computes in float64. A forward in a coarser dtype (a kernel checked with
    --dtype float32 or bfloat16) would measure its own rounding over h, not its derivative: the gradients are then
    judged against the float64 derivative of the same problem (inputs rounded to the dtype by `adapt`), the
    central difference of the law-side exact attention (properties/helpers/exact.py), with the float64 error model
    of the step. A query that sees no key has no output the book defines (the conventions category judges the
    choice); its cotangent is set to zero there, so that neither side depends on the choice. With a cotangent
    d_weights of the weights (the notebook's d_attentions), phi(t) also has <d_weights, P(t)>, P the forward's
    weights (the notebook's attentions, transposed).
    """
    adapted = backward.adapt(problem)
    if adapted.key.shape != problem.key.shape:  # grouped heads repeated for a backward without enable_gqa
        G = problem.group
        directions = (directions[0], np.repeat(directions[1], G, axis=1), np.repeat(directions[2], G, axis=1))
    problem = adapted
    eps_forward = backward.out(problem).eps
    scale = backward.scale(problem.E, problem.scale)
    if eps_forward > EPS64:
        visible = problem.visible()
        problem = without_blind_queries(problem)
        eps_forward = EPS64

        if problem.bias is not None:
            pytest.skip("a bias is judged in float64 only: the forward returned a coarser dtype")

        def forward(changed: GradientProblem) -> float:
            phi = inner(changed.d_out, exact_rows(changed.query, changed.key, changed.value, scale, visible))[0]
            if changed.d_weights is not None:
                phi += inner(changed.d_weights, exact_weights(changed.query, changed.key, scale, visible))[0]
            return phi
    else:

        def forward(changed: GradientProblem) -> float:
            output = backward.out(changed)
            phi = inner(changed.d_out, output.out)[0]
            if changed.d_weights is not None:
                if output.weights is None:
                    raise LawViolation("the forward returned no attentions, whose cotangent d_attentions was given")
                phi += inner(changed.d_weights, output.weights)[0]
            return phi

    gradients = backward(problem)
    eps = gradients.eps
    bounds = backward.bounds(problem, eps)
    lhs, lhs_error = 0.0, 0.0
    for gradient, direction, bound in zip(gradients.as_float64(), directions, bounds, strict=False):
        value, rounding = inner(gradient, direction)
        lhs += value
        lhs_error += rounding + float((np.abs(direction) * bound).sum())
    step = central_difference_step(problem, directions, scale, eps_forward)
    moved = [
        problem.replace(**{name: getattr(problem, name) + t * d
                           for name, d in zip(("query", "key", "value"), directions, strict=True)})
        for t in (step.h, -step.h)
    ]  # fmt: skip
    plus, minus = (forward(changed) for changed in moved)
    rhs = (plus - minus) / (2 * step.h)
    tolerance = lhs_error + step.truncation + step.rounding_per_unit / step.h + 2 * EPS64 * abs(rhs)
    if not abs(lhs - rhs) <= tolerance:
        weights = "+ <d_weights, P(q + tδq, ...)> " if problem.d_weights is not None else ""
        raise LawViolation(
            f"<dq, δq> + <dk, δk> + <dv, δv> = {lhs:.9g} must equal d/dt <d_out, f(q + tδq, k + tδk, v + tδv)> "
            f"{weights}= {rhs:.9g} (central difference, h = 2^{int(np.log2(step.h))}): error {abs(lhs - rhs):.3g} > "
            f"tolerance {tolerance:.3g}"
        )


def per_kv_head(array: Array, group: int) -> Array:
    """Sum over the query heads of each key/value head's group: (B, H, ...) -> (B, H / group, ...)."""
    return np.asarray(array.reshape(array.shape[0], array.shape[1] // group, group, *array.shape[2:]).sum(axis=2))


def check_value_sums(backward: Backward, problem: GradientProblem) -> None:
    """sum over keys of dv = sum over the group's queries of d_out, for every batch element and key/value head."""
    problem = backward.adapt(problem)
    gradients = backward(problem)
    dv = gradients.as_float64()[2]
    bound = backward.bounds(problem, gradients.eps).d_value
    G, N = problem.group, problem.N
    expected = per_kv_head(problem.d_out.sum(axis=2), G)
    tolerance = (
        N * bound[..., 0]
        + (N + 1) * EPS64 * np.abs(dv).sum(axis=2)
        + (N * G + 1) * EPS64 * per_kv_head(np.abs(problem.d_out).sum(axis=2), G)
    )
    assert_close(dv.sum(axis=2), expected, tolerance, what="sum over keys of d_value against sum over queries of d_out")


def check_key_sums(backward: Backward, problem: GradientProblem) -> None:
    """sum over keys of dk = 0 for every batch element and key/value head."""
    problem = backward.adapt(problem)
    gradients = backward(problem)
    dk = gradients.as_float64()[1]
    N = problem.N
    tolerance = N * backward.bounds(problem, gradients.eps).d_key[..., 0] + (N + 1) * EPS64 * np.abs(dk).sum(axis=2)
    assert_close(dk.sum(axis=2), np.zeros_like(dk[:, :, 0]), tolerance, what="sum over keys of d_key")


def check_the_chain_rule(backward: NotebookBackward, problem: GradientProblem, positional: Array, mode: str) -> None:
    """The chain rule through the notebook's projections, slot by slot, at X + positional = I_N (see
    NotebookBackward.cotangents): dX = omega_q^T d omega_q + omega_k^T d omega_k + omega_v^T d omega_v, d beta =
    d omega 1, d positional = dX ("input") or its query and key terms ("query_key"); with a bias of the logits,
    d omega_q = s omega_k d bias and d omega_k = s omega_q d bias^T (its cotangent is the logits'). Under
    "query_key" the values see X = I_N - positional alone: V = omega_v X, d omega_v = dV X^T and dX = d positional +
    omega_v^T dV, so (dX - d positional) X^T = omega_v^T d omega_v (which a transpose missing from d omega_v
    breaks, X not being symmetric).

    Tolerance: the returned d omegas are within the row bounds (their transposes are dq, dk, dv); dX, d beta and
    d Pi come from the backward's own dQ, dK, dV by the same sums, so each side is within the sum over its terms
    of |omega| x bound, plus (n + 1) eps64 of the sum of |terms| for its n-term sums: twice that covers both."""
    X = np.eye(problem.N) - positional
    # Under "query_key" the values are V = omega_v X, rows X^T v: the error bounds take their magnitudes.
    seen = problem if mode == "input" else problem.replace(value=np.einsum("nm,bhme->bhne", X.T, problem.value))
    bounds = backward.bounds(seen, EPS64)
    scale = backward.scale(problem.E, problem.scale)
    G = problem.group
    for b_, slots in enumerate(backward.cotangents(problem, positional, mode)):
        for h, got in enumerate(slots):
            slot_bounds = (bounds.d_query[b_, h], bounds.d_key[b_, h // G], bounds.d_value[b_, h // G])
            _check_the_chain_rule_on_a_slot(got, problem, (b_, h), mode, slot_bounds, scale, X)


def _check_the_chain_rule_on_a_slot(
    got: dict[str, Any],
    problem: GradientProblem,
    slot: tuple[int, int],
    mode: str,
    bounds: tuple[Any, Any, Any],
    scale: float,
    X: Array,
) -> None:
    b_, h = slot
    G = problem.group
    omegas = {"omega_q": problem.query[b_, h].T, "omega_k": problem.key[b_, h // G].T,
              "omega_v": problem.value[b_, h // G].T}  # fmt: skip
    bound = dict(zip(("omega_q", "omega_k", "omega_v"), (float(np.max(x)) for x in bounds), strict=True))
    g = {name: np.asarray(value, dtype=np.float64) for name, value in got.items()}
    paths = ("omega_q", "omega_k", "omega_v")
    terms = {name: omegas[name].T @ g[name] for name in paths}
    errors = {name: np.abs(omegas[name].T).sum(axis=1, keepdims=True) * bound[name] for name in paths}
    sizes = {name: omegas[name].shape[0] for name in paths}

    def expect(names: tuple[str, ...], what: str, actual: Any) -> None:
        expected = sum(terms[n] for n in names)
        magnitude = sum(np.abs(omegas[n].T) @ np.abs(g[n]) for n in names)
        n_terms = sum(sizes[n] for n in names)
        tolerance = 2 * sum(errors[n] for n in names) + 2 * (n_terms + 2) * EPS64 * magnitude
        assert_close(np.asarray(actual, dtype=np.float64), expected, tolerance,
                     what=f"{what} of batch element {b_}, head {h} against the chain rule")  # fmt: skip

    N = problem.N
    where = f"batch element {b_}, head {h}"
    if mode == "input":
        expect(paths, "d X", g["X"])
        expect(paths, "d positional (input)", g["positional"])
    else:
        expect(paths[:2], "d positional (query_key)", g["positional"])
        through_values = (g["X"] - g["positional"]) @ X.T
        expected = omegas["omega_v"].T @ g["omega_v"]
        X_sums = np.abs(X).sum(axis=1)[None, :]  # sum_j |X[n, j]| for column n of the product with X^T
        e_v = errors["omega_v"]
        rounding = (2 * sum(sizes.values()) + N + 4) * EPS64 * (np.abs(g["X"]) + np.abs(g["positional"])) @ np.abs(X.T)
        rounding += (sizes["omega_v"] + 2) * EPS64 * np.abs(omegas["omega_v"].T) @ np.abs(g["omega_v"])
        tolerance = (2 * (errors["omega_q"] + errors["omega_k"] + e_v)) * X_sums + 2 * rounding
        assert_close(through_values, expected, tolerance,
                     what=f"(d X - d positional) X^T of {where} against omega_v^T d omega_v (query_key)")  # fmt: skip
    if problem.bias is not None:  # S = s K^T Q + bias: d bias = dS, dQ = s K dS, dK = s Q dS^T (X + positional = I_N)
        s = scale
        d_bias = np.asarray(got["bias"], dtype=np.float64)
        for omega, other, product, what in (("omega_q", "omega_k", d_bias, "s omega_k d bias"),
                                            ("omega_k", "omega_q", d_bias.T, "s omega_q d bias^T")):  # fmt: skip
            expected = s * omegas[other] @ product
            tolerance = 2 * bound[omega] + 2 * (N + 2) * EPS64 * abs(s) * np.abs(omegas[other]) @ np.abs(product)
            assert_close(g[omega], expected, tolerance, what=f"d {omega} of {where} against {what}")
    for omega, beta in zip(paths if mode == "input" else paths[:2], ("beta_q", "beta_k", "beta_v"), strict=False):
        row_sums = g[omega].sum(axis=1, keepdims=True)
        tolerance = 2 * N * bound[omega] + 2 * (N + 2) * EPS64 * np.abs(g[omega]).sum(axis=1, keepdims=True)
        assert_close(g[beta], row_sums, tolerance, what=f"d {beta} of {where} against d {omega} 1")
