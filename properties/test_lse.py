"""Laws of the log-sum-exp (softmax_lse, returned with return_attn_probs=True) and of split-KV merging, the rule
split-KV decoding and ring attention rely on: attention over keys split in two, each part giving (out, lse), merged
by lse = log(exp(lse_a) + exp(lse_b)), out = exp(lse_a - lse) out_a + exp(lse_b - lse) out_b, equals attention over
all the keys.

The kernel laws run on the `flash` fixture; the merge law on the `merge` fixture (--merge TARGET, else the bundled
attention.flash:merge_attention_states), fed parts computed here in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given

from properties.catalogues.mistakes import kernels as m
from properties.helpers.checks import assert_close
from properties.helpers.flash_convention import (
    FlashImplementation,
    FlashProblem,
    MergeImplementation,
    exact_attention,
    row_bounds,
)
from properties.helpers.flash_strategies import (
    Parts,
    Shifted,
    Split,
    merge_cases,
    problems_with_logit_shifts,
    problems_with_split_points,
)
from properties.helpers.meta import assert_law_fails
from properties.helpers.tolerances import FLOAT64_EPS

pytestmark = [pytest.mark.semantics, pytest.mark.filterwarnings("ignore:Generating overly large repr")]


def with_a_constant_column(problem: FlashProblem, shift: float, scale: float) -> FlashProblem:
    """q gains a column shift / scale and k a column of ones: every logit gains exactly `shift` (at the scale)."""
    B, L, H, _ = problem.q.shape
    q = np.concatenate([problem.q, np.full((B, L, H, 1), shift / scale)], axis=-1)
    k = np.concatenate([problem.k, np.ones((*problem.k.shape[:3], 1))], axis=-1)
    return problem.replace(q=q, k=k)


def law_merge(out_a: np.ndarray, lse_a: np.ndarray, out_b: np.ndarray, lse_b: np.ndarray) -> np.ndarray:
    """The log-sum-exp rule in float64 (parts with lse = -inf weigh 0)."""
    lse = np.logaddexp(lse_a, lse_b)
    seen = np.isfinite(lse)
    wa, wb = (
        np.where(seen, np.exp(np.where(seen, x - np.where(seen, lse, 0.0), -np.inf)), 0.0) for x in (lse_a, lse_b)
    )
    share_a, share_b = (np.swapaxes(w, -1, -2)[..., None] for w in (wa, wb))
    return np.asarray(share_a * np.nan_to_num(out_a) + share_b * np.nan_to_num(out_b))


@given(case=problems_with_logit_shifts())
def test_adding_a_constant_to_every_logit_adds_it_to_the_lse_and_changes_no_output(
    flash: FlashImplementation, case: Shifted
) -> None:
    """With every logit s_nm raised by c (a column c / scale in q, ones in k), softmax_lse_n = log sum_m
    exp(s_nm) rises by exactly c and out does not change: lse is the natural log-sum-exp of the logits."""
    flash.require("return_attn_probs", "softmax_scale")
    problem, c = case
    scale = flash.default_scale(problem)
    shifted = with_a_constant_column(problem, c, scale)
    before, after = (
        flash.call(problem, lse=True, softmax_scale=scale),
        flash.call(shifted, lse=True, softmax_scale=scale),
    )
    assert before.lse is not None and after.lse is not None
    bound = flash.bounds(problem, scale, before.eps) + flash.bounds(shifted, scale, after.eps)
    assert_close(after.out, before.out, bound.out, what=f"out with every logit raised by {c}")
    assert_close(after.lse - c, before.lse, bound.lse, what=f"softmax_lse - {c} with every logit raised by {c}")


@pytest.mark.meta
def test_adding_a_constant_to_every_logit_catches_an_lse_in_base_2() -> None:
    law = test_adding_a_constant_to_every_logit_adds_it_to_the_lse_and_changes_no_output
    assert_law_fails(law, flash=m.broken_flash(m.flash_lse_in_base_2))


@given(case=problems_with_split_points())
def test_two_key_splits_merged_by_their_lse_equal_attention_over_all_keys(
    flash: FlashImplementation, case: Split
) -> None:
    """f(q, k[:p], v[:p]) and f(q, k[p:], v[p:]), each (out, lse), merged by the log-sum-exp rule (here, in
    float64) equal f(q, k, v), for every split point p (no mask; an empty part has lse = -inf and weight 0)."""
    flash.require("return_attn_probs")
    problem, p = case
    whole = flash.call(problem, lse=True)
    a, b = flash.call(problem.keys(0, p), lse=True), flash.call(problem.keys(p, problem.S), lse=True)
    assert a.lse is not None and b.lse is not None
    merged = law_merge(a.out, a.lse, b.out, b.lse)
    scale = flash.default_scale(problem)
    bound = flash.bounds(problem, scale, whole.eps) + flash.bounds(problem, scale, max(a.eps, b.eps)) * 2
    assert_close(merged, whole.out, bound.out, what=f"the merge of keys [0, {p}) and [{p}, {problem.S})")


@pytest.mark.meta
def test_two_key_splits_merged_catch_an_lse_in_base_2() -> None:
    law = test_two_key_splits_merged_by_their_lse_equal_attention_over_all_keys
    assert_law_fails(law, flash=m.broken_flash(m.flash_lse_in_base_2))


@given(case=merge_cases())
def test_a_merge_of_two_key_splits_equals_attention_over_all_keys(merge: MergeImplementation, case: Parts) -> None:
    """merge(out_a, lse_a, out_b, lse_b) = (out, lse) of attention over all keys, for parts computed (in float64)
    over keys [0, p) and [p, S), any p, with lse up to +-800 (where exp overflows or underflows)."""
    problem, p, shift = case
    scale = 1 / np.sqrt(problem.D)
    parts = [exact_attention(part, scale) for part in (problem.keys(0, p), problem.keys(p, problem.S))]
    (out_a, lse_a), (out_b, lse_b) = ((out, lse + shift) for out, lse in parts)
    out, lse = merge.call(out_a, lse_a, out_b, lse_b)
    expected, expected_lse = exact_attention(problem, scale)
    bound = row_bounds(problem, scale, FLOAT64_EPS) * 4
    assert_close(out, expected, bound.out, what=f"the merged out of keys [0, {p}) and [{p}, {problem.S})")
    finite = np.isfinite(expected_lse)
    assert_close(lse[finite] - shift, expected_lse[finite], bound.lse[finite] + abs(shift) * 4 * FLOAT64_EPS,
                 what="the merged lse")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("bug", [m.merge_without_the_max_shift, m.merge_with_the_weights_swapped])
def test_a_merge_catches(bug: Any) -> None:
    assert_law_fails(test_a_merge_of_two_key_splits_equals_attention_over_all_keys, merge=m.broken_merge(bug))
