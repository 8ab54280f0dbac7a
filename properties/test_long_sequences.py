"""The cheap laws again, on long sequences: N around every tile size a blocked kernel may use (16 ... 512) and
beyond the reference's first slab of queries (a fixed N = 1100), where inter-tile rescaling and tail handling show.

Each law here is a law of another module run on strategies.long_sequence_problems, with few examples
(strategies.long_examples: a tenth of the profile's) and fixed examples of N = 600 and 1100 on every run; its
statement is that law's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from numpy.typing import NDArray

from properties.catalogues import mistakes as b
from properties.helpers.checks import (
    LawViolation,
    check_attention_columns_are_probability_distributions,
    check_attentions_are_the_softmax_of_the_scaled_logits,
    check_output_is_equivariant_under_column_permutations,
    check_outputs_lie_in_the_convex_hull_of_the_values,
    check_sharp_queries_select_the_best_matching_value,
)
from properties.helpers.hypothesis_internals import fresh_body
from properties.helpers.implementations import Implementation
from properties.helpers.meta import assert_law_fails, only_recording
from properties.helpers.options import GENERATION
from properties.helpers.problems import AttentionProblem
from properties.helpers.strategies import (
    TWO_SLABS_N,
    long_examples,
    long_sequence_example,
    long_sequence_example_as_generated,
    long_sequence_problems,
    long_sequence_problems_with_permutations,
)

pytestmark = pytest.mark.semantics
# A failing long example prints as code of some 35 kB (X has up to 2100 entries): long, and still the replay.
LONG_REPR = pytest.mark.filterwarnings("ignore:Generating overly large repr")
FEW = settings(max_examples=long_examples())
# N = 600: every tile boundary up to 512. Not square (D_q = 3, D = 2, D_v = 1) unless --square: a scale by
# 1/sqrt(D) or 1/sqrt(D_v) shows on it whatever hypothesis draws.
LONG = long_sequence_example_as_generated()
# N = 1100, the reference's two slabs of queries, on the column-sum and convex-hull laws (with large logits, for
# the shifted path, in test_robustness: semantic laws keep logits that any softmax exponentiates).
TWO_SLABS = long_sequence_example(TWO_SLABS_N)


@FEW
@given(problem=long_sequence_problems())
@example(problem=LONG)
@example(problem=TWO_SLABS)
def test_long_sequences_attention_columns_are_probability_distributions(
    implementation: Implementation, problem: AttentionProblem
) -> None:
    """Every column of attentions is a distribution over the keys (eq. 12.5), for N from 15 to 700."""
    check_attention_columns_are_probability_distributions(implementation, problem)


@pytest.mark.meta
@LONG_REPR
def test_long_sequences_attention_columns_catch_row_softmax() -> None:
    assert_law_fails(test_long_sequences_attention_columns_are_probability_distributions,
                     implementation=b.broken(b.softmax_over_rows))  # fmt: skip


@FEW
@given(case=long_sequence_problems_with_permutations())
@example(case=(LONG, np.arange(LONG.N)[::-1].copy()))
def test_long_sequences_output_is_equivariant_under_column_permutations(
    implementation: Implementation, case: tuple[AttentionProblem, NDArray[np.intp]]
) -> None:
    """f(X P) = f(X) P (eq. 12.18) for N from 15 to 700, with permutations that move keys across block boundaries."""
    check_output_is_equivariant_under_column_permutations(implementation, case)


@pytest.mark.meta
@LONG_REPR
@pytest.mark.parametrize("bug", [b.blocked_dropping_the_tail_block, b.blocked_reusing_the_first_query_block])
def test_long_sequences_output_is_equivariant_catches(bug: object) -> None:
    assert_law_fails(test_long_sequences_output_is_equivariant_under_column_permutations, implementation=b.broken(bug))


@FEW
@given(problem=long_sequence_problems())
@example(problem=LONG)
@example(problem=TWO_SLABS)
def test_long_sequences_outputs_lie_in_the_convex_hull_of_the_values(
    implementation: Implementation, problem: AttentionProblem
) -> None:
    """min_m V_dm <= X'_dn <= max_m V_dm (eq. 12.3), for N from 15 to 700."""
    check_outputs_lie_in_the_convex_hull_of_the_values(implementation, problem)


@pytest.mark.meta
@LONG_REPR
def test_long_sequences_outputs_lie_in_the_convex_hull_catches_missing_value_bias() -> None:
    assert_law_fails(test_long_sequences_outputs_lie_in_the_convex_hull_of_the_values,
                     implementation=b.broken(b.values_without_bias))  # fmt: skip


@FEW
@given(problem=long_sequence_problems())
@example(problem=LONG)
def test_long_sequences_sharp_queries_select_the_best_matching_value(
    implementation: Implementation, problem: AttentionProblem
) -> None:
    """Sharpened queries make x'_n the value of the best-matching key (hard attention), for N from 15 to 700."""
    check_sharp_queries_select_the_best_matching_value(implementation, problem)


@pytest.mark.meta
@LONG_REPR
def test_long_sequences_sharp_queries_select_catches_uniform_attention() -> None:
    assert_law_fails(test_long_sequences_sharp_queries_select_the_best_matching_value,
                     implementation=b.broken(b.x_prime_only(b.uniform_attention)))  # fmt: skip


@FEW
@given(problem=long_sequence_problems())
@example(problem=LONG)
def test_long_sequences_attentions_are_the_softmax_of_the_scaled_logits(
    implementation: Implementation, problem: AttentionProblem
) -> None:
    """log a_mn - log a_jn = s (k_m - k_j)^T q_n (eqs. 12.5, 12.7-12.9), for N from 15 to 700."""
    check_attentions_are_the_softmax_of_the_scaled_logits(implementation, problem)


@pytest.mark.meta
@LONG_REPR
def test_long_sequences_column_laws_catch_a_dropped_tail_block() -> None:
    def with_attentions(*arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The tail-dropping kernel's weights, as the matrix it implies: keys of the partial last tile get 0."""
        _, A = b.correct_attention(*arrays, scale=1 / np.sqrt(arrays[2].shape[0]))
        N = A.shape[0]
        if N > b.TILE and N % b.TILE:
            A = A.copy()
            A[N - N % b.TILE :] = 0.0
            A /= A.sum(axis=0, keepdims=True)
        return b.blocked_dropping_the_tail_block(*arrays), A

    assert_law_fails(test_long_sequences_attentions_are_the_softmax_of_the_scaled_logits,
                     implementation=b.broken(with_attentions))  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.scale_by_sqrt_D, b.scale_by_sqrt_D_v])
def test_long_sequences_softmax_of_the_scaled_logits_catches_a_wrong_scale_on_the_fixed_example(bug: Any) -> None:
    """The fixed long example alone (no drawn problem) catches a scale by 1/sqrt(D) or 1/sqrt(D_v): D_q != D, D_v."""
    if GENERATION.square:
        pytest.skip("under --square D = D_q = D_v: these scales coincide with 1/sqrt(D_q)")
    law = test_long_sequences_attentions_are_the_softmax_of_the_scaled_logits
    assert_law_fails(law, implementation=b.broken(bug))
    if only_recording():
        return
    body = fresh_body(law)
    with pytest.raises(LawViolation):
        body(implementation=b.broken(bug), problem=LONG)
