"""Robustness: logits of magnitude up to about 1e4 give finite outputs that still obey the laws, with every
keyword option too; and problems placed where a correct implementation changes its numerical path (the shift by
the column maximum skipped or not, norms computed directly or rescaled) or where exp and products with the values
leave the float range."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from numpy.typing import NDArray

from properties.catalogues import mistakes as b
from properties.helpers.checks import (
    assert_close,
    assert_equivariant,
    assert_finite,
    assert_in_value_hull,
    assert_in_visible_value_hull,
    option_bounds,
    require_some_option,
    supported,
)
from properties.helpers.exact import exact_attention
from properties.helpers.implementations import Implementation
from properties.helpers.meta import assert_law_fails
from properties.helpers.problems import AttentionOptions, AttentionProblem
from properties.helpers.strategies import (
    TWO_SLABS_N,
    as_generated,
    large_logit_problems,
    large_logit_problems_with_options,
    long_sequence_example,
    problems_with_permutations,
    with_queries_scaled,
)
from properties.helpers.tolerances import FLOAT64_EPS

pytestmark = pytest.mark.robustness


# Checked on every run, whatever hypothesis draws: logits of 1e4 and -1e4 in one column (exp overflows at ~710),
# two keys tied at the top (weights 1/2, so a wrong normalisation shows), values of one sign in the first row
# (so that a sign error leaves the convex hull).
# Every fixed example goes through as_generated: under --square it is padded to D = D_q = D_v.
_HUGE_LOGITS = AttentionProblem(
    X=np.array([[1.0, -1.0, 1.0]]),
    omega_v=np.array([[1.0], [-2.0]]),
    omega_q=np.array([[100.0]]),
    omega_k=np.array([[100.0]]),
    beta_v=np.array([[3.0], [0.0]]),
    beta_q=np.zeros((1, 1)),
    beta_k=np.zeros((1, 1)),
)
HUGE_LOGITS = as_generated(_HUGE_LOGITS)


# HUGE_LOGITS without the tie: one top key per query and distinct values. The first key is the top key of two
# queries, so a kernel that loses a key (the first, the last) on its large-logit path returns another value.
DISTINCT_TOP_KEYS = as_generated(_HUGE_LOGITS.replace(X=np.array([[1.0, -1.0, 0.5]])))


@given(problem=large_logit_problems())
@example(problem=HUGE_LOGITS)
def test_large_logits_give_finite_outputs(implementation: Implementation, problem: AttentionProblem) -> None:
    """Logits up to ~1e4 (exp would overflow at ~710): X' and attentions stay finite (no NaN, no inf)."""
    result = implementation(problem)
    assert_finite(result.X_prime, what="X' for large logits")
    if result.attentions is not None:
        assert_finite(result.attentions, what="attentions for large logits")


@pytest.mark.meta
def test_large_logits_give_finite_outputs_catches_unshifted_softmax() -> None:
    assert_law_fails(test_large_logits_give_finite_outputs, implementation=b.broken(b.notebook_softmax))


# N = 1100 (the reference's two slabs of queries) with logits up to about 4e3: the shifted path on both slabs.
LONG_AND_LARGE = with_queries_scaled(long_sequence_example(TWO_SLABS_N), 64.0)


def tied_problem(D: int, N: int, omega_q: float, omega_k: float) -> AttentionProblem:
    """N equal inputs (all ones, D x N), omega_q and omega_k multiples of the identity, no query or key bias, and
    every value 2: every logit is D omega_q omega_k (unscaled), all tied, so each weight is 1/N and X' = 2."""
    eye = np.eye(D)
    one = np.ones((1, 1))
    return as_generated(AttentionProblem(np.ones((D, N)), eye[:1], omega_q * eye, omega_k * eye, one,
                                         np.zeros((D, 1)), np.zeros((D, 1))))  # fmt: skip


# Where a shift-free softmax stops being safe (the reference skips the shift when a bound proves it safe): five
# logits of 708.3 each, just above log(max float / 4 / N) = 706.8 and below -log(smallest normal) = 708.4. Their
# exps are finite but sum beyond the largest float64: skipping the shift here gives 1/inf = 0 for every weight.
AT_THE_SHIFT_FREE_LIMIT = tied_problem(1, 5, float(np.sqrt(708.3)), float(np.sqrt(708.3)))
# Queries of 1e-150 and keys of 1e153 (logits of 2000): a squared query underflows and a squared key nearly
# overflows, so a bound on the logits from the norms of Q and K must rescale before squaring.
TINY_QUERIES_HUGE_KEYS = tied_problem(4, 2, 1e-150, 1e153)


def constant_keys_problem(logit: float, beta_v: list[float]) -> AttentionProblem:
    """X = [1, -1], every key 1 (omega_k = 0, beta_k = 1), queries logit * x: the first query's logits are all
    +logit, the second's all -logit (ties); values V = beta_v for every input, so X' = beta_v 1^T."""
    zero, one = np.zeros((1, 1)), np.ones((1, 1))
    values = np.array(beta_v).reshape(-1, 1)
    return as_generated(AttentionProblem(np.array([[1.0, -1.0]]), np.zeros((len(beta_v), 1)), logit * one, zero,
                                         values, zero, one))  # fmt: skip


# Values of -1e200 (and of 1e200) with logits of +-400: exp(400) v overflows, so an online softmax that
# multiplies values by weights not yet normalised must shift, whatever the logits alone allow (the reference's
# blockwise path). Beside each huge value a value of 1, of the other sign: the largest magnitude is the minimum
# of one problem and the maximum of the other.
HUGE_VALUES = constant_keys_problem(400.0, [-1e200, 1.0])
HUGE_POSITIVE_VALUES = constant_keys_problem(400.0, [1e200, -1.0])
# Values of 1e-300 with logits of -600: exp(-600) v underflows to 0 unless shifted.
TINY_VALUES = constant_keys_problem(600.0, [1e-300, 2e-300])


@given(problem=large_logit_problems())
@example(problem=HUGE_LOGITS)
@example(problem=LONG_AND_LARGE)
@example(problem=AT_THE_SHIFT_FREE_LIMIT)
@example(problem=TINY_QUERIES_HUGE_KEYS)
@example(problem=HUGE_VALUES)
@example(problem=HUGE_POSITIVE_VALUES)
@example(problem=TINY_VALUES)
def test_large_logits_keep_outputs_in_the_convex_hull_of_the_values(
    implementation: Implementation, problem: AttentionProblem
) -> None:
    """With large logits, columns of attentions still sum to 1 and X' stays within [min_m V_dm, max_m V_dm]."""
    result = implementation(problem)
    assert_in_value_hull(implementation, problem, result)
    if result.attentions is not None:
        assert_close(
            result.attentions.sum(axis=0),
            np.ones(problem.N),
            implementation.bounds(problem, result.eps).column_sum,
            what="columns of attentions must sum to 1",
        )


@pytest.mark.meta
@pytest.mark.parametrize(
    "bug",
    [
        b.notebook_softmax,
        b.shift_skipped_below_the_exp_limit,
        b.online_unshifted_for_moderate_logits,
        b.float32_notebook_softmax,  # overflow within the returned dtype's range still fails
    ],
)
def test_large_logits_keep_outputs_in_the_convex_hull_catches(bug: object) -> None:
    assert_law_fails(test_large_logits_keep_outputs_in_the_convex_hull_of_the_values, implementation=b.broken(bug))


@given(case=problems_with_permutations(large_logit_problems()))
@example(case=(HUGE_LOGITS, np.array([2, 0, 1])))
def test_large_logits_keep_permutation_equivariance(
    implementation: Implementation, case: tuple[AttentionProblem, NDArray[np.intp]]
) -> None:
    """f(X P) = f(X) P (eq. 12.18) also when the logits are large."""
    problem, p = case
    assert_equivariant(implementation, problem, p, what="X' for large logits")


@pytest.mark.meta
def test_large_logits_keep_permutation_equivariance_catches_positional_bias() -> None:
    assert_law_fails(test_large_logits_keep_permutation_equivariance, implementation=b.broken(b.positional_bias))


# --- Every keyword option, with large logits ---


def _options_example(problem: AttentionProblem, **options: object) -> tuple[AttentionProblem, AttentionOptions]:
    return problem, AttentionOptions(**options)  # type: ignore[arg-type]


# Logits of +-1e4 under a mask that hides the top key from the second query.
MASKED_HUGE_LOGITS = _options_example(HUGE_LOGITS, mask=np.array([[True, False, True], [True, True, True],
                                                                   [True, True, False]]))  # fmt: skip
# Logits of +-1 and a bias of -800 down the first query's column: shifted by the largest logit alone, every weight
# of that column underflows.
ONE_BIAS_COLUMN_FAR_BELOW = _options_example(constant_keys_problem(1.0, [4.0, 2.0]),
                                             bias=np.array([[-800.0, 0.0], [-800.0, 0.0]]))  # fmt: skip
# N = 1100 (the reference's two slabs of queries) with a bias of entries up to 2, and up to 1e3: the shift-free
# and the shifted path each add the bias slab by slab (the large one is an example of the X' law below, which
# also sees a bias added with the wrong sign).
_LONG_BIAS = np.random.default_rng(1100).uniform(-1.0, 1.0, (TWO_SLABS_N, TWO_SLABS_N))
LONG_WITH_A_SMALL_BIAS = _options_example(long_sequence_example(TWO_SLABS_N), bias=2.0 * _LONG_BIAS)
LONG_WITH_A_LARGE_BIAS = _options_example(long_sequence_example(TWO_SLABS_N), bias=1e3 * _LONG_BIAS)


@given(case=large_logit_problems_with_options())
@example(case=MASKED_HUGE_LOGITS)
@example(case=ONE_BIAS_COLUMN_FAR_BELOW)
@example(case=LONG_WITH_A_SMALL_BIAS)
def test_large_logits_under_every_option_keep_outputs_in_the_convex_hull_of_the_visible_values(
    implementation: Implementation, case: tuple[AttentionProblem, AttentionOptions]
) -> None:
    """With positions, a mask, causal and a bias, logits (bias included) up to ~1e4: for each query n that sees a
    key, X'_dn stays within [min V_dm, max V_dm] over the keys m it sees, and its attentions sum to 1."""
    require_some_option(implementation)
    problem, options = case
    options = supported(implementation, options)
    result = implementation(problem, **options.keywords())
    bounds = option_bounds(implementation, problem, options, result.eps)
    assert_in_visible_value_hull(problem, options, result, bounds)
    if result.attentions is not None:
        seen = options.sees_a_key(problem.N)
        assert_close(
            result.attentions.sum(axis=0)[seen],
            np.ones(int(seen.sum())),
            bounds.column_sum[seen],
            what="columns of attentions must sum to 1 over the keys their query sees",
        )


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.masked_softmax_without_the_shift, b.bias_added_after_the_shift])
def test_large_logits_under_every_option_catch(bug: object) -> None:
    assert_law_fails(
        test_large_logits_under_every_option_keep_outputs_in_the_convex_hull_of_the_visible_values,
        implementation=b.broken(bug),
    )


@given(case=large_logit_problems_with_options())
@example(case=_options_example(DISTINCT_TOP_KEYS))
@example(case=LONG_WITH_A_LARGE_BIAS)
def test_large_logits_keep_outputs_the_values_times_the_softmax_of_the_logits(
    implementation: Implementation, case: tuple[AttentionProblem, AttentionOptions]
) -> None:
    """With logits (bias included) up to ~1e4, under the options the implementation takes: for each query n that
    sees a key, x'_n = V softmax(L_n) over the keys it sees, L = s K^T Q + bias with the positions where the mode
    puts them (eqs. 12.3, 12.5, 12.9). The right side is computed law-side in float64, shifted by the column
    maximum; both sides are within the forward-error bounds of one evaluation (tolerances.py)."""
    problem, options = case
    options = supported(implementation, options)
    result = implementation(problem, **options.keywords())
    scale = implementation.scale(problem.D_q)
    plain = options.without_positions(problem)
    expected, _ = exact_attention(plain, scale, visible=options.visible(problem.N), bias=options.bias)
    tolerance = (option_bounds(implementation, problem, options, result.eps)
                 + option_bounds(implementation, problem, options, FLOAT64_EPS)).x_prime  # fmt: skip
    seen = options.sees_a_key(problem.N)
    assert_close(result.X_prime[:, seen], expected[:, seen], tolerance[:, seen],
                 what="X' against V softmax(s K^T Q + bias) over the visible keys, with large logits")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.online_blocks_skipping_the_first_key_when_shifted,
                                 b.bias_subtracted_on_the_shifted_path])  # fmt: skip
def test_large_logits_keep_outputs_the_values_times_the_softmax_catches(bug: object) -> None:
    assert_law_fails(test_large_logits_keep_outputs_the_values_times_the_softmax_of_the_logits,
                     implementation=b.broken(bug))  # fmt: skip
