"""Laws of score modifications: soft-capping (softcap: s -> c tanh(s / c), after the scale, as FlashAttention and
Gemma 2), ALiBi (alibi_slopes: s - slope |rel(n, m)|, one slope a head or a batch element and head) and attention
sinks (sinks: one logit a head that joins every denominator and no value). For each: the limit that turns it off
gives plain attention, and an explicit equivalent gives the same output (the capped logits and the ALiBi bias
computed here in float64; a sink as one more key with a zero value, built from the inputs, oracle-free).

They run on the `flash` fixture (properties/test_cross_attention.py says which target).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given

from properties.catalogues import correct
from properties.catalogues.mistakes import kernels as m
from properties.helpers.checks import LawViolation, assert_close
from properties.helpers.flash_convention import (
    FlashImplementation,
    FlashProblem,
    distances,
    exact_attention,
    judged,
    prefix_step,
    visibility,
)
from properties.helpers.flash_strategies import (
    Capped,
    Sloped,
    Sunk,
    problems_with_alibi,
    problems_with_sinks,
    problems_with_softcaps,
    rectangular_problems,
)
from properties.helpers.meta import assert_law_fails

pytestmark = [pytest.mark.semantics, pytest.mark.filterwarnings("ignore:Generating overly large repr")]
# A cap, a slope and a sink far enough that they change no float64 logit: c tanh(s / c) = s (1 - s^2 / 3c^2 + ...)
# is s within |s|^3 / 3c^2 <= u |s| once c >= |s| / sqrt(3u), and exp(-1e4) underflows to 0 against exp(0).
HUGE_CAP = 1e12
SUNK = -1e4


@given(case=problems_with_softcaps())
def test_soft_capped_attention_equals_the_capped_logits_as_a_bias(flash: FlashImplementation, case: Capped) -> None:
    """f(softcap=c) = softmax(c tanh(s q k^T / c)) v: the capped logits (computed here in float64) are the scores;
    the cap applies after the scale."""
    flash.require("softcap")
    problem, c = case
    result = flash.call(problem, softcap=c)
    scale = flash.default_scale(problem)
    expected, _ = exact_attention(problem, scale, softcap=c)
    assert_close(result.out, expected, flash.bounds(problem, scale, result.eps).out, what=f"out with softcap={c}")


@pytest.mark.meta
@pytest.mark.parametrize(
    "bug", [m.flash_softcap_before_the_scale, m.flash_softcap_ignored, m.flash_score_modification_path_unscaled]
)
def test_soft_capped_attention_catches(bug: Any) -> None:
    assert_law_fails(test_soft_capped_attention_equals_the_capped_logits_as_a_bias, flash=m.broken_flash(bug))


@given(problem=rectangular_problems())
def test_a_huge_softcap_gives_plain_attention(flash: FlashImplementation, problem: FlashProblem) -> None:
    """f(softcap=1e12) = f(): as c -> infinity, c tanh(s / c) -> s (here within float64's rounding of s)."""
    flash.require("softcap")
    capped, plain = flash.call(problem, softcap=HUGE_CAP), flash.call(problem)
    bound = flash.bounds(problem, flash.default_scale(problem), max(capped.eps, plain.eps)) * 2
    assert_close(capped.out, plain.out, bound.out, what=f"out with softcap={HUGE_CAP:g} against no cap")


@pytest.mark.meta
def test_a_huge_softcap_catches_an_unscaled_path() -> None:
    law = test_a_huge_softcap_gives_plain_attention
    assert_law_fails(law, flash=m.broken_flash(m.flash_score_modification_path_unscaled))


def with_one_hot_values(problem: FlashProblem) -> FlashProblem:
    """The problem with v = the identity over the keys (D_v = S, v[b, m, h] = e_m): out[b, n, h, m] is then the
    weight of key m for query n, read from the output (no law judges attn_probs: FlashAttention returns
    meaningless ones with dropout_p = 0)."""
    B, S, H_k = problem.k.shape[:3]
    v = np.broadcast_to(np.eye(S)[None, :, None, :], (B, S, H_k, S))
    return problem.replace(v=v)


@given(case=problems_with_softcaps())
def test_soft_capped_weights_differ_by_at_most_a_factor_exp_2c(flash: FlashImplementation, case: Capped) -> None:
    """Capped logits lie in (-c, c), so any two weights of one query differ by a factor of at most exp(2c):
    a_nm <= exp(2c) a_nj (the weights read as the outputs of one-hot values, v = the identity over the keys)."""
    flash.require("softcap")
    problem, c = case
    if problem.S == 0:
        return
    one_hot = with_one_hot_values(problem)
    result = flash.call(one_hot, softcap=c)
    weights = result.out  # (B, L, H, S): out[b, n, h, m] = a_nm
    # Each weight is the output of a one-hot value (v_d = 1), off by at most delta = row_bounds' out bound (the
    # logits bounded by l_n, |c tanh| <= l_n, plus the law's float64 side); the true ratio is at most exp(2c), so
    # a computed high - delta <= exp(2c) (low + delta) whatever the rounding.
    delta = flash.bounds(one_hot, flash.default_scale(problem), result.eps).out.max(axis=-1)
    low, high = weights.min(axis=-1), weights.max(axis=-1)
    bad = high - delta > np.exp(2 * c) * (low + delta)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise LawViolation(
            f"weights of query {index[1]} (batch {index[0]}, head {index[2]}) range from "
            f"{low[index]:.3g} to {high[index]:.3g}: a ratio beyond exp(2c) = {np.exp(2 * c):.3g} "
            f"(rounding allowed: {delta[index]:.3g})"
        )


@pytest.mark.meta
def test_capped_weights_within_exp_2c_catch_an_ignored_cap() -> None:
    law = test_soft_capped_weights_differ_by_at_most_a_factor_exp_2c
    assert_law_fails(law, flash=m.broken_flash(m.flash_softcap_ignored))


def alibi_bias(problem: FlashProblem, slopes: np.ndarray, alignment: str) -> np.ndarray:
    """-slope |rel(n, m)| of shape (B, H, L, S), in float64."""
    per_head = np.broadcast_to(slopes, (problem.B, problem.H))
    return np.asarray(-per_head[:, :, None, None] * distances(problem.L, problem.S, alignment))


@given(case=problems_with_alibi())
def test_alibi_equals_the_explicit_distance_bias(flash: FlashImplementation, case: Sloped) -> None:
    """f(alibi_slopes=slope) = softmax(s q k^T - slope |n - m + S - L|) v (bottom-right; |n - m| top-left), with
    and without causal: ALiBi is a bias of the distance, charged the same on both sides."""
    flash.require("alibi_slopes", *(("causal",) if case.causal else ()))
    problem, slopes, causal = case
    result = (
        flash.call(problem, alibi_slopes=slopes, causal=causal) if causal else flash.call(problem, alibi_slopes=slopes)
    )
    scale = flash.default_scale(problem)
    bias = alibi_bias(problem, slopes, flash.alignment)
    seen = visibility(problem.L, problem.S, causal=causal, alignment=flash.alignment)
    expected, _ = exact_attention(problem, scale, visible=seen, bias=bias)
    offset = float(np.abs(bias).max(initial=0.0))
    bound = flash.bounds(problem, scale, result.eps, offset=offset).out
    assert_close(judged(result.out, expected, seen), expected, bound,
                 what=f"out with alibi_slopes={slopes.tolist()} (causal={causal})")  # fmt: skip


@pytest.mark.meta
def test_alibi_leaves_a_query_that_sees_no_key_to_the_conventions() -> None:
    """No false alarm on jax's choice: under causal ALiBi, a query that sees no key gets the mean of all values."""
    flash = correct.as_flash(correct.flash_mean_for_queries_without_keys)
    test_alibi_equals_the_explicit_distance_bias(flash=flash)


@pytest.mark.meta
@pytest.mark.parametrize("bug", [m.flash_alibi_wrong_sign, m.flash_alibi_signed_distance])
def test_alibi_equals_the_explicit_bias_catches(bug: Any) -> None:
    assert_law_fails(test_alibi_equals_the_explicit_distance_bias, flash=m.broken_flash(bug))


@given(problem=rectangular_problems())
def test_alibi_with_slope_zero_gives_plain_attention(flash: FlashImplementation, problem: FlashProblem) -> None:
    """f(alibi_slopes=0) = f(): a zero slope charges nothing."""
    flash.require("alibi_slopes")
    sloped, plain = flash.call(problem, alibi_slopes=np.zeros(problem.H)), flash.call(problem)
    bound = flash.bounds(problem, flash.default_scale(problem), max(sloped.eps, plain.eps)) * 2
    assert_close(sloped.out, plain.out, bound.out, what="out with alibi_slopes = 0 against none")


@pytest.mark.meta
def test_alibi_with_slope_zero_catches_an_unscaled_path() -> None:
    law = test_alibi_with_slope_zero_gives_plain_attention
    assert_law_fails(law, flash=m.broken_flash(m.flash_score_modification_path_unscaled))


@given(problem=rectangular_problems())
def test_alibi_is_invariant_under_translating_queries_and_keys_together(
    flash: FlashImplementation, problem: FlashProblem
) -> None:
    """Under causal ALiBi, query n's output over its visible keys equals that of a decoding step (L = 1) over
    the same keys: the bias depends on n - m only, not on where the pair sits (translation invariance)."""
    flash.require("alibi_slopes", "causal")
    slopes = np.full(problem.H, 0.25)
    full = flash.call(problem, causal=True, alibi_slopes=slopes)
    scale = flash.default_scale(problem)
    extra = {"offset": 0.25 * max(problem.S, problem.L)}
    for n in range(problem.L):
        prefix = prefix_step(problem, n, flash.alignment)
        if prefix is None:
            continue
        step, row = prefix
        one = flash.call(step, causal=True, alibi_slopes=slopes)
        bound = flash.bounds(step, scale, one.eps, **extra) + flash.bounds(step, scale, full.eps, **extra)
        assert_close(one.out[:, row], full.out[:, n], bound.out[:, row],
                     what=f"query {n} over the {step.S} keys it sees against the full causal ALiBi")  # fmt: skip


@pytest.mark.meta
def test_alibi_translation_invariance_catches_a_cache_off_by_one() -> None:
    law = test_alibi_is_invariant_under_translating_queries_and_keys_together
    assert_law_fails(law, flash=m.broken_flash(m.flash_decoding_cache_off_by_one))


def with_a_sink_key(problem: FlashProblem, sinks: np.ndarray, scale: float) -> FlashProblem:
    """The problem with one more key whose logit is sinks[h] for every query of head h and whose value is 0:
    q gains a column sinks[h] / scale, k a column 0 for the old keys and one new key (0, ..., 0, 1)."""
    B, L, H, D = problem.q.shape
    H_k = problem.H // problem.group
    q = np.concatenate([problem.q, np.broadcast_to((sinks / scale)[None, None, :, None], (B, L, H, 1))], axis=-1)
    k = np.concatenate([problem.k, np.zeros((B, problem.S, H_k, 1))], axis=-1)
    new = np.zeros((B, 1, H_k, D + 1))
    new[..., -1] = 1.0
    v = np.concatenate([problem.v, np.zeros((B, 1, H_k, problem.D_v))], axis=1)
    return FlashProblem(q, np.concatenate([k, new], axis=1), v)


@given(case=problems_with_sinks())
def test_a_sink_equals_an_extra_key_with_a_zero_value(flash: FlashImplementation, case: Sunk) -> None:
    """f(q, k, v, sinks=t) = f(q', k', v') where k', v' append one key with a zero value whose logit is t_h for
    every query of head h (built from the inputs: no oracle). No mask: the appended key is not a position."""
    flash.require("sinks", "softmax_scale")
    problem, sinks = case
    scale = flash.default_scale(problem)
    sunk = flash.call(problem, sinks=sinks)
    extended = with_a_sink_key(problem, sinks, scale)
    keyed = flash.call(extended, softmax_scale=scale)
    bound = flash.bounds(problem, scale, sunk.eps, sinks=sinks) + flash.bounds(extended, scale, keyed.eps)
    assert_close(sunk.out, keyed.out, bound.out, what=f"out with sinks={sinks.tolist()} against an extra key")


@pytest.mark.meta
@pytest.mark.parametrize("bug", [m.flash_sink_in_the_numerator, m.flash_score_modification_path_unscaled])
def test_a_sink_equals_an_extra_key_catches(bug: Any) -> None:
    assert_law_fails(test_a_sink_equals_an_extra_key_with_a_zero_value, flash=m.broken_flash(bug))


@given(problem=rectangular_problems())
def test_a_sink_at_minus_infinity_gives_plain_attention(flash: FlashImplementation, problem: FlashProblem) -> None:
    """f(sinks=-1e4) = f(): a sink far below every logit adds exp(-1e4) = 0 to the denominators."""
    flash.require("sinks")
    sunk, plain = flash.call(problem, sinks=np.full(problem.H, SUNK)), flash.call(problem)
    bound = flash.bounds(problem, flash.default_scale(problem), max(sunk.eps, plain.eps)) * 2
    assert_close(sunk.out, plain.out, bound.out, what=f"out with sinks={SUNK:g} against none")


@pytest.mark.meta
def test_a_sink_at_minus_infinity_catches_an_unscaled_path() -> None:
    law = test_a_sink_at_minus_infinity_gives_plain_attention
    assert_law_fails(law, flash=m.broken_flash(m.flash_score_modification_path_unscaled))
