"""Laws of packed variable-length batches (flash_attn_varlen_func: cu_seqlens_q, cu_seqlens_k, max_seqlen_*):
sequence b is q[cu_q[b]:cu_q[b+1]] against k, v[cu_k[b]:cu_k[b+1]], alone, with causal and windows aligned by its own
lengths and its own ALiBi slopes (row b of a (batch, nheads) array), softcap and sinks. The strategy packs 2 to 4
sequences of lengths 0 (empty), small and at block sizes (15, 16, 17, 33).

They run on the `varlen` fixture: --varlen TARGET, else the bundled attention.flash:flash_attn_varlen_func (numpy,
float64; causal and windows bottom-right, as FlashAttention's varlen aligns them). Options a packed target does not
name in its signature are left out of the call (and of the expected value).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from properties.catalogues.mistakes import kernels as m
from properties.helpers.checks import assert_close
from properties.helpers.flash_convention import (
    FlashProblem,
    VarlenImplementation,
    closest,
    distances,
    exact_attention,
    judged,
    row_bounds,
    sees_a_key_under_every,
    window_readings,
)
from properties.helpers.flash_strategies import (
    Packed,
    PackedChange,
    packed_batches,
    packed_batches_with_a_changed_sequence,
    packed_batches_with_score_modifications,
    varlen_keywords,
)
from properties.helpers.meta import assert_law_fails
from properties.helpers.tolerances import FLOAT64_EPS

pytestmark = pytest.mark.semantics
FEW = settings(max_examples=10)


def alone(packed: Packed, b: int) -> tuple[FlashProblem, float, list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """Sequence b computed alone in float64 (exact_attention, with its own options): its problem, scale, the accepted
    readings of the window (window_readings with max_seqlen_k, the limit of FlashAttention 2's packed host code) and
    (out (1, L_b, H, D_v), lse (1, H, L_b)) under each."""
    problem = packed.sequence(b)
    scale = 1 / np.sqrt(problem.D)
    slopes = packed.slopes_of(b)
    bias = None if slopes is None else -slopes[None, :, None, None] * distances(problem.L, problem.S)
    readings = window_readings(problem.L, problem.S, packed.window, causal=packed.causal,
                               limit=packed.max_seqlen_k)  # fmt: skip
    results = [
        exact_attention(problem, scale, visible=seen, bias=bias, softcap=packed.softcap, sinks=packed.sinks)
        for seen in readings
    ]
    return problem, scale, readings, results


def expected_rows(packed: Packed, b: int) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """Sequence b's outputs computed alone under each accepted reading of the window (`alone`), one evaluation's
    bound, and those readings."""
    problem, scale, readings, results = alone(packed, b)
    slopes = packed.slopes_of(b)
    offset = 0.0  # max |bias|: the largest slope times the longest distance
    if slopes is not None:
        offset = float(np.abs(slopes).max(initial=0.0) * distances(problem.L, problem.S).max(initial=0.0))
    # One evaluation of sequence b by the target and one by the law (row_bounds; ALiBi within l_n, a sink one key).
    bound = row_bounds(problem, scale, FLOAT64_EPS, offset=offset, sinks=packed.sinks) * 2
    return [out for out, _ in results], bound.out, readings


def check_packing(varlen: VarlenImplementation, packed: Packed) -> None:
    """out[cu_q[b]:cu_q[b+1]] equals sequence b run alone, for every b."""
    out = varlen.call(packed.q, packed.k, packed.v, **varlen_keywords(packed))
    for b in range(packed.batch):
        candidates, bound, readings = expected_rows(packed, b)
        q0, q1 = int(packed.cu_seqlens_q[b]), int(packed.cu_seqlens_q[b + 1])
        expected = closest(out[None, q0:q1], candidates, bound)[0]
        options = {k: v for k, v in varlen_keywords(packed).items() if not k.startswith(("cu_", "max_"))}
        assert_close(judged(out[q0:q1], expected, *readings), expected, bound[0],
                     what=f"sequence {b} (L_b={q1 - q0}, S_b={packed.sequence(b).S}, {options})")  # fmt: skip


@FEW
@given(packed=packed_batches())
def test_packing_equals_running_each_sequence_alone(varlen: VarlenImplementation, packed: Packed) -> None:
    """out[cu_q[b]:cu_q[b+1]] is attention of sequence b's queries over its own keys alone, causal and windows
    aligned bottom-right by its own lengths L_b, S_b (FlashAttention's varlen), for every b, empty sequences
    included (they give no rows; what a query that sees no key gets is a convention, judged apart). Options the
    target does not take are left out; FlashAttention 2's reading of a side of -1 or >= max_seqlen_k is accepted as
    in the window laws."""
    check_packing(varlen, packed.supported(varlen.takes))


@pytest.mark.meta
@pytest.mark.parametrize("bug", [m.varlen_sees_the_previous_last_block, m.varlen_aligned_by_the_longest_sequences])
def test_packing_catches(bug: Any) -> None:
    law = test_packing_equals_running_each_sequence_alone
    assert_law_fails(law, varlen=m.broken_varlen(bug))


@FEW
@given(packed=packed_batches_with_score_modifications())
def test_packing_with_score_modifications_equals_running_each_sequence_alone(
    varlen: VarlenImplementation, packed: Packed
) -> None:
    """With ALiBi (one slope a head, or a sequence and head: sequence b takes row b), softcap and sinks, packing
    still equals running each sequence alone with its own options (causal or not). Options the target does not
    take are left out; a target that takes none of the three skips."""
    if not any(varlen.takes(name) for name in ("alibi_slopes", "softcap", "sinks")):
        pytest.skip("the packed target takes no alibi_slopes, softcap or sinks (by its signature)")
    check_packing(varlen, packed.supported(varlen.takes))


@pytest.mark.meta
def test_packing_with_score_modifications_catches_the_first_sequences_slopes() -> None:
    law = test_packing_with_score_modifications_equals_running_each_sequence_alone
    assert_law_fails(law, varlen=m.broken_varlen(m.varlen_alibi_slopes_of_the_first_sequence))


@FEW
@given(case=packed_batches_with_a_changed_sequence())
def test_changing_one_sequence_changes_only_its_own_outputs(varlen: VarlenImplementation, case: PackedChange) -> None:
    """Replacing the q, k, v of sequence b leaves the output rows of every other sequence unchanged."""
    packed, b, changed = case
    packed, changed = packed.supported(varlen.takes), changed.supported(varlen.takes)
    before = varlen.call(packed.q, packed.k, packed.v, **varlen_keywords(packed))
    after = varlen.call(changed.q, changed.k, changed.v, **varlen_keywords(changed))
    for j in range(packed.batch):
        if j == b:
            continue
        problem = packed.sequence(j)
        bound = row_bounds(problem, 1 / np.sqrt(problem.D), FLOAT64_EPS) * 2
        q0, q1 = int(packed.cu_seqlens_q[j]), int(packed.cu_seqlens_q[j + 1])
        assert_close(after[q0:q1], before[q0:q1], bound.out[0], what=f"sequence {j} after changing sequence {b}")


@pytest.mark.meta
def test_changing_one_sequence_catches_a_sequence_seeing_the_previous_last_block() -> None:
    law = test_changing_one_sequence_changes_only_its_own_outputs
    assert_law_fails(law, varlen=m.broken_varlen(m.varlen_sees_the_previous_last_block))


def expected_lse(packed: Packed, b: int, eps: float) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Sequence b's softmax_lse computed alone, (H, L_b), under each accepted reading of the window (`alone`) and,
    with ALiBi, FlashAttention's +slope m form as well (higher by slope (n + S_b - L_b): the same weights); the bound
    of one evaluation at `eps` plus the law's own; and which queries see a key under every reading."""
    problem, scale, readings, results = alone(packed, b)
    L, S = problem.L, problem.S
    slopes = packed.slopes_of(b)
    candidates = [lse[0] for _, lse in results]
    magnitude = 0.0
    if slopes is not None:
        candidates += [lse + slopes[:, None] * (np.arange(L) + S - L) for lse in candidates]
        magnitude = float(np.abs(slopes).max(initial=0.0)) * (L + S)  # |bias| of either form, as in test_lse
    bounds = row_bounds(problem, scale, eps, offset=magnitude, sinks=packed.sinks) + row_bounds(
        problem, scale, FLOAT64_EPS, offset=magnitude, sinks=packed.sinks
    )
    return candidates, bounds.lse[0], sees_a_key_under_every(readings)


@FEW
@given(packed=st.one_of(packed_batches(), packed_batches_with_score_modifications()))
def test_each_packed_sequences_lse_is_the_log_sum_exp_of_its_own_logits(
    varlen: VarlenImplementation, packed: Packed
) -> None:
    """softmax_lse of sequence b, for each query that sees a key, is log sum_{m visible} exp(s_nm) over sequence b's
    own keys alone: aligned by its own lengths, with its own ALiBi slopes, softcap and sinks (those the target
    takes). It may come as (nheads, total_q) or padded by sequence as (batch, nheads, max_seqlen_q), both
    FlashAttention 2's; under ALiBi FlashAttention's +slope m form is accepted, as in the lse laws. What a query
    that sees no key gets is a convention."""
    if not varlen.takes("return_attn_probs"):
        pytest.skip("the packed target takes no return_attn_probs (by its signature): it returns no softmax_lse")
    packed = packed.supported(varlen.takes)
    _, lses, eps = varlen.call_with_lse(packed.q, packed.k, packed.v, **varlen_keywords(packed))
    for b in range(packed.batch):
        candidates, bound, seen = expected_lse(packed, b, eps)
        shown = np.broadcast_to(seen, lses[b].shape)
        expected = closest(lses[b], candidates, bound, axis=None)
        options = {k: v for k, v in varlen_keywords(packed).items() if not k.startswith(("cu_", "max_"))}
        what = f"softmax_lse of sequence {b} (L_b={lses[b].shape[1]}, S_b={packed.sequence(b).S}, {options})"
        assert_close(lses[b][shown], expected[shown], bound[shown], what=what)


@pytest.mark.meta
def test_each_packed_sequences_lse_catches_an_lse_over_every_packed_key() -> None:
    law = test_each_packed_sequences_lse_is_the_log_sum_exp_of_its_own_logits
    assert_law_fails(law, varlen=m.broken_varlen(m.varlen_lse_over_every_packed_key))
