"""What the gradient laws are built from: measurements on a backward pass that raise LawViolation with the worst
case, shared by the laws of properties/test_gradients.py and properties/test_gradient_structure.py. Their
tolerances come from the error model of properties/helpers/backward.py."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from properties.helpers.backward import Backward, GradientProblem, central_difference_step, inner
from properties.helpers.checks import LawViolation, assert_close
from properties.helpers.exact import exact_rows

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


def check_directional_derivative(backward: Backward, problem: GradientProblem, directions: Directions) -> None:
    """<dq, δq> + <dk, δk> + <dv, δv> must equal the central difference of phi(t) = <d_out, f(q + t δq, ...)>.

    f is the forward under test when it computes in float64. A forward in a coarser dtype (a kernel checked with
    --dtype float32 or bfloat16) would measure its own rounding over h, not its derivative: the gradients are then
    judged against the float64 derivative of the same problem (inputs rounded to the dtype by `adapt`), the
    central difference of the law-side exact attention (properties/helpers/exact.py), with the float64 error model
    of the step. A query that sees no key has no output the book defines (the conventions category judges the
    choice); its cotangent is set to zero there, so that neither side depends on the choice.
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

        def forward(changed: GradientProblem) -> Array:
            return exact_rows(changed.query, changed.key, changed.value, scale, visible)
    else:

        def forward(changed: GradientProblem) -> Array:
            return backward.out(changed).out

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
    plus, minus = (inner(problem.d_out, forward(changed))[0] for changed in moved)
    rhs = (plus - minus) / (2 * step.h)
    tolerance = lhs_error + step.truncation + step.rounding_per_unit / step.h + 2 * EPS64 * abs(rhs)
    if not abs(lhs - rhs) <= tolerance:
        raise LawViolation(
            f"<dq, δq> + <dk, δk> + <dv, δv> = {lhs:.9g} must equal d/dt <d_out, f(q + tδq, k + tδk, v + tδv)> "
            f"= {rhs:.9g} (central difference, h = 2^{int(np.log2(step.h))}): error {abs(lhs - rhs):.3g} > "
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
