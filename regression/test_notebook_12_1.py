"""Golden values of notebook 12.1, checked on the implementation under test."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from properties.catalogues import mistakes as b
from properties.helpers.checks import assert_close
from properties.helpers.implementations import Implementation
from properties.helpers.meta import assert_law_fails
from regression.goldens import load, notebook_12_1_problem

pytestmark = pytest.mark.golden
GOLDEN = load("notebook_12_1")


def printed_tolerance(decimals: int, derived: NDArray[np.float64]) -> NDArray[np.float64]:
    """A value printed to `decimals` places is within half a unit of the last place of the notebook's float64
    value; this evaluation and that one are each within the forward-error bound `derived` of the truth. The
    errors add (a max of the two would not be sound), so the sum is the tolerance."""
    return 0.5 * 10.0**-decimals + 2 * derived


def test_output_matches_the_values_printed_in_the_notebook(implementation: Implementation) -> None:
    """Unscaled self-attention reproduces x_prime_n_true as the notebook prints them (8 decimals), within half
    a unit of the last printed place plus the forward-error bound of two evaluations."""
    if implementation.kind != "unscaled":
        pytest.skip("the notebook prints reference values for unscaled self-attention only")
    printed = GOLDEN["notebook_printed"]
    problem = notebook_12_1_problem()
    result = implementation(problem)
    assert_close(
        result.X_prime.T,
        np.array(printed["unscaled_X_prime_columns"]),
        printed_tolerance(printed["decimals"], implementation.bounds(problem, result.eps).x_prime.T),
        what="X' against the notebook's x_prime_n_true",
    )


@pytest.mark.meta
def test_output_matches_the_printed_values_catches_a_scale_in_unscaled_attention() -> None:
    assert_law_fails(test_output_matches_the_values_printed_in_the_notebook,
                     implementation=b.broken(b.scaled_by_sqrt_D_q, kind="unscaled"))  # fmt: skip


def test_scaled_attentions_match_the_known_values(implementation: Implementation) -> None:
    """Scaled attention reproduces the attention matrix filed with the foundation issue, to 1e-8 plus the
    forward-error bound of two evaluations (which the dtype returned may make larger)."""
    if implementation.kind != "scaled":
        pytest.skip("these are values of scaled dot-product attention")
    known = GOLDEN["known_scaled_attentions"]
    problem = notebook_12_1_problem()
    result = implementation(problem)
    A = result.require_attentions()
    derived = 2 * implementation.bounds(problem, result.eps).attentions  # the filed values' evaluation and this one
    assert_close(A, np.array(known["attentions"]), known["tolerance"] + derived,
                 what="scaled attention matrix")  # fmt: skip


@pytest.mark.meta
def test_scaled_attentions_match_the_known_values_catches_a_scale_by_D_q() -> None:
    assert_law_fails(test_scaled_attentions_match_the_known_values, implementation=b.broken(b.scale_by_D_q))


def test_outputs_match_the_50_digit_computation(implementation: Implementation) -> None:
    """X' and attentions agree with the independent 50-digit computation within the forward-error bounds."""
    exact = GOLDEN["exact"][implementation.kind]
    problem = notebook_12_1_problem()
    result = implementation(problem)
    bounds = implementation.bounds(problem, result.eps)
    assert_close(result.X_prime, np.array(exact["X_prime"]), bounds.x_prime, what="X' against 50-digit values")
    if result.attentions is not None:
        assert_close(
            result.attentions,
            np.array(exact["attentions"]),
            np.broadcast_to(bounds.attentions, (problem.N, problem.N)),
            what="attentions against 50-digit values",
        )


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.scale_by_D_q, b.softmax_over_rows])
def test_outputs_match_the_50_digit_computation_catches(bug: object) -> None:
    assert_law_fails(test_outputs_match_the_50_digit_computation, implementation=b.broken(bug))


def test_permuting_the_notebooks_inputs_permutes_the_outputs(implementation: Implementation) -> None:
    """The notebook's closing TODO: permuting the columns of X by [1, 2, 0] permutes the columns of X'."""
    p = np.array(GOLDEN["permutation"]["columns"])
    problem = notebook_12_1_problem()
    original, permuted = implementation(problem), implementation(problem.with_columns(p))
    bounds = implementation.bounds(problem, max(original.eps, permuted.eps))
    assert_close(permuted.X_prime, original.X_prime[:, p], (bounds + bounds).x_prime, what="X' of permuted inputs")


@pytest.mark.meta
def test_permuting_the_notebooks_inputs_catches_a_positional_bias() -> None:
    assert_law_fails(
        test_permuting_the_notebooks_inputs_permutes_the_outputs, implementation=b.broken(b.positional_bias)
    )
