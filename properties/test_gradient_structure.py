"""Laws of a backward pass about which gradient depends on what: masked and future keys get nothing, a shared
key/value head sums its group, the sequence, the batch and the heads are handled alike and apart, two calls
agree bit for bit, and long sequences across tile boundaries keep the sums and the directional derivative.

They run on the `backward` fixture, in rows, with the tolerances of properties/helpers/backward.py: a gradient
compared with another evaluation is allowed the sum of both evaluations' bounds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from numpy.typing import NDArray

from properties.catalogues import mistakes as b
from properties.helpers.backward import Backward, GradientProblem
from properties.helpers.checks import LawViolation, assert_close
from properties.helpers.gradient_checks import (
    check_directional_derivative,
    check_key_sums,
    check_value_sums,
    without_blind_queries,
)
from properties.helpers.meta import assert_law_fails
from properties.helpers.strategies import (
    LONG_GRADIENT_LENGTHS,
    causal_gradient_problems_with_earlier_cotangents,
    gradient_problems,
    gradient_problems_with_a_changed_slot,
    gradient_problems_with_a_hidden_key,
    gradient_problems_with_directions,
    gradient_problems_with_other_cotangents,
    gradient_problems_with_permutations,
)

pytestmark = pytest.mark.gradients
Array = NDArray[np.float64]
NAMES = ("d_query", "d_key", "d_value")


@given(case=gradient_problems_with_a_hidden_key())
def test_a_key_hidden_from_every_query_gets_no_gradient(backward: Backward, case: tuple[GradientProblem, int]) -> None:
    """dk[j] = dv[j] = 0 when attn_mask hides key j from every query: its weights are zero, so no output
    depends on it. (A query that sees no key at all gets a zero cotangent: its output is a convention.)"""
    problem, j = case
    backward.require("attn_mask")
    problem = without_blind_queries(backward.adapt(problem))
    gradients = backward(problem)
    bounds = backward.bounds(problem, gradients.eps)
    for name, gradient, bound in zip(NAMES[1:], gradients.as_float64()[1:], (bounds.d_key, bounds.d_value),
                                     strict=True):  # fmt: skip
        hidden = gradient[..., j, :]
        assert_close(hidden, np.zeros_like(hidden), np.broadcast_to(bound[..., 0, :], hidden.shape),
                     what=f"{name} of key {j}, which attn_mask hides from every query")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.backward_forgets_the_key_padding_mask, b.backward_gradients_flow_to_masked_keys])
def test_a_hidden_key_gets_no_gradient_catches(bug: Any) -> None:
    assert_law_fails(test_a_key_hidden_from_every_query_gets_no_gradient, backward=b.broken_backward(bug))


@given(case=causal_gradient_problems_with_earlier_cotangents())
def test_causal_gradients_depend_only_on_the_cotangents_of_later_queries(
    backward: Backward, case: tuple[GradientProblem, int, Array]
) -> None:
    """Under is_causal, dk[m] and dv[m] depend only on d_out[n] for n >= m, and dq[n] on d_out[n] alone: changing
    the cotangents of the queries before m changes no dq, dk, dv of the tokens from m on. (A query that sees no
    key, under an attn_mask, gets a zero cotangent: its output is a convention.)"""
    problem, m, second = case
    backward.require("is_causal")
    problem = without_blind_queries(backward.adapt(problem))
    second = without_blind_queries(problem.replace(d_out=second)).d_out
    one, two = backward(problem), backward(problem, d_out=second)
    eps = max(one.eps, two.eps)
    both = backward.bounds(problem, eps) + backward.bounds(problem.replace(d_out=second), eps)
    for name, g1, g2, bound in zip(NAMES, one.as_float64(), two.as_float64(), both, strict=False):
        later = g1[..., m:, :]
        assert_close(g2[..., m:, :], later, np.broadcast_to(bound, later.shape),
                     what=f"{name} of tokens {m}.. after changing d_out of the queries before {m}")  # fmt: skip


@pytest.mark.meta
def test_causal_gradients_catch_a_forgotten_causal_mask() -> None:
    law = test_causal_gradients_depend_only_on_the_cotangents_of_later_queries
    assert_law_fails(law, backward=b.broken_backward(b.backward_forgets_the_causal_mask))


@given(case=gradient_problems_with_other_cotangents())
def test_a_query_gradient_depends_only_on_its_own_output_cotangent(
    backward: Backward, case: tuple[GradientProblem, int, Array]
) -> None:
    """dq[n] depends on d_out[n] alone, whatever the mask: query n's logits reach the output only through out[n]
    (dS[n] = P[n] o (dO[n] V^T - rowsum(dO[n] o O[n]))), so changing the cotangents of the other queries leaves
    dq[n] unchanged. (A query that sees no key gets a zero cotangent: its output is a convention.)"""
    problem, n, second = case
    problem = without_blind_queries(backward.adapt(problem))
    second = without_blind_queries(problem.replace(d_out=second)).d_out
    one, two = backward(problem), backward(problem, d_out=second)
    eps = max(one.eps, two.eps)
    bound = (backward.bounds(problem, eps) + backward.bounds(problem.replace(d_out=second), eps)).d_query
    own = one.as_float64()[0][..., n, :]
    assert_close(two.as_float64()[0][..., n, :], own, np.broadcast_to(bound[..., 0, :], own.shape),
                 what=f"d_query of query {n} after changing d_out of every other query")  # fmt: skip


@pytest.mark.meta
def test_a_query_gradient_catches_the_rowsum_over_the_queries() -> None:
    law = test_a_query_gradient_depends_only_on_its_own_output_cotangent
    assert_law_fails(law, backward=b.broken_backward(b.backward_rowsum_over_the_queries))


@given(problem=gradient_problems(grouped=True))
def test_a_shared_key_value_head_gets_the_sum_over_its_group(backward: Backward, problem: GradientProblem) -> None:
    """Under enable_gqa, dk and dv of a key/value head shared by G query heads are the sums over the group of
    the gradients of its G copies (the backward with key and value repeated over the query heads), and dq is
    the same."""
    backward.require("enable_gqa")
    problem = backward.adapt(problem)
    G = problem.group
    repeated = problem.replace(key=np.repeat(problem.key, G, axis=1), value=np.repeat(problem.value, G, axis=1),
                               enable_gqa=False)  # fmt: skip
    grouped, copies = backward(problem), backward(repeated)
    bounds = backward.bounds(problem, max(grouped.eps, copies.eps)).scaled(2.0)  # a group's sum: its copies' bounds
    summed = [copies.as_float64()[0]] + [
        g.reshape(g.shape[0], g.shape[1] // G, G, *g.shape[2:]).sum(axis=2) for g in copies.as_float64()[1:]
    ]
    for name, actual, expected, bound in zip(NAMES, grouped.as_float64(), summed, bounds, strict=False):
        assert_close(actual, expected, np.broadcast_to(bound, actual.shape),
                     what=f"{name} under enable_gqa against the group sum with repeated heads")  # fmt: skip


@pytest.mark.meta
def test_a_shared_head_gets_the_sum_catches_the_first_head_only() -> None:
    law = test_a_shared_key_value_head_gets_the_sum_over_its_group
    assert_law_fails(law, backward=b.broken_backward(b.backward_groups_from_their_first_head))


@given(case=gradient_problems_with_permutations())
def test_permuting_the_sequence_permutes_every_gradient(
    backward: Backward, case: tuple[GradientProblem, NDArray[np.intp]]
) -> None:
    """g(q[p], k[p], v[p], d_out[p], mask[p][:, p]) = g(q, k, v, d_out, mask)[p] for g = dq, dk, dv and every
    order p of the tokens (without causal masking, which orders them)."""
    problem, p = case
    problem = backward.adapt(problem)
    moved = problem.replace(
        query=problem.query[:, :, p], key=problem.key[:, :, p], value=problem.value[:, :, p],
        d_out=problem.d_out[:, :, p], attn_mask=None if problem.attn_mask is None else problem.attn_mask[p][:, p],
    )  # fmt: skip
    one, two = backward(problem), backward(moved)
    bounds = backward.bounds(problem, max(one.eps, two.eps)).scaled(2.0)
    for name, g1, g2, bound in zip(NAMES, one.as_float64(), two.as_float64(), bounds, strict=False):
        assert_close(g2, g1[:, :, p], np.broadcast_to(bound, g2.shape),
                     what=f"{name} of the tokens in the order {p.tolist()}")  # fmt: skip


@pytest.mark.meta
def test_permuting_the_sequence_catches_a_backward_that_is_always_causal() -> None:
    law = test_permuting_the_sequence_permutes_every_gradient
    assert_law_fails(law, backward=b.broken_backward(b.backward_always_causal))


@given(case=gradient_problems_with_a_changed_slot())
def test_every_batch_element_and_head_is_differentiated_on_its_own(
    backward: Backward, case: tuple[GradientProblem, GradientProblem, tuple[int, int]]
) -> None:
    """Changing query, key, value and d_out of one batch element and head changes no gradient of the others."""
    problem, changed, (i, h) = case
    problem, changed = backward.adapt(problem), backward.adapt(changed)
    one, two = backward(problem), backward(changed)
    eps = max(one.eps, two.eps)
    bounds = backward.bounds(problem, eps) + backward.bounds(changed, eps)
    G = problem.group
    for name, g1, g2, bound in zip(NAMES, one.as_float64(), two.as_float64(), bounds, strict=False):
        own = h if name == "d_query" else h // G
        keep = np.ones(g1.shape[:2], dtype=bool)
        keep[i, own] = False
        assert_close(g2[keep], g1[keep], np.broadcast_to(bound, g1.shape)[keep],
                     what=f"{name} of the other slots after changing batch element {i}, head {h}")  # fmt: skip


@pytest.mark.meta
def test_every_batch_element_and_head_catches_keys_of_the_first_batch_element() -> None:
    law = test_every_batch_element_and_head_is_differentiated_on_its_own
    assert_law_fails(law, backward=b.broken_backward(b.backward_keys_of_the_first_batch_element))


@given(problem=gradient_problems())
def test_two_identical_calls_give_identical_gradients_and_keep_the_inputs(
    backward: Backward, problem: GradientProblem
) -> None:
    """The same call twice gives the same bits (FlashAttention's deterministic backward), and changes none of
    query, key, value and d_out."""
    problem = backward.adapt(problem)
    one, two = backward(problem), backward(problem)
    for gradients in (one, two):
        if gradients.modified:
            raise LawViolation(f"the backward changed its argument(s) {', '.join(gradients.modified)} in place")
    for name, g1, g2 in zip(NAMES, one[:3], two[:3], strict=True):
        if g1.dtype != g2.dtype or g1.tobytes() != g2.tobytes():
            worst = float(np.max(np.abs(np.asarray(g1, float) - np.asarray(g2, float)), initial=0.0))
            raise LawViolation(f"two identical calls gave different {name}: largest difference {worst:.3g}")


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.backward_scales_d_out_in_place, b.backward_in_a_changing_order])
def test_two_identical_calls_catch(bug: Any) -> None:
    law = test_two_identical_calls_give_identical_gradients_and_keep_the_inputs
    assert_law_fails(law, backward=b.broken_backward(bug))


@settings(max_examples=6)
@given(case=gradient_problems_with_directions(lengths=LONG_GRADIENT_LENGTHS, mask=False, scale=False))
def test_long_sequences_keep_the_gradient_laws(
    backward: Backward, case: tuple[GradientProblem, tuple[Array, Array, Array]]
) -> None:
    """For N = 2^k - 1, 2^k, 2^k + 1 (k = 4 ... 7: partial, full and one-over tiles) the key gradients sum to
    zero, the value gradients to the output cotangents, and the gradients are the directional derivatives."""
    problem, directions = case
    check_key_sums(backward, problem)
    check_value_sums(backward, problem)
    check_directional_derivative(backward, problem, directions)


@pytest.mark.meta
def test_long_sequences_catch_a_skipped_partial_tile() -> None:
    law = test_long_sequences_keep_the_gradient_laws
    assert_law_fails(law, backward=b.broken_backward(b.backward_blocks_skip_the_partial_tile))
