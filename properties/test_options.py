"""Every keyword option pinned to the path without it: positions in both modes, masks, causal, biases, and their
combinations. Each law relates a call with an option to a call without it (or to the scaled logits), so that the
base laws, which judge the path without options, reach every path an option switches on.

A query that sees no key (every key hidden by the mask, or by the mask and causal together) follows a convention,
which one law of its own (category `conventions`) checks; every other law judges only the queries that see a key,
so that an implementation with another convention (NaN, uniform weights) is judged on everything else.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, note
from numpy.typing import NDArray

from properties import broken as b
from properties.checks import (
    LawViolation,
    assert_close,
    option_bounds,
    require_some_option,
    softmax_over_visible,
    stacked_queries_and_keys,
    supported,
)
from properties.implementation import Implementation, Result
from properties.meta import assert_law_fails
from properties.problem import AttentionOptions, AttentionProblem
from properties.strategies import (
    dimensions,
    problems_with_constant_logits,
    problems_with_options,
    problems_with_options_and_a_query,
    problems_with_options_and_column_shifts,
    problems_with_visible_subsets,
)
from properties.tolerances import tiny_of

pytestmark = pytest.mark.semantics
Array = NDArray[np.float64]
Case = tuple[AttentionProblem, AttentionOptions]


def call(implementation: Implementation, problem: AttentionProblem, options: AttentionOptions) -> Result:
    return implementation(problem, **options.keywords())


# --- Masks ---


@given(case=problems_with_options(mask=False))
def test_an_all_true_mask_changes_nothing(implementation: Implementation, case: Case) -> None:
    """mask = 1 1^T (every key visible to every query) gives what no mask gives, with any other options."""
    implementation.require("mask")
    problem, options = case
    options = supported(implementation, options)
    ones = options.replace(mask=np.ones((problem.N, problem.N), dtype=bool))
    masked, plain = call(implementation, problem, ones), call(implementation, problem, options)
    bounds = option_bounds(implementation, problem, options, max(masked.eps, plain.eps))
    assert_close(masked.X_prime, plain.X_prime, (bounds + bounds).x_prime, what="X' with an all-True mask")


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.masked_path_scaled_by_sqrt_D, b.uniform_over_the_visible_keys])
def test_an_all_true_mask_changes_nothing_catches(bug: Any) -> None:
    assert_law_fails(test_an_all_true_mask_changes_nothing, implementation=b.broken(bug))


@given(case=problems_with_visible_subsets())
def test_a_mask_that_hides_keys_from_every_query_drops_those_inputs(
    implementation: Implementation, case: tuple[AttentionProblem, AttentionOptions, NDArray[np.intp]]
) -> None:
    """With mask[m, n] = (m in S) for a set S of inputs, the outputs of the queries in S are those of attention
    on the inputs S alone (with their positions and their block of the bias), without a mask."""
    implementation.require("mask")
    problem, options, S = case
    options = supported(implementation, options)
    mask = np.zeros((problem.N, problem.N), dtype=bool)
    mask[S, :] = True
    part_problem, part_options = problem.with_columns(S), options.with_columns(S)
    whole = call(implementation, problem, options.replace(mask=mask))
    part = call(implementation, part_problem, part_options)
    eps = max(whole.eps, part.eps)
    tolerance = (
        option_bounds(implementation, problem, options, eps).x_prime[:, S]
        + option_bounds(implementation, part_problem, part_options, eps).x_prime
    )
    assert_close(whole.X_prime[:, S], part.X_prime, tolerance, what=f"X' of the queries {S.tolist()} that see only S")


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.mask_transposed])
def test_a_mask_that_hides_keys_from_every_query_catches(bug: Any) -> None:
    assert_law_fails(test_a_mask_that_hides_keys_from_every_query_drops_those_inputs, implementation=b.broken(bug))


@given(case=problems_with_options())
def test_attentions_are_the_softmax_of_the_scaled_logits_over_the_visible_keys(
    implementation: Implementation, case: Case
) -> None:
    """Under any options, for every query n that sees a key: a_mn = 0 for each hidden key m, the visible weights
    sum to 1, and log a_mn - log a_jn = L_mn - L_jn for visible keys m, j, where L = s K^T Q + bias, the queries
    and keys formed with the positions (eqs. 12.5, 12.7-12.9 over the visible keys only).

    As test_attentions_are_the_softmax_of_the_scaled_logits: checked against the visible key j of largest
    weight, wherever a_mn is a normal number; law-side logits in float64."""
    require_some_option(implementation)
    problem, options = case
    options = supported(implementation, options)
    result = call(implementation, problem, options)
    A = np.asarray(result.require_attentions(), dtype=np.float64)
    N = problem.N
    visible = options.visible(N)
    seen = visible.any(axis=0)
    hidden = ~visible & seen
    if (A[hidden] != 0).any():
        m, n = (int(i) for i in np.argwhere(hidden & (A != 0))[0])
        raise LawViolation(f"attentions[{m}, {n}] = {A[m, n]!r}, but key {m} is hidden from query {n}")
    bounds = option_bounds(implementation, problem, options, result.eps)
    assert_close(A[:, seen].sum(axis=0), np.ones(int(seen.sum())), bounds.column_sum[seen],
                 what="the weights of the visible keys of a query must sum to 1")  # fmt: skip
    logits = options.without_positions(problem).logits(implementation.scale(problem.D_q))
    if options.bias is not None:
        logits = logits + options.bias
    columns = np.flatnonzero(seen)
    top = np.argmax(np.where(visible, A, -np.inf), axis=0)[columns]
    usable = (tiny_of(result.eps) <= A[:, columns]) & visible[:, columns]
    with np.errstate(divide="ignore"):
        log_ratio = np.log(np.where(usable, A[:, columns], 1.0)) - np.log(A[top, columns])
    expected = np.where(usable, logits[:, columns] - logits[top, columns], 0.0)
    r = bounds.attentions[:, columns]
    tolerance = 2 * r / (1 - np.minimum(r, 0.5)) + 2 * bounds.steps * bounds.eps * bounds.logit_bound[columns]
    assert_close(np.where(usable, log_ratio, 0.0), expected, tolerance,
                 what="log(a_mn / a_jn) over visible keys must equal L_mn - L_jn, L = s K^T Q + bias")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.hidden_logits_filled_with_minus_20, b.causal_excludes_the_diagonal])
def test_attentions_over_the_visible_keys_catch(bug: Any) -> None:
    law = test_attentions_are_the_softmax_of_the_scaled_logits_over_the_visible_keys
    assert_law_fails(law, implementation=b.broken(bug))


@given(case=problems_with_options())
def test_doubling_the_query_key_dimension_scales_the_visible_logits_as_the_scale_demands(
    implementation: Implementation, case: Case
) -> None:
    """Under any options, stacking [omega_q; omega_q], [omega_k; omega_k] (and the biases) equals multiplying
    omega_q and beta_q by c = sqrt(2) (scaled: 1/sqrt(D_q) follows D_q, eq. 12.9) or c = 2 (unscaled), as
    test_doubling_the_query_key_dimension_scales_the_logits_as_the_scale_demands without options: the scale
    law on the paths the options switch on. Needs X' only."""
    require_some_option(implementation)
    problem, options = case
    options = supported(implementation, options)
    c = np.sqrt(2.0) if implementation.kind == "scaled" else 2.0
    stacked = stacked_queries_and_keys(problem)
    if stacked.D != problem.D and options.positional is not None:  # --square stacks the inputs too
        options_stacked = options.replace(positional=np.vstack([options.positional, options.positional]))
    else:
        options_stacked = options
    sharpened = problem.replace(omega_q=c * problem.omega_q, beta_q=c * problem.beta_q)
    first, second = call(implementation, stacked, options_stacked), call(implementation, sharpened, options)
    seen = options.sees_a_key(problem.N)
    eps = max(first.eps, second.eps)
    # The stacked logits' bound s' (2 Khat^T Qhat) equals the sharpened one's c s Khat^T Qhat; the stacked problem
    # has D_q (and under --square D) more rounding steps, and its own bounds count them.
    tolerance = (
        option_bounds(implementation, stacked, options_stacked, eps).x_prime[: problem.D_v]
        + option_bounds(implementation, sharpened, options, eps).x_prime
    )
    what = f"stacking queries and keys (D_q {problem.D_q} -> {stacked.D_q}) against queries times {c:.6g}"
    assert_close(first.X_prime[: problem.D_v, seen], second.X_prime[:, seen], tolerance[:, seen], what=what)


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.masked_path_unscaled])
def test_doubling_the_query_key_dimension_under_every_option_catches(bug: Any) -> None:
    law = test_doubling_the_query_key_dimension_scales_the_visible_logits_as_the_scale_demands
    assert_law_fails(law, implementation=b.broken(bug))


@given(case=problems_with_options())
def test_output_is_values_times_attentions_under_every_option(implementation: Implementation, case: Case) -> None:
    """X' = V attentions under any options, V = omega_v X + beta_v 1^T formed with the positions in mode "input"
    and without them in mode "query_key" (eqs. 12.6, 12.16-12.17), for every query that sees a key."""
    require_some_option(implementation)
    problem, options = case
    options = supported(implementation, options)
    result = call(implementation, problem, options)
    A = result.require_attentions()
    seen = options.sees_a_key(problem.N)
    bounds = option_bounds(implementation, problem, options, result.eps)
    expected = options.without_positions(problem).values() @ np.where(seen, A, 0.0)
    assert_close(result.X_prime[:, seen], expected[:, seen], (bounds + bounds).x_prime[:, seen],
                 what="X' must equal V @ attentions")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.seen_keys_along_the_wrong_axis])
def test_output_is_values_times_attentions_under_every_option_catches(bug: Any) -> None:
    assert_law_fails(test_output_is_values_times_attentions_under_every_option, implementation=b.broken(bug))


# --- Causal attention and its combination with a mask ---


@given(case=problems_with_options_and_a_query(causal=True))
def test_each_causal_output_is_the_last_output_of_its_prefix(
    implementation: Implementation, case: tuple[AttentionProblem, AttentionOptions, int]
) -> None:
    """f(X; causal)[:, n] = f(X[:, :n+1])[:, n]: with causal=True query n sees exactly the keys 0..n, itself
    included, so its output is that of the last query of the prefix without causal (the other options, mask and
    bias cut to the prefix, kept)."""
    implementation.require("causal")
    problem, options, n = case
    options = supported(implementation, options).replace(causal=True)
    assume(options.sees_a_key(problem.N)[n])  # a query the mask leaves without keys follows the convention
    prefix = np.arange(n + 1)
    prefix_problem, prefix_options = problem.with_columns(prefix), options.with_columns(prefix).replace(causal=False)
    whole, part = call(implementation, problem, options), call(implementation, prefix_problem, prefix_options)
    eps = max(whole.eps, part.eps)
    tolerance = (
        option_bounds(implementation, problem, options, eps).x_prime[:, n]
        + option_bounds(implementation, prefix_problem, prefix_options, eps).x_prime[:, n]
    )
    assert_close(whole.X_prime[:, n], part.X_prime[:, n], tolerance,
                 what=f"causal output {n} against the last output of the prefix 0..{n} without causal")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.causal_upper_triangle, b.causal_sees_one_ahead])
def test_each_causal_output_is_the_last_output_of_its_prefix_catches(bug: Any) -> None:
    assert_law_fails(test_each_causal_output_is_the_last_output_of_its_prefix, implementation=b.broken(bug))


@given(case=problems_with_options(mask=True, causal=False))
def test_causal_with_a_mask_sees_the_keys_visible_under_both(implementation: Implementation, case: Case) -> None:
    """f(X; mask=M, causal=True) = f(X; mask=M & T) with T[m, n] = (m <= n): a key must be visible under both."""
    implementation.require("causal", "mask")
    problem, options = case
    options = supported(implementation, options)
    assert options.mask is not None
    both = options.replace(causal=True)
    combined = options.replace(mask=options.mask & np.tri(problem.N, dtype=bool).T)
    first, second = call(implementation, problem, both), call(implementation, problem, combined)
    seen = combined.sees_a_key(problem.N)
    bounds = option_bounds(implementation, problem, options, max(first.eps, second.eps))
    assert_close(first.X_prime[:, seen], second.X_prime[:, seen], (bounds + bounds).x_prime[:, seen],
                 what="causal=True with a mask against the mask and the triangle")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.causal_or_mask, b.causal_ignored_when_a_mask_is_given])
def test_causal_with_a_mask_sees_the_keys_visible_under_both_catches(bug: Any) -> None:
    assert_law_fails(test_causal_with_a_mask_sees_the_keys_visible_under_both, implementation=b.broken(bug))


# --- Biases ---


@given(case=problems_with_options_and_column_shifts())
def test_a_bias_constant_down_each_column_changes_nothing(
    implementation: Implementation, case: tuple[AttentionProblem, AttentionOptions, Array]
) -> None:
    """f(X; B + 1 c^T) = f(X; B): adding c_n to every logit of query n changes nothing (the softmax is over the
    keys of a column, eq. 12.5), whatever the other options. A bias read along the wrong axis breaks this."""
    implementation.require("bias")
    problem, options, c = case
    options = supported(implementation, options)
    bias = np.zeros((problem.N, problem.N)) if options.bias is None else options.bias
    shifted = options.replace(bias=bias + c)
    first, second = call(implementation, problem, options), call(implementation, problem, shifted)
    eps = max(first.eps, second.eps)
    seen = options.sees_a_key(problem.N)
    tolerance = (
        option_bounds(implementation, problem, options, eps) + option_bounds(implementation, problem, shifted, eps)
    ).x_prime
    assert_close(second.X_prime[:, seen], first.X_prime[:, seen], tolerance[:, seen],
                 what="X' after adding one constant per query down each column of the bias")  # fmt: skip


@pytest.mark.meta
def test_a_bias_constant_down_each_column_catches_a_transposed_bias() -> None:
    assert_law_fails(test_a_bias_constant_down_each_column_changes_nothing, implementation=b.broken(b.bias_transposed))


@given(case=problems_with_constant_logits())
def test_with_constant_logits_the_bias_alone_sets_the_weights(implementation: Implementation, case: Case) -> None:
    """With omega_q = omega_k = 0 every logit is beta_k^T beta_q, the same for every key, so
    X' = V softmax_cols(bias) over the visible keys: the bias is added to the scaled logits, key m's to row m."""
    implementation.require("bias")
    problem, options = case
    options = supported(implementation, options)
    assert options.bias is not None
    result = call(implementation, problem, options)
    seen = options.sees_a_key(problem.N)
    weights = softmax_over_visible(options.bias, options.visible(problem.N))
    expected = options.without_positions(problem).values() @ weights
    bounds = option_bounds(implementation, problem, options, result.eps)
    assert_close(result.X_prime[:, seen], expected[:, seen], (bounds + bounds).x_prime[:, seen],
                 what="X' with constant logits against V softmax_cols(bias)")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize(
    "bug",
    [b.bias_before_the_scale, b.bias_rows_reversed, b.bias_ignored_with_a_mask, b.seen_keys_along_the_wrong_axis],
)
def test_with_constant_logits_the_bias_alone_sets_the_weights_catches(bug: Any) -> None:
    assert_law_fails(test_with_constant_logits_the_bias_alone_sets_the_weights, implementation=b.broken(bug))


# --- Positions: each mode pinned exactly ---


def assert_positions_are_their_problem_without_positions(
    implementation: Implementation, case: Case, mode: str, what: str
) -> None:
    """f(X; positional=Pi, positional_mode=mode) must equal f on the problem that carries the positions itself
    (AttentionOptions.without_positions), on every query that sees a key."""
    implementation.require("positional", "positional_mode")
    problem, options = case
    options = supported(implementation, options).replace(positional_mode=mode)
    first = call(implementation, problem, options)
    second = call(implementation, options.without_positions(problem), options.replace(positional=None))
    seen = options.sees_a_key(problem.N)
    bounds = option_bounds(implementation, problem, options, max(first.eps, second.eps))
    assert_close(first.X_prime[:, seen], second.X_prime[:, seen], (bounds + bounds).x_prime[:, seen],
                 what=f"X' with positions in mode {mode} against {what}")  # fmt: skip


@given(case=problems_with_options(positional=True))
def test_positions_in_input_mode_are_added_to_the_inputs(implementation: Implementation, case: Case) -> None:
    """f(X; positional=Pi, positional_mode="input") = f(X + Pi): the positions reach queries, keys and values
    (section 12.4.1), whatever the other options."""
    assert_positions_are_their_problem_without_positions(implementation, case, "input", "X' of X + Pi")


@pytest.mark.meta
@pytest.mark.parametrize(
    "bug",
    [
        b.positions_ignored,
        b.positions_subtracted,
        b.positions_transposed_when_square,
        b.positions_never_in_the_values,
        b.positions_dropped_with_other_options,
    ],
)
def test_positions_in_input_mode_are_added_to_the_inputs_catches(bug: Any) -> None:
    assert_law_fails(test_positions_in_input_mode_are_added_to_the_inputs, implementation=b.broken(bug))


@given(case=problems_with_options(positional=True))
def test_positions_in_query_key_mode_reach_the_queries_and_keys_only(
    implementation: Implementation, case: Case
) -> None:
    """f(X; positional=Pi, positional_mode="query_key") = f([X; Pi]) with weights [omega_q, omega_q],
    [omega_k, omega_k] and [omega_v, 0]: queries omega_q (X + Pi) + beta_q and keys likewise, values
    omega_v X + beta_v (eqs. 12.16-12.17), whatever the other options. Needs X' only."""
    assert_positions_are_their_problem_without_positions(implementation, case, "query_key", "the stacked problem")


@pytest.mark.meta
@pytest.mark.parametrize(
    "bug",
    [
        b.query_key_positions_ignored,
        b.query_key_positions_on_the_queries_only,
        b.query_key_positions_on_the_values_only,
        b.positions_always_in_the_values,
    ],
)
def test_positions_in_query_key_mode_catches(bug: Any) -> None:
    assert_law_fails(test_positions_in_query_key_mode_reach_the_queries_and_keys_only, implementation=b.broken(bug))


@given(case=problems_with_options(positional=True))
def test_the_positional_modes_differ_by_the_values_of_the_positions(implementation: Implementation, case: Case) -> None:
    """Both modes give the same attentions A, and f_input(X; Pi) - f_query_key(X; Pi) = omega_v Pi A: the modes
    differ only in whether the values carry the positions (eqs. 12.16-12.17)."""
    implementation.require("positional", "positional_mode")
    problem, options = case
    options = supported(implementation, options)
    assert options.positional is not None
    inputs = call(implementation, problem, options.replace(positional_mode="input"))
    query_key = call(implementation, problem, options.replace(positional_mode="query_key"))
    A_input, A_query_key = inputs.require_attentions(), query_key.require_attentions()
    seen = options.sees_a_key(problem.N)
    eps = max(inputs.eps, query_key.eps)
    bounds = option_bounds(implementation, problem, options.replace(positional_mode="input"), eps)
    twice = bounds + bounds
    assert_close(A_input[:, seen], A_query_key[:, seen], np.broadcast_to(twice.attentions, A_input.shape)[:, seen],
                 what="attentions in mode input against mode query_key")  # fmt: skip
    expected = problem.omega_v @ options.positional @ np.where(seen, A_input, 0.0)
    # Four terms, each within bounds.x_prime: the two evaluations, the error of A_input carried through
    # omega_v Pi (at most max_m |omega_v Pi|_dm r_n), and the float64 rounding of omega_v Pi A on the law's side.
    assert_close((inputs.X_prime - query_key.X_prime)[:, seen], expected[:, seen], 2 * twice.x_prime[:, seen],
                 what="f_input - f_query_key against omega_v Pi attentions")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.positions_never_in_the_values, b.positions_always_in_the_values])
def test_the_positional_modes_differ_catches(bug: Any) -> None:
    assert_law_fails(test_the_positional_modes_differ_by_the_values_of_the_positions, implementation=b.broken(bug))


# --- The edges, for every option ---


@given(case=problems_with_options(dimensions(min_n=0, max_n=0)))
def test_no_inputs_give_empty_outputs_under_every_option(implementation: Implementation, case: Case) -> None:
    """N = 0: X' is D_v x 0 and attentions 0 x 0, with any options (an empty mask, bias and Pi)."""
    require_some_option(implementation)
    problem, options = case
    options = supported(implementation, options)
    note(f"options given: {sorted(options.keywords())}")
    call(implementation, problem, options)  # the wrapper checks the shapes; a crash fails the law


@pytest.mark.meta
def test_no_inputs_give_empty_outputs_catches_a_crash() -> None:
    law = test_no_inputs_give_empty_outputs_under_every_option
    assert_law_fails(law, implementation=b.broken(b.crashes_without_inputs))


@given(case=problems_with_options(dimensions(min_n=1, max_n=1)))
def test_a_single_input_attends_to_itself_under_every_option(implementation: Implementation, case: Case) -> None:
    """N = 1 with its key visible: attentions = [[1]] and x'_0 = v_0 (with the positions in mode "input"), with any
    bias, causal or positions."""
    require_some_option(implementation)
    problem, options = case
    options = supported(implementation, options)
    if options.mask is not None:
        options = options.replace(mask=np.ones((1, 1), dtype=bool))
    result = call(implementation, problem, options)
    bounds = option_bounds(implementation, problem, options, result.eps)
    assert_close(result.X_prime, options.without_positions(problem).values(), (bounds + bounds).x_prime,
                 what="x'_0 of a single input")  # fmt: skip
    if result.attentions is not None:
        assert_close(result.attentions, np.ones((1, 1)), bounds.attentions, what="attentions of a single input")


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.causal_excludes_the_diagonal])
def test_a_single_input_attends_to_itself_catches(bug: Any) -> None:
    assert_law_fails(test_a_single_input_attends_to_itself_under_every_option, implementation=b.broken(bug))


# Every law of this module judges the queries that see a key only: an implementation with another convention for
# the others (test_conventions.py) passes them all, being wrong in the convention alone.
OTHER_CONVENTION_LAWS = [
    test_an_all_true_mask_changes_nothing,
    test_doubling_the_query_key_dimension_scales_the_visible_logits_as_the_scale_demands,
    test_attentions_are_the_softmax_of_the_scaled_logits_over_the_visible_keys,
    test_output_is_values_times_attentions_under_every_option,
    test_each_causal_output_is_the_last_output_of_its_prefix,
    test_causal_with_a_mask_sees_the_keys_visible_under_both,
    test_a_bias_constant_down_each_column_changes_nothing,
    test_with_constant_logits_the_bias_alone_sets_the_weights,
]


# Every law but the conventions' sees queries without keys; the uniform convention (which, unlike NaN, looks like
# ordinary numbers) is run on the laws that compare against law-side values.
NO_FALSE_ALARMS = [(law, b.nan_for_queries_without_keys) for law in OTHER_CONVENTION_LAWS] + [
    (law, b.uniform_for_queries_without_keys)
    for law in (
        test_attentions_are_the_softmax_of_the_scaled_logits_over_the_visible_keys,
        test_output_is_values_times_attentions_under_every_option,
        test_causal_with_a_mask_sees_the_keys_visible_under_both,
    )
]


@pytest.mark.meta
@pytest.mark.parametrize(
    ("law", "convention"),
    NO_FALSE_ALARMS,
    ids=[
        f"{convention.__name__.split('_')[0]}-{law.__name__.removeprefix('test_')}"
        for law, convention in NO_FALSE_ALARMS
    ],
)
def test_other_conventions_pass_every_other_law(law: Any, convention: Any) -> None:
    """No false alarm: a correct implementation with another convention for queries without keys passes."""
    law(implementation=b.broken(convention))
