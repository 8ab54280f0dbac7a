"""Laws of multi-head self-attention (book eqs. 12.10-12.12), for the `multihead` fixture f(X, heads, omega_c)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray

from properties.catalogues import mistakes as b
from properties.helpers.checks import assert_close
from properties.helpers.implementations import REFERENCE, Implementation, Multihead
from properties.helpers.meta import assert_law_fails
from properties.helpers.problems import AttentionProblem, Head, MultiheadProblem
from properties.helpers.strategies import (
    attention_problems,
    multihead_problems,
    multihead_problems_with_any_mixing,
    multihead_problems_with_head_orders,
    multihead_problems_with_permutations,
    multihead_problems_with_second_mixings,
)
from properties.helpers.tolerances import epsilon_of, mixing_law_error, multihead_error

pytestmark = pytest.mark.semantics
Array = NDArray[np.float64]


def call(multihead: Multihead, problem: MultiheadProblem) -> Array:
    return np.asarray(multihead(problem.X, list(problem.heads), problem.omega_c))


@given(problem=attention_problems())
def test_one_head_with_identity_mixing_is_single_head_attention(
    multihead: Multihead, implementation: Implementation, problem: AttentionProblem
) -> None:
    """H = 1 and omega_c = I give scaled dot-product self-attention itself (eq. 12.12 with one head)."""
    if implementation.kind != "scaled":
        pytest.skip("multi-head attention is built from scaled heads")
    single = implementation(problem)
    multi = multihead(problem.X, [problem.arrays()[1:]], np.eye(problem.D_v))
    bounds = implementation.bounds(problem, max(single.eps, epsilon_of(multi.dtype)))
    assert_close(multi, single.X_prime, (bounds + bounds).x_prime, what="one head with omega_c = I")


@pytest.mark.meta
def test_one_head_with_identity_mixing_catches_unscaled_heads() -> None:
    law = test_one_head_with_identity_mixing_is_single_head_attention
    assert_law_fails(law, multihead=b.broken_multihead(b.unscaled_heads), implementation=REFERENCE["scaled"])


@given(case=multihead_problems_with_head_orders())
def test_reordering_heads_with_their_mixing_columns_changes_nothing(
    multihead: Multihead, case: tuple[MultiheadProblem, NDArray[np.intp]]
) -> None:
    """Permuting the heads together with the matching column blocks of omega_c leaves X' unchanged:
    omega_c [X'_1; ...; X'_H] = sum_h omega_c^(h) X'_h is a sum over heads."""
    problem, order = case
    edges = np.cumsum([0] + [head[0].shape[0] for head in problem.heads])
    blocks = [problem.omega_c[:, edges[h] : edges[h + 1]] for h in range(len(problem.heads))]
    reordered = replace(problem, heads=tuple(problem.heads[h] for h in order),
                        omega_c=np.hstack([blocks[h] for h in order]))  # fmt: skip
    first, second = call(multihead, reordered), call(multihead, problem)
    eps = epsilon_of(first.dtype, second.dtype)
    tolerance = multihead_error(problem, eps) + multihead_error(reordered, eps)
    assert_close(first, second, tolerance,
                 what=f"heads reordered as {order.tolist()} with their blocks of omega_c")  # fmt: skip


@pytest.mark.meta
def test_reordering_heads_catches_heads_stacked_in_reverse() -> None:
    assert_law_fails(test_reordering_heads_with_their_mixing_columns_changes_nothing,
                     multihead=b.broken_multihead(b.heads_stacked_in_reverse))  # fmt: skip


@given(case=multihead_problems_with_permutations())
def test_multihead_output_is_equivariant_under_column_permutations(
    multihead: Multihead, case: tuple[MultiheadProblem, NDArray[np.intp]]
) -> None:
    """f(X P) = f(X) P: every head is equivariant (eq. 12.18), and omega_c mixes rows, not columns."""
    problem, p = case
    permuted = replace(problem, X=problem.X[:, p])
    first, second = call(multihead, permuted), call(multihead, problem)
    eps = epsilon_of(first.dtype, second.dtype)
    tolerance = multihead_error(problem, eps)[:, p] + multihead_error(permuted, eps)
    assert_close(first, second[:, p], tolerance,
                 what=f"multi-head X' of inputs permuted by {p.tolist()}")  # fmt: skip


@pytest.mark.meta
def test_multihead_equivariance_catches_positional_heads() -> None:
    assert_law_fails(test_multihead_output_is_equivariant_under_column_permutations,
                     multihead=b.broken_multihead(b.positional_heads))  # fmt: skip


@given(problem=multihead_problems(), data=st.data())
def test_each_head_is_scaled_by_its_own_query_dimension(
    multihead: Multihead, problem: MultiheadProblem, data: st.DataObject
) -> None:
    """Stacking head h's queries and keys on themselves (its D_q doubles) equals multiplying its omega_q and
    beta_q by sqrt(2): each head is scaled by 1/sqrt of its own D_q (eq. 12.9 per head), not a shared one."""
    h = data.draw(st.integers(0, len(problem.heads) - 1), label="head")
    omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = problem.heads[h]
    stacked_head = (omega_v, np.vstack([omega_q, omega_q]), np.vstack([omega_k, omega_k]), beta_v,
                    np.vstack([beta_q, beta_q]), np.vstack([beta_k, beta_k]))  # fmt: skip
    c = np.sqrt(2.0)
    sharpened_head = (omega_v, c * omega_q, omega_k, beta_v, c * beta_q, beta_k)

    def with_head(head: Head) -> MultiheadProblem:
        return replace(problem, heads=(*problem.heads[:h], head, *problem.heads[h + 1 :]))

    sharpened = with_head(sharpened_head)
    first, second = call(multihead, with_head(stacked_head)), call(multihead, sharpened)
    tolerance = 2 * multihead_error(sharpened, epsilon_of(first.dtype, second.dtype))
    assert_close(first, second, tolerance,
                 what=f"head {h}: stacked queries and keys against queries times sqrt(2)")  # fmt: skip


@pytest.mark.meta
def test_each_head_is_scaled_by_its_own_query_dimension_catches_a_shared_scale() -> None:
    assert_law_fails(test_each_head_is_scaled_by_its_own_query_dimension, multihead=b.broken_multihead(b.shared_scale))


@given(case=multihead_problems_with_second_mixings())
def test_multihead_output_is_linear_in_the_mixing_matrix(
    multihead: Multihead, case: tuple[MultiheadProblem, Array, float, float]
) -> None:
    """f(a C1 + b C2) = a f(C1) + b f(C2) for the output weights omega_c (eq. 12.12 is linear in omega_c)."""
    problem, second, a, c = case
    mixed = replace(problem, omega_c=a * problem.omega_c + c * second)
    f1, f2 = call(multihead, problem), call(multihead, replace(problem, omega_c=second))
    f_mixed = call(multihead, mixed)
    eps = epsilon_of(f1.dtype, f2.dtype, f_mixed.dtype)
    magnitude = replace(problem, omega_c=abs(a) * np.abs(problem.omega_c) + abs(c) * np.abs(second))
    tolerance = 3 * multihead_error(magnitude, eps) + 2 * eps * np.abs(a * f1 + c * f2)
    assert_close(f_mixed, a * f1 + c * f2, tolerance, what=f"linearity in omega_c, a={a}, b={c}")


@pytest.mark.meta
def test_multihead_linearity_catches_a_residual() -> None:
    assert_law_fails(
        test_multihead_output_is_linear_in_the_mixing_matrix,
        multihead=b.broken_multihead(b.heads_with_a_residual),
    )


@given(problem=multihead_problems_with_any_mixing())
def test_multihead_output_is_the_mixing_matrix_times_the_output_with_identity_mixing(
    multihead: Multihead, problem: MultiheadProblem
) -> None:
    """f(X, heads, omega_c) = omega_c f(X, heads, I) for every omega_c, rectangular or square: omega_c multiplies
    the stacked head outputs H from the left (eq. 12.12), and H = f(X, heads, I)."""
    stacked = call(multihead, problem.replace(omega_c=np.eye(problem.omega_c.shape[1])))
    mixed = call(multihead, problem)
    tolerance = mixing_law_error(problem, stacked, epsilon_of(stacked.dtype, mixed.dtype))
    assert_close(mixed, problem.omega_c @ np.asarray(stacked, dtype=np.float64), tolerance,
                 what=f"f(omega_c) against omega_c f(I), omega_c of shape {problem.omega_c.shape}")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.mixing_transposed, b.heads_with_a_residual])
def test_multihead_output_is_the_mixing_matrix_times_the_output_with_identity_mixing_catches(bug: object) -> None:
    assert_law_fails(test_multihead_output_is_the_mixing_matrix_times_the_output_with_identity_mixing,
                     multihead=b.broken_multihead(bug))  # fmt: skip


@given(problem=multihead_problems(min_heads=2))
def test_the_stacked_output_is_each_head_alone(multihead: Multihead, problem: MultiheadProblem) -> None:
    """f(X, heads, I) = [f(X, [head 1], I); ...; f(X, [head H], I)]: with identity mixing the output stacks the
    heads' outputs in order, each computed from its own parameters alone, with its own scale (eq. 12.11)."""
    identity = problem.replace(omega_c=np.eye(problem.omega_c.shape[1]))
    stacked = call(multihead, identity)
    alone = [MultiheadProblem(problem.X, (head,), np.eye(head[0].shape[0])) for head in problem.heads]
    outputs = [call(multihead, one) for one in alone]
    eps = epsilon_of(stacked.dtype, *(output.dtype for output in outputs))
    tolerance = multihead_error(identity, eps) + np.vstack([multihead_error(one, eps) for one in alone])
    assert_close(stacked, np.vstack(outputs), tolerance, what="the output with identity mixing against each head alone")


@pytest.mark.meta
@pytest.mark.parametrize(
    "bug",
    [
        b.heads_stacked_in_reverse,
        b.heads_interleaved,
        b.keys_of_the_next_head,
        b.value_bias_of_the_first_head,
        b.first_heads_scale_for_every_head,
    ],
)
def test_the_stacked_output_is_each_head_alone_catches(bug: object) -> None:
    assert_law_fails(test_the_stacked_output_is_each_head_alone, multihead=b.broken_multihead(bug))
