"""The edges: no inputs (N = 0) and a single input (N = 1), with and without every keyword option.

One topic a module: every law about N = 0 or N = 1 is here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, reject, settings
from hypothesis.errors import Unsatisfiable
from numpy.typing import NDArray

from properties.catalogues import mistakes as b
from properties.helpers.checks import (
    assert_close,
    call,
    option_bounds,
    require_some_option,
    supported,
)
from properties.helpers.implementations import SET_ASIDE, Implementation, TargetRaised
from properties.helpers.meta import assert_law_fails
from properties.helpers.problems import AttentionOptions, AttentionProblem
from properties.helpers.strategies import (
    attention_problems,
    dimensions,
    problems_with_options,
)

pytestmark = pytest.mark.semantics
Array = NDArray[np.float64]
Case = tuple[AttentionProblem, AttentionOptions]


# A function that raises on the empty input without options SKIPs at once (its choice, named by the conventions law);
# one that raises only under some option has those examples set aside, and if every one is, hypothesis reports the
# law unsatisfiable (which the plugin turns into a SKIP naming why), not a filtering health check.
@settings(suppress_health_check=[HealthCheck.filter_too_much])
@given(case=problems_with_options(dimensions(min_n=0, max_n=0)))
def test_no_inputs_give_empty_outputs_under_every_option(implementation: Implementation, case: Case) -> None:
    """N = 0, when the function returns: X' is D_v x 0 and attentions 0 x 0, with any options it takes (an empty
    mask, bias and Pi). Raising instead is a convention (test_conventions.py), not judged here."""
    problem, options = case
    options = supported(implementation, options)
    note(f"options given: {sorted(options.keywords())}")
    try:
        call(implementation, problem, options)  # the wrapper checks the shapes and the dtype
    except TargetRaised:
        # An empty input refused: a choice, named by test_no_inputs_give_empty_outputs_or_raise, and nothing
        # checked here. Refused without options, the function has made that choice for N = 0: the law SKIPs (rather
        # than drawing hundreds of problems it would refuse alike); under an option, the example is set aside.
        if not options.keywords():
            pytest.skip("the function raises on an empty input (N = 0): a convention, judged in conventions")
        SET_ASIDE["the function raised on an empty input under an option (a convention, judged in conventions)"] += 1
        reject()


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.empty_output_of_width_D, b.empty_output_with_options_of_width_D])
def test_no_inputs_give_empty_outputs_catches(bug: Any) -> None:
    assert_law_fails(test_no_inputs_give_empty_outputs_under_every_option, implementation=b.broken(bug))


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
def test_a_single_input_attends_to_itself_under_every_option_catches(bug: Any) -> None:
    assert_law_fails(test_a_single_input_attends_to_itself_under_every_option, implementation=b.broken(bug))


@given(problem=attention_problems(dimensions(max_n=1)))
def test_a_single_input_attends_to_itself(implementation: Implementation, problem: AttentionProblem) -> None:
    """N = 1: attentions = [[1]] and X' = v_1 = omega_v x_1 + beta_v (a softmax over one key)."""
    result = implementation(problem)
    bounds = implementation.bounds(problem, result.eps)
    assert_close(result.X_prime, problem.values(), (bounds + bounds).x_prime, what="for N = 1, X' must be v_1")
    if result.attentions is not None:
        assert_close(result.attentions, [[1.0]], bounds.attentions, what="for N = 1, attentions must be [[1]]")


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.values_without_bias, b.bias_tiled_for_three_inputs])
def test_a_single_input_attends_to_itself_catches(bug: object) -> None:
    assert_law_fails(test_a_single_input_attends_to_itself, implementation=b.broken(bug))


@pytest.mark.meta
def test_no_inputs_skips_a_function_that_refuses_the_empty_input_at_once() -> None:
    """A function that raises on N = 0 has made a choice (the conventions law names it): this law SKIPs, and says
    why, at the first example it refuses without options, instead of drawing hundreds it would refuse alike."""
    from properties.helpers.implementations import REFERENCE

    reference = REFERENCE["scaled"].function
    calls: list[int] = []

    def refusing(X: Array, *parameters: Array, **options: Any) -> Any:
        calls.append(X.shape[1])
        if X.shape[1] == 0:
            raise ValueError("no inputs")
        return reference(X, *parameters, **options)

    def law() -> None:
        try:
            test_no_inputs_give_empty_outputs_under_every_option(implementation=Implementation(refusing, "scaled"))
        except Unsatisfiable as error:  # which the plugin would report as a SKIP too, after hundreds of problems
            raise AssertionError("every problem was set aside instead of a SKIP at once") from error

    with pytest.raises(pytest.skip.Exception, match=r"raises on an empty input \(N = 0\): a convention"):
        law()
    assert len(calls) < 20
