"""Meta-tests of the strategies: they generate what their names and docstrings claim."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from properties.helpers.problems import LITERAL_ENTRIES, AttentionOptions, AttentionProblem, code_for
from properties.helpers.strategies import (
    ENTRY_BOUND,
    Dimensions,
    attention_problems,
    dimensions,
    large_logit_problems,
    large_logit_problems_with_options,
    logit_bound,
    matrices,
    permutations_of,
    size_limit,
    unimodular_pairs,
    well_conditioned_matrices,
)

SEARCH = settings(max_examples=2000, database=None)


@pytest.mark.meta
def test_strategy_dimensions_cover_their_whole_range() -> None:
    """Every corner of the dimension box is reachable: N = 1, the largest sizes, and rectangular shapes."""
    side = size_limit()
    for goal in (
        lambda d: d.N == 1,
        lambda d: side + 2 == d.N,
        lambda d: side == d.D and d.D_q == 1 and d.D_v == side,
        lambda d: d.D == 1 and d.D_q == side,
        lambda d: len({d.D, d.D_q, d.D_v}) == 3,
    ):
        found: Dimensions = find(dimensions(), goal, settings=SEARCH)
        assert goal(found)


@pytest.mark.meta
@given(dimensions())
def test_strategy_dimensions_stay_in_bounds(d: Dimensions) -> None:
    side = size_limit()
    assert 1 <= d.D <= side and 1 <= d.D_q <= side and 1 <= d.D_v <= side and 1 <= d.N <= side + 2


@pytest.mark.meta
@given(dimensions(square=True))
def test_strategy_square_dimensions_are_square(d: Dimensions) -> None:
    assert d.D == d.D_q == d.D_v


@pytest.mark.meta
@given(attention_problems())
def test_strategy_problems_are_bounded_finite_and_shaped(problem: AttentionProblem) -> None:
    """Entries finite, within +-ENTRY_BOUND, no subnormals; shapes consistent; betas are columns."""
    D, N, D_q, D_v = problem.D, problem.N, problem.D_q, problem.D_v
    for array, shape in zip(problem.arrays(), AttentionProblem.shapes(D, D_q, D_v, N), strict=True):
        assert array.shape == shape and array.dtype == np.float64
        assert np.isfinite(array).all() and (np.abs(array) <= ENTRY_BOUND).all()
        nonzero = np.abs(array[array != 0])
        assert (nonzero >= np.finfo(np.float64).smallest_normal).all()
        assert not array.flags.writeable


@pytest.mark.meta
@given(matrices(3, 4, bound=0.5))
def test_strategy_matrices_respect_their_bound(matrix: NDArray[np.float64]) -> None:
    assert matrix.shape == (3, 4) and (np.abs(matrix) <= 0.5).all()


@pytest.mark.meta
@given(st.integers(1, 6), st.integers(1, 6), st.data())
def test_strategy_well_conditioned_matrices_bound_their_singular_values(
    rows: int, cols: int, data: st.DataObject
) -> None:
    matrix = data.draw(well_conditioned_matrices(rows, cols, max_condition=10.0))
    sigma = np.linalg.svd(matrix, compute_uv=False)
    assert matrix.shape == (rows, cols)
    assert sigma.max() <= ENTRY_BOUND * (1 + 1e-12) and sigma.min() >= ENTRY_BOUND / 10 * (1 - 1e-12)


@pytest.mark.meta
@given(st.integers(1, 10).flatmap(unimodular_pairs))
def test_strategy_unimodular_pairs_have_exact_inverses(
    pair: tuple[NDArray[np.float64], NDArray[np.float64]],
) -> None:
    M, inverse = pair
    identity = np.eye(M.shape[0])
    assert (M @ inverse == identity).all() and (inverse @ M == identity).all()


@pytest.mark.meta
@given(st.integers(1, 8).flatmap(lambda n: st.tuples(st.just(n), permutations_of(n))))
def test_strategy_permutations_are_permutations(case: tuple[int, NDArray[np.intp]]) -> None:
    n, p = case
    assert sorted(p.tolist()) == list(range(n))


@pytest.mark.meta
def test_strategy_permutations_reach_every_permutation_of_three() -> None:
    for target in [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]:

        def is_target(p: NDArray[np.intp], target: tuple[int, ...] = target) -> bool:
            return tuple(p.tolist()) == target

        assert is_target(find(permutations_of(3), is_target, settings=SEARCH))


@pytest.mark.meta
@given(large_logit_problems())
def test_strategy_large_logit_problems_reach_the_stated_magnitudes(problem: AttentionProblem) -> None:
    """The unscaled logit bound max (Khat^T Qhat) lies in [100, 1e4], up to rounding of the rescaling."""
    bound = logit_bound(problem)
    assert 100 * (1 - 1e-9) <= bound <= 1e4 * (1 + 1e-9)


@pytest.mark.meta
@given(large_logit_problems_with_options())
def test_strategy_large_logit_problems_with_options_reach_the_stated_magnitudes(
    case: tuple[AttentionProblem, AttentionOptions],
) -> None:
    """With the positions added, the unscaled logit bound lies in [100, 1e4]; a bias is within 2 or rescaled so
    that its largest entry is the logit bound."""
    problem, options = case
    X = problem.X if options.positional is None else problem.X + options.positional
    bound = logit_bound(problem.replace(X=X))
    assert 100 * (1 - 1e-9) <= bound <= 1e4 * (1 + 1e-9)
    if options.bias is not None:
        largest = float(np.abs(options.bias).max())
        assert largest <= ENTRY_BOUND or abs(largest - bound) <= 1e-9 * bound


@pytest.mark.meta
def test_strategy_large_logit_problems_with_options_reach_masks_and_large_biases() -> None:
    """Both a mask with logits beyond exp's range and a bias beyond it are drawn."""
    for goal in (
        lambda case: case[1].mask is not None and logit_bound(case[0]) > 710,
        lambda case: case[1].bias is not None and float(np.abs(case[1].bias).max()) > 710,
    ):
        find(large_logit_problems_with_options(), goal, settings=settings(SEARCH, phases=[Phase.generate]))


@pytest.mark.meta
@pytest.mark.parametrize(
    "array",
    [
        np.zeros((2, 0)),
        np.array([[0.1, -0.0, np.inf, -np.inf, np.nan, 5e-324]]),
        np.random.default_rng(0).standard_normal((LITERAL_ENTRIES + 1, 1)) * 1e-300,
        np.random.default_rng(1).random((130, 130)) < 0.5,
    ],
    ids=["empty", "special-values", "large", "large-mask"],
)
def test_code_for_rebuilds_an_array_exactly(array: NDArray[np.generic]) -> None:
    """The code printed for an array (problems, options, snippets) evaluates to the same shape, dtype kind and
    bytes (NaN, -0.0 and subnormals included), as a nested list or, beyond LITERAL_ENTRIES entries, as hex."""
    rebuilt = eval(code_for(array), {"np": np})
    assert rebuilt.shape == array.shape and rebuilt.dtype.kind == array.dtype.kind
    assert rebuilt.astype(array.dtype).tobytes() == array.tobytes()
    assert ("fromhex" in code_for(array)) == (array.size > LITERAL_ENTRIES)


@pytest.mark.meta
def test_strategy_masks_reach_the_edges() -> None:
    """masks() draws every key hidden, every key visible, and masks with both an all-False row (a key no query
    sees) and an all-False column (a query that sees no key) beside visible entries."""
    from properties.helpers.strategies import masks

    for goal in (
        lambda m: m.shape == (3, 3) and not m.any(),
        lambda m: m.shape == (3, 3) and m.all(),
        lambda m: m.shape == (4, 4) and (~m.any(axis=0)).any() and (~m.any(axis=1)).any() and m.any(),
    ):
        find(st.integers(3, 4).flatmap(masks), goal, settings=settings(SEARCH, phases=[Phase.generate]))


def test_a_composite_is_one_object_per_arguments_and_draws_what_a_new_one_draws() -> None:
    """strategies.composite reuses the strategy object for the same hashable arguments (hypothesis validates a new
    one afresh at each draw); an unhashable argument gets a new object; both draw what st.composite's would."""
    from properties.helpers.hypothesis_internals import draws
    from properties.helpers.strategies import composite

    def pairs(draw: st.DrawFn, low: object) -> tuple[int, int]:
        start = int(np.min(low))  # type: ignore[call-overload]
        return draw(st.integers(start, start + 9)), draw(st.integers(0, 3))

    reused, plain = composite(pairs), st.composite(pairs)
    assert reused(1) is reused(1) and reused(low=1) is reused(low=1)
    assert reused(1) is not reused(2)
    assert reused(np.array([4, 5])) is not reused(np.array([4, 5]))

    def law_of(strategy: st.SearchStrategy[tuple[int, int]]) -> Callable[..., None]:
        @given(pair=strategy)
        def law(pair: tuple[int, int]) -> None:
            pass

        return law

    quick = settings(max_examples=30, database=None, phases=[Phase.generate])
    for argument in (1, np.array([4, 5])):
        assert draws(law_of(reused(argument)), quick, seed_of=3) == draws(law_of(plain(argument)), quick, seed_of=3)
