"""Laws of the log-sum-exp (softmax_lse, returned with return_attn_probs=True) and of split-KV merging, the rule
split-KV decoding and ring attention rely on: attention over keys split in two, each part giving (out, lse), merged
by lse = log(exp(lse_a) + exp(lse_b)), out = exp(lse_a - lse) out_a + exp(lse_b - lse) out_b, equals attention over
all the keys.

Under causal, windows and ALiBi the lse laws judge the queries that see a key; what a query that sees no key gets
is a convention (its own law, category `conventions`): out = 0, and lse = +inf (FlashAttention's non-split
kernel), -inf (the log of an empty sum: its split path, this reference) or anything else. Under causal ALiBi
FlashAttention adds +slope m rather than -slope |rel|: its lse is higher by slope (n + S - L), which the laws
accept (properties/helpers/FLASH-CONVENTIONS.md). softmax_lse is judged by the epsilon of its own dtype
(FlashAttention's is float32 whatever the inputs').

The kernel laws run on the `flash` fixture; the merge law on the `merge` fixture (--merge TARGET, else the bundled
attention.flash:merge_attention_states), fed parts computed here in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, reject

from properties.catalogues.mistakes import kernels as m
from properties.helpers.checks import LawViolation, assert_close, observe
from properties.helpers.flash_convention import (
    FlashImplementation,
    FlashProblem,
    MergeImplementation,
    closest,
    distances,
    exact_attention,
    row_bounds,
    sees_a_key_under_every,
    window_readings,
)
from properties.helpers.flash_strategies import (
    MaskedLse,
    MaskedParts,
    Masking,
    Parts,
    Shifted,
    Split,
    Windowed,
    masked_merge_cases,
    merge_cases,
    problems_with_empty_rows,
    problems_with_logit_shifts,
    problems_with_masks,
    problems_with_split_points,
)
from properties.helpers.implementations import SET_ASIDE, TargetRaised
from properties.helpers.meta import assert_law_fails
from properties.helpers.tolerances import FLOAT64_EPS

# One category marker a law (semantics, or conventions for the empty row), not the module's.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


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


def seen_by_every_reading(problem: FlashProblem, masking: Masking, alignment: str) -> np.ndarray:
    """[n] True iff query n sees a key under every accepted reading of the window (window_readings): the queries
    whose lse is judged."""
    return sees_a_key_under_every(
        window_readings(problem.L, problem.S, masking.window, causal=masking.causal, alignment=alignment)
    )


def alibi_magnitude(problem: FlashProblem, slopes: np.ndarray | None) -> float:
    """A bound on |bias| of either ALiBi form: slope |rel| <= slope (L + S), and FlashAttention's causal +slope m
    <= slope S, with its lse raised by at most slope (L + S)."""
    return 0.0 if slopes is None else float(np.abs(slopes).max(initial=0.0)) * (problem.L + problem.S)


@pytest.mark.semantics
@given(case=problems_with_logit_shifts())
def test_adding_a_constant_to_every_logit_adds_it_to_the_lse_and_changes_no_output(
    flash: FlashImplementation, case: Shifted
) -> None:
    """With every logit s_nm raised by c (a column c / scale in q, ones in k), softmax_lse_n = log sum_m
    exp(s_nm) rises by exactly c and out does not change: lse is the natural log-sum-exp of the logits (also under
    causal, windows and ALiBi, the options the target takes; the lse of the queries that see a key)."""
    flash.require("return_attn_probs", "softmax_scale")
    problem, c, masking = case
    masking = masking.supported(flash.takes)
    scale = flash.default_scale(problem)
    shifted = with_a_constant_column(problem, c, scale)
    options = masking.keywords()
    before, after = (
        flash.call(problem, lse=True, softmax_scale=scale, **options),
        flash.call(shifted, lse=True, softmax_scale=scale, **options),
    )
    assert before.lse is not None and after.lse is not None
    offset = alibi_magnitude(problem, masking.slopes)
    # Each call is one evaluation (row_bounds; the lse at the epsilon of its own dtype), the ALiBi bias within l_n.
    bound = flash.bounds(problem, scale, before.eps, offset=offset) + flash.bounds(
        shifted, scale, after.eps, offset=offset
    )
    lse_bound = (flash.bounds(problem, scale, before.lse_eps, offset=offset)
                 + flash.bounds(shifted, scale, after.lse_eps, offset=offset)).lse  # fmt: skip
    assert_close(after.out, before.out, bound.out, what=f"out with every logit raised by {c} ({masking.keywords()})")
    seen = np.broadcast_to(seen_by_every_reading(problem, masking, flash.alignment), before.lse.shape)
    assert_close(after.lse[seen] - c, before.lse[seen], lse_bound[seen],
                 what=f"softmax_lse - {c} with every logit raised by {c} ({masking.keywords()})")  # fmt: skip


@pytest.mark.meta
def test_adding_a_constant_to_every_logit_catches_an_lse_in_base_2() -> None:
    law = test_adding_a_constant_to_every_logit_adds_it_to_the_lse_and_changes_no_output
    assert_law_fails(law, flash=m.broken_flash(m.flash_lse_in_base_2))


@pytest.mark.semantics
@given(case=problems_with_masks())
def test_the_lse_is_the_log_sum_exp_of_the_visible_logits(flash: FlashImplementation, case: MaskedLse) -> None:
    """softmax_lse_n = log sum_{m visible to n} exp(s_nm) over the logits s = c tanh(scale q.k / c) - slope |rel|
    (computed here in float64), under causal, windows, ALiBi and softcap (those the target takes), for every query
    that sees a key. Under causal ALiBi, lse_n + slope (n + offset) is accepted as well: FlashAttention adds
    +slope m, the same weights with a constant of the row."""
    flash.require("return_attn_probs")
    problem, masking, softcap = case
    masking = masking.supported(flash.takes)
    softcap = softcap if flash.takes("softcap") else 0.0
    options = {**masking.keywords(), **({"softcap": softcap} if softcap else {})}
    result = flash.call(problem, lse=True, **options)
    assert result.lse is not None
    scale = flash.default_scale(problem)
    bias = None
    if masking.slopes is not None:
        per_head = np.broadcast_to(masking.slopes, (problem.B, problem.H))[:, :, None]
        bias = -per_head[..., None] * distances(problem.L, problem.S, flash.alignment)
    readings = window_readings(problem.L, problem.S, masking.window, causal=masking.causal, alignment=flash.alignment)
    candidates = [exact_attention(problem, scale, visible=seen, bias=bias, softcap=softcap)[1] for seen in readings]
    if masking.slopes is not None:  # FlashAttention's causal form: + slope (n + offset), offset S - L or 0
        offset = problem.S - problem.L if flash.alignment == "bottom-right" else 0
        candidates += [lse + per_head * (np.arange(problem.L) + offset) for lse in candidates]
    magnitude = alibi_magnitude(problem, masking.slopes)
    # One evaluation by the target (the lse at its dtype's epsilon) and one by the law, bias magnitude within l_n.
    bound = flash.bounds(problem, scale, result.lse_eps, offset=magnitude).lse
    seen = np.broadcast_to(seen_by_every_reading(problem, masking, flash.alignment), result.lse.shape)
    expected = closest(result.lse, candidates, bound, axis=None)
    assert_close(result.lse[seen], expected[seen], bound[seen],
                 what=f"softmax_lse with {options} (L={problem.L}, S={problem.S}, {flash.alignment})")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("bug", [m.flash_lse_over_all_keys, m.flash_lse_without_the_alibi_bias, m.flash_lse_in_base_2])
def test_the_lse_of_the_visible_logits_catches(bug: Any) -> None:
    assert_law_fails(test_the_lse_is_the_log_sum_exp_of_the_visible_logits, flash=m.broken_flash(bug))


EMPTY_ROW_LSE = {
    "+inf": "lse = +inf (FlashAttention's non-split kernel)",
    "-inf": "lse = -inf (the log of an empty sum: FlashAttention's split path, this reference)",
    "other": "another lse",
}


@pytest.mark.conventions
@given(case=problems_with_empty_rows())
def test_a_query_that_sees_no_key_gets_a_zero_output(flash: FlashImplementation, case: Windowed) -> None:
    """Convention: a query that sees no key (its window holds none) gets out = 0 exactly, as FlashAttention's kernel
    and this reference give; its softmax_lse is reported, not judged: +inf (FlashAttention's non-split kernel),
    -inf (the log of an empty sum) or another value. The other lse laws judge only the queries that see a key."""
    flash.require("window_size")
    problem, window = case
    asks = flash.takes("return_attn_probs")
    result = flash.call(problem, lse=asks, window_size=window)
    readings = window_readings(problem.L, problem.S, window, alignment=flash.alignment)
    unseen = np.logical_and.reduce([~reading.any(axis=1) for reading in readings])
    if not unseen.any():
        return
    if result.lse is not None:
        for value in result.lse[:, :, unseen].ravel():
            observe(EMPTY_ROW_LSE["+inf" if value == np.inf else "-inf" if value == -np.inf else "other"])
    rows = result.out[:, unseen]
    if not (rows == 0).all():
        bad = tuple(int(i) for i in np.argwhere(rows != 0)[0])
        queries = np.flatnonzero(unseen).tolist()
        raise LawViolation(f"the queries {queries} see no key under window_size={window}; expected out = 0, got "
                           f"{rows[bad]!r} at out[:, {queries[bad[1]]}] (index {bad})")  # fmt: skip


@pytest.mark.meta
def test_a_query_that_sees_no_key_catches_nan() -> None:
    law = test_a_query_that_sees_no_key_gets_a_zero_output
    assert_law_fails(law, flash=m.broken_flash(m.flash_nan_for_queries_without_keys))


def without_keys(lse: np.ndarray, problem: FlashProblem) -> np.ndarray:
    """The lse of a part, -inf where the part holds no key: whatever a kernel returns there (+inf, -inf: a
    convention), the merge rule weighs such a part 0."""
    return np.full_like(lse, -np.inf) if problem.S == 0 else lse


@pytest.mark.semantics
@given(case=problems_with_split_points())
def test_two_key_splits_merged_by_their_lse_equal_attention_over_all_keys(
    flash: FlashImplementation, case: Split
) -> None:
    """f(q, k[:p], v[:p]) and f(q, k[p:], v[p:]), each (out, lse), merged by the log-sum-exp rule (here, in
    float64) equal f(q, k, v), for every split point p (no mask; an empty part weighs 0 whatever its lse)."""
    flash.require("return_attn_probs")
    problem, p = case
    whole = flash.call(problem, lse=True)
    parts = [problem.keys(0, p), problem.keys(p, problem.S)]
    try:
        a, b = (flash.call(part, lse=True) for part in parts)
    except TargetRaised:
        if 0 not in (p, problem.S - p):
            raise
        # No key at all refused (FlexAttention's IndexError, a kernel's ValueError): a choice at the edge, not a
        # wrong merge; the split is set aside, as the empty-input law sets aside an empty input refused.
        SET_ASIDE["the kernel raised on a part with no key (a choice at the edge)"] += 1
        reject()
    assert a.lse is not None and b.lse is not None
    merged = law_merge(a.out, without_keys(a.lse, parts[0]), b.out, without_keys(b.lse, parts[1]))
    scale = flash.default_scale(problem)
    # The whole call, and the two parts (each weight's error is its lse's, at the lse's epsilon, and its out's).
    bound = flash.bounds(problem, scale, whole.eps) + flash.bounds(problem, scale, max(a.lse_eps, b.lse_eps)) * 2
    assert_close(merged, whole.out, bound.out, what=f"the merge of keys [0, {p}) and [{p}, {problem.S})")


@pytest.mark.meta
def test_two_key_splits_merged_catch_an_lse_in_base_2() -> None:
    law = test_two_key_splits_merged_by_their_lse_equal_attention_over_all_keys
    assert_law_fails(law, flash=m.broken_flash(m.flash_lse_in_base_2))


def merge_bounds(problem: FlashProblem, scale: float, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Tolerances of a merge law's out and lse: four float64 evaluations' row_bounds (the two parts, the merge, the
    law's whole) and the shift. lse_part + shift is rounded at the magnitude of the shift, so the difference
    lse_part - lse that sets a part's weight is off by up to 2 u (|shift| + 1) beyond row_bounds (the merged lse is
    rounded likewise), each weight relatively by as much; out, a combination of outs no larger than max |v| with
    weights summing to 1, by max |v| times that. Twice it: 4 u |shift| max |v| on out, 4 u |shift| on lse."""
    bound = row_bounds(problem, scale, FLOAT64_EPS) * 4
    drift = 4 * abs(shift) * FLOAT64_EPS
    return bound.out + drift * float(np.abs(problem.v).max(initial=0.0)), bound.lse + drift


@pytest.mark.semantics
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
    out_bound, lse_bound = merge_bounds(problem, scale, shift)
    assert_close(out, expected, out_bound, what=f"the merged out of keys [0, {p}) and [{p}, {problem.S})")
    finite = np.isfinite(expected_lse)
    assert_close(lse[finite] - shift, expected_lse[finite], lse_bound[finite], what="the merged lse")


@pytest.mark.semantics
@given(case=masked_merge_cases())
def test_a_merge_weighs_a_part_that_hides_every_key_from_a_query_zero_for_that_query(
    merge: MergeImplementation, case: MaskedParts
) -> None:
    """Under causal and windows a query may see no key in one part (its lse there -inf, its out 0) and keys in the
    other: the merge weighs that part 0 for that query alone and equals attention over all its visible keys, out
    and lse (shifted up to +-800). A query that sees no key in either part is a convention, not judged here."""
    problem, p, shift, causal, window = case
    scale = 1 / np.sqrt(problem.D)
    visible = window_readings(problem.L, problem.S, window, causal=causal)[0]
    parts = [exact_attention(problem.keys(0, p), scale, visible=visible[:, :p]),
             exact_attention(problem.keys(p, problem.S), scale, visible=visible[:, p:])]  # fmt: skip
    (out_a, lse_a), (out_b, lse_b) = ((out, lse + shift) for out, lse in parts)
    out, lse = merge.call(out_a, lse_a, out_b, lse_b)
    expected, expected_lse = exact_attention(problem, scale, visible=visible)
    seen = np.asarray(visible.any(axis=1))  # (L,): the queries judged
    rows, columns = np.broadcast_to(seen[None, :, None, None], out.shape), np.broadcast_to(seen, lse.shape)
    out_bound, lse_bound = merge_bounds(problem, scale, shift)
    what = f"keys [0, {p}) and [{p}, {problem.S}) under causal={causal}, window_size={window}"
    assert_close(out[rows], expected[rows], out_bound[rows], what=f"the merged out of {what}")
    assert_close(lse[columns] - shift, expected_lse[columns], lse_bound[columns], what=f"the merged lse of {what}")


@pytest.mark.meta
def test_a_merge_of_parts_that_hide_keys_catches_special_cases_for_empty_parts_only() -> None:
    law = test_a_merge_weighs_a_part_that_hides_every_key_from_a_query_zero_for_that_query
    assert_law_fails(law, merge=m.broken_merge(m.merge_special_casing_only_empty_parts))


@pytest.mark.meta
@pytest.mark.parametrize("bug", [m.merge_without_the_max_shift, m.merge_with_the_weights_swapped])
def test_a_merge_catches(bug: Any) -> None:
    assert_law_fails(test_a_merge_of_two_key_splits_equals_attention_over_all_keys, merge=m.broken_merge(bug))
