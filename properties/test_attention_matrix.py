"""Laws of the attention matrix: it is a column softmax of the scaled logits, and X' = V attentions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from properties import broken as b
from properties.checks import LawViolation, assert_at_most, assert_close
from properties.implementation import Implementation
from properties.meta import assert_law_fails
from properties.problem import AttentionProblem
from properties.strategies import attention_problems, tail_problems
from properties.tolerances import no_weight_can_underflow, tiny_of

pytestmark = pytest.mark.semantics


@given(problem=attention_problems())
def test_attention_columns_are_probability_distributions(
    implementation: Implementation, problem: AttentionProblem
) -> None:
    """Every column of attentions is a distribution over the keys (eq. 12.5): a_mn >= 0, sum_m a_mn = 1."""
    result = implementation(problem)
    A = result.require_attentions()
    tolerance = implementation.bounds(problem, result.eps).column_sum
    assert_at_most(0.0, A, 0.0, what="attention weights must be >= 0")
    assert_close(A.sum(axis=0), np.ones(problem.N), tolerance, what="columns of attentions must sum to 1")


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


@given(problem=st.one_of(attention_problems(), tail_problems()))
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
    result = implementation(problem)
    A = np.asarray(result.require_attentions(), dtype=np.float64)
    bounds = implementation.bounds(problem, result.eps)
    logits = problem.logits(implementation.scale(problem.D_q))
    top = np.argmax(A, axis=0)
    columns = np.arange(problem.N)
    tiny = tiny_of(result.eps)
    log_ratio = np.log(np.maximum(A, tiny)) - np.log(A[top, columns])
    expected = logits - logits[top, columns]
    # Below tiny: any weight whose logits put it below tiny agrees; one that should be larger does not.
    expected = np.where(tiny > A, np.maximum(expected, log_ratio), expected)
    r = bounds.attentions
    tolerance = 2 * r / (1 - np.minimum(r, 0.5)) + 2 * bounds.logit_error
    assert_close(
        log_ratio,
        expected,
        tolerance,
        what="log(a_mn / a_jn) must equal the difference of the scaled logits s (k_m - k_j)^T q_n",
    )


@pytest.mark.meta
def test_attentions_are_the_softmax_of_the_scaled_logits_catches_zeroed_tails() -> None:
    assert_law_fails(test_attentions_are_the_softmax_of_the_scaled_logits,
                     implementation=b.broken(b.tail_weights_zeroed))  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.scale_by_sqrt_D, b.transposed_logits, b.uniform_attention, b.query_bias_on_keys])
def test_attentions_are_the_softmax_of_the_scaled_logits_catches(bug: object) -> None:
    assert_law_fails(test_attentions_are_the_softmax_of_the_scaled_logits, implementation=b.broken(bug))
