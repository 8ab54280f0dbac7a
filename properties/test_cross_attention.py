"""Laws of cross-attention and decoding (L != S), and of the declared causal alignment: queries from one sequence,
keys and values from another; a decoding step is one query against a long cache.

They run on the `flash` fixture: --impl TARGET under --convention flash (flash_attn_func's signature) or sdpa (torch's
signature, through the same adapter), else the bundled attention.flash:flash_attn_func. Expected values are the
definition in float64 (flash_convention.exact_attention); tolerances are flash_convention.row_bounds, the error model
of properties/helpers/tolerances.py in rows, for the target's evaluation plus the law's own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings

from properties.catalogues import correct
from properties.catalogues.mistakes import kernels as m
from properties.helpers.checks import LawViolation, assert_close
from properties.helpers.flash_convention import (
    FlashImplementation,
    FlashProblem,
    exact_attention,
    judged,
    prefix_step,
    visibility,
)
from properties.helpers.flash_strategies import (
    ChangedQuery,
    Reordered,
    Scaled,
    problems_with_a_changed_query,
    problems_with_key_orders,
    problems_with_query_orders,
    problems_with_scales,
    rectangular_problems,
)
from properties.helpers.meta import assert_law_fails

# A failing decoding example (S up to 700) prints as code of some 80 kB: long, and still the replay.
pytestmark = [pytest.mark.semantics, pytest.mark.filterwarnings("ignore:Generating overly large repr")]


@given(problem=rectangular_problems())
def test_every_query_attends_over_all_keys_on_rectangular_problems(
    flash: FlashImplementation, problem: FlashProblem
) -> None:
    """out[b, n, h] = sum_m softmax_m(s q_n . k_m) v_m with s = 1/sqrt(D), for L queries against S keys, L != S
    included (cross-attention; L = 1 is a decoding step): eq. 12.9 in rows."""
    result = flash.call(problem)
    scale = flash.default_scale(problem)
    expected, _ = exact_attention(problem, scale)
    assert_close(result.out, expected, flash.bounds(problem, scale, result.eps).out,
                 what=f"out (L={problem.L}, S={problem.S})")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize(
    "bug", [m.flash_softmax_over_queries, m.flash_always_causal, m.flash_decoding_cache_off_by_one]
)
def test_every_query_attends_over_all_keys_catches(bug: Any) -> None:
    assert_law_fails(test_every_query_attends_over_all_keys_on_rectangular_problems, flash=m.broken_flash(bug))


@given(case=problems_with_key_orders())
def test_permuting_the_keys_and_values_leaves_every_output_unchanged(
    flash: FlashImplementation, case: Reordered
) -> None:
    """f(q, k[p], v[p]) = f(q, k, v) for every order p of the S key/value rows (the same p for both): attention
    reads a set of keys, not a sequence (no mask, no positions)."""
    problem, p = case
    before, after = flash.call(problem), flash.call(problem.with_key_order(p))
    scale = flash.default_scale(problem)
    bound = 2 * flash.bounds(problem, scale, max(before.eps, after.eps)).out
    assert_close(after.out, before.out, bound, what=f"out with the keys in the order {p.tolist()}")


@pytest.mark.meta
def test_permuting_the_keys_catches_a_cache_off_by_one() -> None:
    law = test_permuting_the_keys_and_values_leaves_every_output_unchanged
    assert_law_fails(law, flash=m.broken_flash(m.flash_decoding_cache_off_by_one))


@given(case=problems_with_query_orders())
def test_permuting_the_queries_permutes_the_outputs(flash: FlashImplementation, case: Reordered) -> None:
    """f(q[p], k, v) = f(q, k, v)[p] for every order p of the L queries (no mask)."""
    problem, p = case
    before, after = flash.call(problem), flash.call(problem.with_query_order(p))
    scale = flash.default_scale(problem)
    bound = 2 * flash.bounds(problem, scale, max(before.eps, after.eps)).out
    assert_close(after.out, before.out[:, p], bound, what=f"out with the queries in the order {p.tolist()}")


@pytest.mark.meta
def test_permuting_the_queries_catches_a_hard_coded_causal_mask() -> None:
    assert_law_fails(test_permuting_the_queries_permutes_the_outputs, flash=m.broken_flash(m.flash_always_causal))


@given(case=problems_with_a_changed_query())
def test_each_queries_output_depends_on_no_other_query(flash: FlashImplementation, case: ChangedQuery) -> None:
    """Replacing query n leaves out[:, j] unchanged for every other query j (with and without causal)."""
    problem, n, changed = case
    for causal in (False, True) if flash.takes("causal") else (False,):
        options = {"causal": True} if causal else {}
        before, after = flash.call(problem, **options), flash.call(changed, **options)
        scale = flash.default_scale(problem)
        bound = flash.bounds(problem, scale, before.eps) + flash.bounds(changed, scale, after.eps)
        others = np.arange(problem.L) != n
        assert_close(after.out[:, others], before.out[:, others], bound.out[:, others],
                     what=f"the other queries' outputs after changing query {n} (causal={causal})")  # fmt: skip


@pytest.mark.meta
def test_each_queries_output_catches_softmax_over_queries() -> None:
    law = test_each_queries_output_depends_on_no_other_query
    assert_law_fails(law, flash=m.broken_flash(m.flash_softmax_over_queries))


@given(problem=rectangular_problems())
def test_outputs_lie_in_the_convex_hull_of_the_values_on_rectangular_problems(
    flash: FlashImplementation, problem: FlashProblem
) -> None:
    """min_m v_md - tol <= out[n, d] <= max_m v_md + tol for every query n (each output is a convex combination
    of the value rows its head reads), L != S included."""
    result = flash.call(problem)
    v = np.repeat(np.swapaxes(problem.v, 1, 2), problem.group, axis=1)  # (B, H, S, D_v)
    bound = flash.bounds(problem, flash.default_scale(problem), result.eps).out
    low, high = (np.swapaxes(f(v, axis=2, keepdims=True), 1, 2) for f in (np.min, np.max))  # (B, 1, H, D_v)
    inside = (result.out >= low - bound) & (result.out <= high + bound)
    if not inside.all():
        index = tuple(int(i) for i in np.argwhere(~inside)[0])
        raise LawViolation(
            f"out{list(index)} = {result.out[index]:.6g} leaves the values' hull "
            f"[{low[index[0], 0, index[2], index[3]]:.6g}, {high[index[0], 0, index[2], index[3]]:.6g}]"
        )


@pytest.mark.meta
def test_outputs_lie_in_the_convex_hull_on_rectangular_problems_catches_softmax_over_queries() -> None:
    law = test_outputs_lie_in_the_convex_hull_of_the_values_on_rectangular_problems
    assert_law_fails(law, flash=m.broken_flash(m.flash_softmax_over_queries))


@given(case=problems_with_scales())
def test_the_softmax_scale_multiplies_the_logits(flash: FlashImplementation, case: Scaled) -> None:
    """f(q, k, v, softmax_scale=c) = f(2^j q, k, v, softmax_scale=c 2^-j) = softmax(c q k^T) v: the scale
    multiplies q . k, whatever the queries' size (the scale law, eq. 12.9, on rectangular problems)."""
    flash.require("softmax_scale")
    problem, c, j = case
    first = flash.call(problem, softmax_scale=c)
    second = flash.call(problem.replace(q=problem.q * 2.0**j), softmax_scale=c * 2.0**-j)
    expected, _ = exact_attention(problem, c)
    for result, what in ((first, "out"), (second, f"out with q times 2^{j} and the scale over 2^{j}")):
        assert_close(result.out, expected, flash.bounds(problem, c, result.eps).out, what=f"{what} (scale {c})")


@pytest.mark.meta
def test_the_softmax_scale_catches_an_ignored_scale() -> None:
    law = test_the_softmax_scale_multiplies_the_logits
    assert_law_fails(law, flash=m.broken_flash(m.flash_ignores_softmax_scale))


@given(problem=rectangular_problems())
def test_causal_queries_see_the_keys_their_alignment_allows(flash: FlashImplementation, problem: FlashProblem) -> None:
    """With causal, query n sees key m iff m <= n + S - L (the declared alignment bottom-right: FlashAttention,
    decoding) or m <= n (top-left: torch's is_causal); L != S tells them apart. What a query that sees no key
    gets is a convention, judged by test_a_query_that_sees_no_key_gets_a_zero_output."""
    flash.require("causal")
    result = flash.call(problem, causal=True)
    scale = flash.default_scale(problem)
    seen = visibility(problem.L, problem.S, causal=True, alignment=flash.alignment)
    expected, _ = exact_attention(problem, scale, visible=seen)
    assert_close(judged(result.out, expected, seen), expected, flash.bounds(problem, scale, result.eps).out,
                 what=f"causal out aligned {flash.alignment} (L={problem.L}, S={problem.S})")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("bug", [m.flash_causal_top_left, m.sdpa_causal_bottom_right])
def test_causal_alignment_catches_the_other_alignment(bug: Any) -> None:
    assert_law_fails(test_causal_queries_see_the_keys_their_alignment_allows, flash=m.broken_flash(bug))


@pytest.mark.meta
def test_causal_alignment_leaves_a_query_that_sees_no_key_to_the_conventions() -> None:
    """No false alarm on jax's choice: a query that sees no key (L > S, bottom-right) gets the mean of all values."""
    law = test_causal_queries_see_the_keys_their_alignment_allows
    law(flash=correct.as_flash(correct.flash_mean_for_queries_without_keys))


@settings(max_examples=10)
@given(problem=rectangular_problems())
def test_each_causal_query_is_a_decoding_step_over_its_visible_prefix(
    flash: FlashImplementation, problem: FlashProblem
) -> None:
    """Under causal, out[:, n] equals query n's output over just the keys it sees: one decoding step (L = 1,
    causal) against k[:, :p], p = n + S - L + 1, under bottom-right; row n of the first n + 1 queries against the
    first n + 1 keys under top-left (when it sees any key): the cache's length is the query's position plus one."""
    flash.require("causal")
    full = flash.call(problem, causal=True)
    scale = flash.default_scale(problem)
    for n in range(problem.L):
        prefix = prefix_step(problem, n, flash.alignment)
        if prefix is None:
            continue
        step, row = prefix
        one = flash.call(step, causal=True)
        bound = flash.bounds(step, scale, one.eps) + flash.bounds(step, scale, full.eps)
        assert_close(one.out[:, row], full.out[:, n], bound.out[:, row],
                     what=f"query {n} over the {step.S} keys it sees against causal out[:, {n}]")  # fmt: skip


@pytest.mark.meta
def test_each_causal_query_is_a_decoding_step_catches_a_cache_off_by_one() -> None:
    law = test_each_causal_query_is_a_decoding_step_over_its_visible_prefix
    assert_law_fails(law, flash=m.broken_flash(m.flash_decoding_cache_off_by_one))
