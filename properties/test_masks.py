"""Masks and causal attention: hidden keys influence nothing, the visible ones share a softmax, causal is the lower
triangle, and their combinations.

One topic a module: every law of the mask and causal options is here, the "under every option" generalisation of
a base law whose topic is the visible keys included (the softmax over the visible keys); the bias laws are in
test_biases.py, the positions in test_positions.py, N = 0 and N = 1 in test_edges.py.

These laws need the keyword arguments mask=, causal= and bias= (the reference takes them); they are skipped
for implementations that do not.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from numpy.typing import NDArray

from properties.catalogues import mistakes as b
from properties.helpers.checks import (
    LawViolation,
    assert_close,
    call,
    option_bounds,
    require_some_option,
    supported,
)
from properties.helpers.implementations import Implementation
from properties.helpers.meta import assert_law_fails, convention_pair_ids
from properties.helpers.problems import AttentionOptions, AttentionProblem
from properties.helpers.strategies import (
    attention_problems,
    dimensions,
    problems_with_a_position,
    problems_with_masks,
    problems_with_options,
    problems_with_options_and_a_query,
    problems_with_visible_subsets,
)
from properties.helpers.tolerances import tiny_of

pytestmark = pytest.mark.semantics
Array = NDArray[np.float64]
Case = tuple[AttentionProblem, AttentionOptions]
# Changed inputs are multiplied by up to this much: huge, yet every logit stays far from overflow.
HUGE = 1e6


def masked_problem(problem: AttentionProblem, changed: NDArray[np.bool_], scale: float) -> AttentionProblem:
    """The problem with the input columns flagged in `changed` replaced by scale * (their values + 1)."""
    X = problem.X.copy()
    X[:, changed] = scale * (X[:, changed] + 1.0)
    return problem.replace(X=X)


@given(case=problems_with_a_position())
def test_causal_outputs_do_not_depend_on_later_inputs(
    implementation: Implementation, case: tuple[AttentionProblem, int, float]
) -> None:
    """With causal=True, x'_j for j <= n does not change when any input x_m with m > n changes, even to huge
    values: key m is invisible to query j < m."""
    implementation.require("causal")
    problem, n, scale = case
    later = np.arange(problem.N) > n
    before = implementation(problem, causal=True)
    after = implementation(masked_problem(problem, later, scale), causal=True)
    prefix = problem.with_columns(np.arange(n + 1))  # only these columns take part in the outputs compared
    bounds = implementation.bounds(prefix, max(before.eps, after.eps))
    assert_close(after.X_prime[:, : n + 1], before.X_prime[:, : n + 1], (bounds + bounds).x_prime,
                 what=f"causal outputs 0..{n} after changing the inputs after {n}")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.keywords_ignored, b.mask_as_large_negative_bias])
def test_causal_outputs_do_not_depend_on_later_inputs_catches(bug: Any) -> None:
    assert_law_fails(test_causal_outputs_do_not_depend_on_later_inputs, implementation=b.broken(bug))


@given(problem=attention_problems(dimensions(min_n=2)), data=st.data())
def test_causal_attention_is_consistent_with_its_prefixes(
    implementation: Implementation, problem: AttentionProblem, data: st.DataObject
) -> None:
    """f(X[:, :t], causal) = f(X, causal)[:, :t]: a causal model's outputs for a prefix ignore what follows."""
    implementation.require("causal")
    t = data.draw(st.integers(1, problem.N - 1), label="prefix length t")
    prefix = problem.with_columns(np.arange(t))
    whole, part = implementation(problem, causal=True), implementation(prefix, causal=True)
    bounds = implementation.bounds(prefix, max(whole.eps, part.eps))
    assert_close(part.X_prime, whole.X_prime[:, :t], (bounds + bounds).x_prime, what=f"causal prefix of length {t}")


@pytest.mark.meta
def test_causal_prefixes_catch_an_ignored_mask() -> None:
    assert_law_fails(test_causal_attention_is_consistent_with_its_prefixes, implementation=b.broken(b.keywords_ignored))


@given(problem=attention_problems())
def test_causal_equals_the_explicit_lower_triangular_mask(
    implementation: Implementation, problem: AttentionProblem
) -> None:
    """causal=True is mask[m, n] = (m <= n): key m visible to query n iff m <= n."""
    implementation.require("causal", "mask")
    triangle = np.tri(problem.N, dtype=bool).T
    causal, masked = implementation(problem, causal=True), implementation(problem, mask=triangle)
    bounds = implementation.bounds(problem, max(causal.eps, masked.eps))
    assert_close(causal.X_prime, masked.X_prime, (bounds + bounds).x_prime, what="causal=True against the mask")


@pytest.mark.meta
def test_causal_equals_the_explicit_mask_catches_the_transposed_triangle() -> None:
    assert_law_fails(test_causal_equals_the_explicit_lower_triangular_mask,
                     implementation=b.broken(b.causal_upper_triangle))  # fmt: skip


@given(case=problems_with_masks())
def test_masked_keys_influence_nothing(
    implementation: Implementation, case: tuple[AttentionProblem, NDArray[np.bool_], NDArray[np.bool_], float]
) -> None:
    """Changing inputs whose keys are hidden from query n (mask[m, n] False), even to huge values, leaves
    x'_n unchanged, for every query n that sees a key and is not itself among the changed inputs."""
    implementation.require("mask")
    problem, mask, changed, scale = case
    unaffected = ~changed & ~(mask & changed[:, None]).any(axis=0) & mask.any(axis=0)
    assume(unaffected.any())
    before = implementation(problem, mask=mask)
    after = implementation(masked_problem(problem, changed, scale), mask=mask)
    bounds = implementation.bounds(problem, max(before.eps, after.eps))
    assert_close(after.X_prime[:, unaffected], before.X_prime[:, unaffected], (bounds + bounds).x_prime[:, unaffected],
                 what="outputs of queries that cannot see the changed inputs")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize(
    "bug", [b.keywords_ignored, b.mask_as_large_negative_bias, b.hidden_logits_filled_with_minus_20]
)
def test_masked_keys_influence_nothing_catches(bug: Any) -> None:
    assert_law_fails(test_masked_keys_influence_nothing, implementation=b.broken(bug))


@given(case=problems_with_masks())
def test_attentions_are_distributions_over_the_visible_keys(
    implementation: Implementation, case: tuple[AttentionProblem, NDArray[np.bool_], NDArray[np.bool_], float]
) -> None:
    """For every query n that sees a key: attentions[m, n] = 0 where key m is hidden from it, and its column sums
    to 1 over the visible keys. (A query with no visible key follows a convention: test_conventions.py.)"""
    implementation.require("mask")
    problem, mask, _, _ = case
    result = implementation(problem, mask=mask)
    A = result.require_attentions()
    some = mask.any(axis=0)
    hidden = ~mask & some
    if (A[hidden] != 0).any():
        m, n = (int(i) for i in np.argwhere((A != 0) & hidden)[0])
        raise LawViolation(f"attentions[{m}, {n}] = {float(A[m, n])!r}, but key {m} is hidden from query {n}")
    tolerance = implementation.bounds(problem, result.eps).column_sum[some]
    assert_close(A[:, some].sum(axis=0), np.ones(int(some.sum())), tolerance,
                 what="columns of attentions with a visible key must sum to 1")  # fmt: skip


@pytest.mark.meta
def test_attentions_over_visible_keys_catches_missing_renormalisation() -> None:
    assert_law_fails(test_attentions_are_distributions_over_the_visible_keys,
                     implementation=b.broken(b.mask_without_renormalising))  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize(
    "law", [test_masked_keys_influence_nothing, test_attentions_are_distributions_over_the_visible_keys]
)
def test_a_nan_convention_passes_the_mask_laws(law: Any) -> None:
    """No false alarm: NaN for a query that sees no key is a convention (test_conventions.py), not a semantic error."""
    law(implementation=b.broken(b.nan_for_queries_without_keys))


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


# Each law judges the queries that see a key only: an implementation with another convention for the others
# (test_conventions.py) passes them all, being wrong in the convention alone.
NO_FALSE_ALARMS = [
    (test_an_all_true_mask_changes_nothing, b.nan_for_queries_without_keys),
    (test_attentions_are_the_softmax_of_the_scaled_logits_over_the_visible_keys, b.nan_for_queries_without_keys),
    (test_each_causal_output_is_the_last_output_of_its_prefix, b.nan_for_queries_without_keys),
    (test_causal_with_a_mask_sees_the_keys_visible_under_both, b.nan_for_queries_without_keys),
    (test_attentions_are_the_softmax_of_the_scaled_logits_over_the_visible_keys, b.uniform_for_queries_without_keys),
    (test_causal_with_a_mask_sees_the_keys_visible_under_both, b.uniform_for_queries_without_keys),
]


@pytest.mark.meta
@pytest.mark.parametrize(
    ("law", "convention"),
    NO_FALSE_ALARMS,
    ids=convention_pair_ids(NO_FALSE_ALARMS),
)
def test_other_conventions_pass_the_mask_option_laws(law: Any, convention: Any) -> None:
    """No false alarm: a correct implementation with another convention for queries without keys passes."""
    law(implementation=b.broken(convention))


@pytest.mark.meta
def test_causal_equals_the_explicit_mask_catches_a_kernel_with_the_upper_triangle() -> None:
    law = test_causal_equals_the_explicit_lower_triangular_mask
    assert_law_fails(law, implementation=b.broken_kernel(b.kernel_causal_upper_triangle))


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.kernel_mask_polarity_inverted, b.kernel_keywords_ignored])
def test_masked_keys_influence_nothing_catches_row_kernels(bug: Any) -> None:
    assert_law_fails(test_masked_keys_influence_nothing, implementation=b.broken_kernel(bug))
