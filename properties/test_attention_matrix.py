"""Laws of the attention matrix: it is a column softmax of the scaled logits, and X' = V attentions.

One topic a module: the "under every option" generalisation of a law here (X' = V attentions) is here too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, note, settings
from hypothesis import strategies as st

from properties.catalogues import mistakes as b
from properties.helpers.checks import (
    LawViolation,
    assert_close,
    call,
    check_attention_columns_are_probability_distributions,
    check_attentions_are_the_softmax_of_the_scaled_logits,
    option_bounds,
    require_some_option,
    supported,
)
from properties.helpers.hypothesis_internals import fresh_body
from properties.helpers.implementations import Implementation
from properties.helpers.meta import assert_law_fails, convention_pair_ids, only_recording
from properties.helpers.problems import AttentionOptions, AttentionProblem
from properties.helpers.strategies import (
    TAIL_DEPTHS,
    Dimensions,
    as_generated,
    attention_problems,
    problems_with_options,
    tail_ladder,
    tail_ladder_problems,
    tail_problems,
)
from properties.helpers.tolerances import no_weight_can_underflow

pytestmark = pytest.mark.semantics
Case = tuple[AttentionProblem, AttentionOptions]


@given(problem=attention_problems())
def test_attention_columns_are_probability_distributions(
    implementation: Implementation, problem: AttentionProblem
) -> None:
    """Every column of attentions is a distribution over the keys (eq. 12.5): a_mn >= 0, sum_m a_mn = 1."""
    check_attention_columns_are_probability_distributions(implementation, problem)


@pytest.mark.meta
def test_attention_columns_are_probability_distributions_catches_row_softmax() -> None:
    assert_law_fails(test_attention_columns_are_probability_distributions, implementation=b.broken(b.softmax_over_rows))


@pytest.mark.meta
def test_attention_columns_are_probability_distributions_catches_bias_tiled_for_three() -> None:
    assert_law_fails(
        test_attention_columns_are_probability_distributions,
        implementation=b.broken(b.bias_tiled_for_three_inputs),
    )


@given(problem=attention_problems())
def test_attentions_are_strictly_positive_where_no_weight_can_underflow(
    implementation: Implementation, problem: AttentionProblem
) -> None:
    """a_mn > 0 in every column whose logits span less than the exponent range (exp never returns 0 there).

    Precondition, from tolerances.no_weight_can_underflow: 2 l_n + log N + 1 < -log(tiny).
    """
    result = implementation(problem)
    A = result.require_attentions()
    columns = no_weight_can_underflow(implementation.bounds(problem, result.eps))
    note(f"columns where no weight can underflow: {np.flatnonzero(columns).tolist()}")
    zeros = np.argwhere((A <= 0) & columns.reshape(1, -1))
    if zeros.size:
        m, n = (int(i) for i in zeros[0])
        raise LawViolation(f"attentions[{m}, {n}] = {A[m, n]!r}, but no weight of column {n} can underflow")


@pytest.mark.meta
def test_attentions_are_strictly_positive_catches_zeroed_weights() -> None:
    def hard_max(*arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rounds every weight below its column's largest down to zero."""
        _, A = b.correct_attention(*arrays, scale=1 / np.sqrt(arrays[2].shape[0]))
        A = np.where(A.max(axis=0, keepdims=True) == A, 1.0, 0.0)
        A /= A.sum(axis=0, keepdims=True)
        return (arrays[1] @ arrays[0] + arrays[4]) @ A, A

    assert_law_fails(
        test_attentions_are_strictly_positive_where_no_weight_can_underflow, implementation=b.broken(hard_max)
    )


@given(problem=attention_problems())
def test_output_is_values_times_attentions(implementation: Implementation, problem: AttentionProblem) -> None:
    """X' = V attentions with V = omega_v X + beta_v 1^T (eqs. 12.2, 12.3 in matrix form, 12.6)."""
    result = implementation(problem)
    A = result.require_attentions()
    bounds = implementation.bounds(problem, result.eps)
    # Two evaluations of V A: the implementation's and ours from its attentions.
    assert_close(result.X_prime, problem.values() @ A, (bounds + bounds).x_prime, what="X' must equal V @ attentions")


@pytest.mark.meta
def test_output_is_values_times_attentions_catches_transposed_product() -> None:
    assert_law_fails(test_output_is_values_times_attentions, implementation=b.broken(b.attentions_transposed_in_output))


@pytest.mark.meta
def test_output_is_values_times_attentions_catches_missing_value_bias() -> None:
    assert_law_fails(test_output_is_values_times_attentions, implementation=b.broken(b.values_without_bias))


# A ladder of weights down to just above float64's smallest normal number, checked on every run.
FLOAT64_LADDER = tail_ladder(Dimensions(1, 1, 1, 5), TAIL_DEPTHS[0] * 0.999, np.array([[1.0]]), np.zeros((1, 1)))


@given(problem=st.one_of(attention_problems(), tail_problems(), tail_ladder_problems()))
@example(problem=as_generated(FLOAT64_LADDER))
def test_attentions_are_the_softmax_of_the_scaled_logits(
    implementation: Implementation, problem: AttentionProblem
) -> None:
    """log a_mn - log a_jn = s (k_m - k_j)^T q_n for all keys m, j (eqs. 12.5, 12.7-12.9), s = 1/sqrt(D_q).

    Checked, for each column, against the key j of largest weight, on weights far in the tail (logit spreads
    up to ~708, ratios down to the smallest normal number). A weight below the smallest
    normal number (tiny) is judged only as "below tiny": the law then demands that the logits put it there,
    so zeroing small weights fails. The law-side logits are float64 (error k u l_n each); each log-weight is
    off by at most r_n / (1 - r_n) (tolerances, section 3; the relative model holds down to tiny).
    """
    check_attentions_are_the_softmax_of_the_scaled_logits(implementation, problem)


@pytest.mark.meta
@pytest.mark.parametrize(
    "bug",
    [b.tail_weights_zeroed, b.tail_weights_zeroed_below_1e_100, b.tail_weights_zeroed_below_1e_200,
     b.tail_weights_zeroed_below_1e_300],
)  # fmt: skip
def test_attentions_are_the_softmax_of_the_scaled_logits_catches_zeroed_tails(bug: Any) -> None:
    """Zeroing at any depth between 1e-8 and the smallest normal number fails: on the law's fixed ladder, and on
    the drawn ladders alone (the default profile's 20 examples, derandomised)."""
    assert_law_fails(test_attentions_are_the_softmax_of_the_scaled_logits, implementation=b.broken(bug))
    if only_recording():
        return
    body = fresh_body(test_attentions_are_the_softmax_of_the_scaled_logits)

    @settings(max_examples=20, derandomize=True, database=None, deadline=None)
    @given(problem=tail_ladder_problems())
    def drawn(problem: AttentionProblem) -> None:
        body(implementation=b.broken(bug), problem=problem)

    with pytest.raises(LawViolation):
        drawn()


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.scale_by_sqrt_D, b.transposed_logits, b.uniform_attention, b.query_bias_on_keys])
def test_attentions_are_the_softmax_of_the_scaled_logits_catches(bug: object) -> None:
    assert_law_fails(test_attentions_are_the_softmax_of_the_scaled_logits, implementation=b.broken(bug))


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


# Each law judges the queries that see a key only: an implementation with another convention for the others
# (test_conventions.py) passes them all, being wrong in the convention alone.
NO_FALSE_ALARMS = [
    (test_output_is_values_times_attentions_under_every_option, b.nan_for_queries_without_keys),
    (test_output_is_values_times_attentions_under_every_option, b.uniform_for_queries_without_keys),
]


@pytest.mark.meta
@pytest.mark.parametrize(
    ("law", "convention"),
    NO_FALSE_ALARMS,
    ids=convention_pair_ids(NO_FALSE_ALARMS),
)
def test_other_conventions_pass_the_values_times_attentions_laws(law: Any, convention: Any) -> None:
    """No false alarm: a correct implementation with another convention for queries without keys passes."""
    law(implementation=b.broken(convention))


@pytest.mark.meta
def test_attention_columns_catch_a_kernel_normalising_over_the_queries() -> None:
    law = test_attention_columns_are_probability_distributions
    assert_law_fails(law, implementation=b.broken_kernel(b.kernel_softmax_over_queries))


@pytest.mark.meta
@pytest.mark.parametrize(
    ("bug", "kind"), [(b.not_scaled, "scaled"), (b.scaled_by_sqrt_D_q, "unscaled"), (b.queries_without_bias, "scaled")]
)
def test_attentions_are_the_softmax_of_the_scaled_logits_catches_diagnosed_mistakes(bug: Any, kind: str) -> None:
    assert_law_fails(test_attentions_are_the_softmax_of_the_scaled_logits, implementation=b.broken(bug, kind))


@pytest.mark.meta
def test_attention_columns_are_probability_distributions_catches_softmax_over_whole_matrix() -> None:
    assert_law_fails(
        test_attention_columns_are_probability_distributions,
        implementation=b.broken(b.softmax_over_whole_matrix, "scaled"),
    )
