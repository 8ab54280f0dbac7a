"""Conventions: choices the mathematics or the API leaves open, reported in a category of their own
(`conventions`), apart from `semantics`, so that an implementation with another convention is told so once and
judged on everything else.

A query that sees no key (an all-False column of the mask, alone or with causal) has no softmax to take: the
reference gives it a zero column; other implementations give NaN or uniform weights. Every other law judges only the
queries that see a key (see the no-false-alarm meta-tests `test_other_conventions_pass_the_*_laws` beside those laws,
in test_masks.py, test_biases.py, test_invariances.py and test_attention_matrix.py).

An empty input (N = 0; L = 0 or S = 0 in the row convention) is an API choice too: the reference returns empty
outputs; numpy's `logits.max(axis=0)`, scipy.special.softmax and many kernels raise. Both are conventions; what
an implementation that returns gives is judged in `semantics` (test_edges.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from numpy.typing import NDArray

from properties.catalogues import mistakes as b
from properties.helpers.checks import LawViolation, call, observe, supported
from properties.helpers.implementations import Implementation, TargetRaised
from properties.helpers.meta import assert_law_fails
from properties.helpers.problems import AttentionOptions, AttentionProblem
from properties.helpers.strategies import dimensions, problems_with_options

pytestmark = pytest.mark.conventions

CONVENTIONS = {
    "zero": "a zero column in attentions and X' (the reference's convention)",
    "nan": "NaN (a softmax over logits that are all -inf: 0 / 0; PyTorch's math backend)",
    "uniform": "uniform weights over every key (a finite fill such as torch.finfo(dtype).min hides nothing "
    "when every key is hidden)",
    "raise": "a raised exception",
}


def convention_of(
    X_prime: NDArray[np.floating], attentions: NDArray[np.floating] | None, problem: AttentionProblem
) -> str:
    """Which known convention the columns of a query that sees no key follow ("other" if none)."""
    if np.isnan(X_prime).any() or (attentions is not None and np.isnan(attentions).any()):
        return "nan"
    if (X_prime == 0).all() and (attentions is None or (attentions == 0).all()):
        return "zero"
    if attentions is not None and np.allclose(attentions, 1 / problem.N, rtol=0, atol=1e-6):
        return "uniform"
    return "other"


@given(case=problems_with_options(dimensions(min_n=1), hidden_query=True))
def test_a_query_that_sees_no_key_gets_a_zero_column(
    implementation: Implementation, case: tuple[AttentionProblem, AttentionOptions]
) -> None:
    """Convention: a query n that sees no key (mask[:, n] all False, or with causal no visible m <= n) gets
    attentions[:, n] = 0 and x'_n = 0 exactly. Other conventions (NaN, uniform weights) are not wrong
    mathematically, since the softmax over no keys is undefined; the other laws judge only the other queries."""
    implementation.require("mask")
    problem, options = case
    options = supported(implementation, options)
    unseen = ~options.sees_a_key(problem.N)
    queries = np.flatnonzero(unseen).tolist()
    try:
        result = implementation(problem, **options.keywords())
    except TargetRaised as error:
        observe(f"{CONVENTIONS['raise']}: {error}")
        raise LawViolation(f"the queries {queries} see no key; expected {CONVENTIONS['zero']}, got {error}") from error
    X_prime = result.X_prime[:, unseen]
    attentions = None if result.attentions is None else result.attentions[:, unseen]
    found = convention_of(X_prime, attentions, problem)
    observe(CONVENTIONS.get(found, "another fill"))
    if found != "zero":
        raise LawViolation(
            f"the queries {queries} see no key; expected {CONVENTIONS['zero']}, got "
            + (CONVENTIONS[found] if found in CONVENTIONS else f"x' = {X_prime.T.tolist()}")
        )


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.nan_for_queries_without_keys, b.uniform_for_queries_without_keys])
def test_a_query_that_sees_no_key_gets_a_zero_column_catches(bug: Any) -> None:
    assert_law_fails(test_a_query_that_sees_no_key_gets_a_zero_column, implementation=b.broken(bug))


@given(case=problems_with_options(dimensions(min_n=0, max_n=0)))
def test_no_inputs_give_empty_outputs_or_raise(
    implementation: Implementation, case: tuple[AttentionProblem, AttentionOptions]
) -> None:
    """Convention: N = 0 (no inputs; L = S = 0 in the row convention) gives either empty outputs of the right
    shapes (X' D_v x 0, attentions 0 x 0: the reference's choice) or a raised exception (numpy's
    logits.max(axis=0), scipy.special.softmax); both are choices, and the report names the one seen. Anything
    else (outputs of the wrong shapes or kind) fails here and in semantics."""
    problem, options = case
    options = supported(implementation, options)
    try:
        call(implementation, problem, options)
    except TargetRaised as error:
        cause = error.__cause__
        observe(f"raises {type(cause).__name__} on an empty input" if cause is not None else str(error))
        return
    observe("empty outputs of the right shapes")


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.empty_output_of_width_D])
def test_no_inputs_give_empty_outputs_or_raise_catches(bug: Any) -> None:
    assert_law_fails(test_no_inputs_give_empty_outputs_or_raise, implementation=b.broken(bug))
