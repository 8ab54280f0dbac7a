"""Hypothesis strategies for self-attention problems, each named by what it generates."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import numpy as np
from hypothesis import assume, reject
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from attention import sinusoidal_positional_encoding
from properties.helpers.exact import softmax_columns
from properties.helpers.options import DEFAULT_SIZE_LIMIT, GENERATION, SIZE_LIMITS
from properties.helpers.problems import (
    ARGUMENT_ORDER,
    AttentionOptions,
    AttentionProblem,
    BatchedProblem,
    Head,
    MultiheadProblem,
)

Array = NDArray[np.float64]

# Largest D, D_q, D_v by hypothesis profile (options.SIZE_LIMITS; N may be two larger). Small sizes find the
# bugs that matter (shapes, axes, scales) and keep every example fast; `thorough` reaches further.
# Entries are drawn from [-ENTRY_BOUND, ENTRY_BOUND], so |q|, |k| reach D B^2 + B and the logits about
# D_q (D B^2 + B)^2 before attention_problems halves the queries: both near-uniform and near-one-hot columns.
ENTRY_BOUND = 2.0
# large_logit_problems multiplies the queries by at most this much.
MAX_QUERY_GAIN = 1e12
# Logits of ordinary problems stay within +-64 (exp(64) ~ 6e27): the semantic laws then hold for any
# softmax, shifted or not; even after a law multiplies the queries by up to 8 (exp(512) ~ 1e222).
SEMANTIC_LOGIT_BOUND = 64.0


def size_limit() -> int:
    """The largest matrix side for the hypothesis profile in force."""
    from hypothesis import settings

    return SIZE_LIMITS.get(settings.get_current_profile_name(), DEFAULT_SIZE_LIMIT)


P = ParamSpec("P")
T = TypeVar("T")


def composite(definition: Callable[Concatenate[st.DrawFn, P], T]) -> Callable[P, st.SearchStrategy[T]]:
    """hypothesis's st.composite, returning the same strategy object for the same (hashable) arguments.

    A composite strategy called inside another one per draw (attention_problems(dims) in masks, say) is a new
    object each time, and hypothesis binds its arguments, validates it and computes its properties afresh; the same
    object draws exactly what a new one would. Unhashable arguments (an array) get a new object, as before."""
    strategy = st.composite(definition)
    cached = cast(Callable[P, st.SearchStrategy[T]], functools.lru_cache(maxsize=4096, typed=True)(strategy))

    @functools.wraps(strategy)
    def reused(*args: P.args, **kwargs: P.kwargs) -> st.SearchStrategy[T]:
        try:
            hash((args, tuple(kwargs.items())))
        except TypeError:
            return strategy(*args, **kwargs)
        return cached(*args, **kwargs)

    return reused


@dataclass(frozen=True)
class Dimensions:
    """The sizes of one problem: inputs of dimension D, queries and keys of D_q, values of D_v; N inputs."""

    D: int
    D_q: int
    D_v: int
    N: int


@composite
def dimensions(
    draw: st.DrawFn,
    *,
    max_side: int | None = None,
    min_n: int = 1,
    max_n: int | None = None,
    square: bool | None = None,
) -> Dimensions:
    """Independent D, D_q, D_v in [1, max_side] and N in [min_n, max_side + 2] (D_q = D_v = D if square)."""
    side = size_limit() if max_side is None else max_side
    top_n = side + 2 if max_n is None else max_n
    D = draw(st.integers(1, side))
    if GENERATION.square if square is None else square:
        D_q = D_v = D
    else:
        D_q = draw(st.integers(1, side))
        D_v = draw(st.integers(1, side))
    N = draw(st.integers(min_n, max(min_n, top_n)))
    return Dimensions(D, D_q, D_v, N)


# The array strategies below are cached by their arguments: a composite strategy asks for one per drawn shape, and
# hypothesis validates each new strategy object and computes its properties afresh (a third of a law's generation
# time when built anew per draw); the same object draws exactly what a new one would.
CACHE = functools.lru_cache(maxsize=4096)


@CACHE
def finite_floats(bound: float = ENTRY_BOUND) -> st.SearchStrategy[float]:
    """Floats in [-bound, bound]: no NaN, no infinity, no subnormals."""
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64)


@CACHE
def finite_arrays(shape: tuple[int, ...], bound: float = ENTRY_BOUND) -> st.SearchStrategy[Array]:
    """float64 arrays of `shape` with entries in [-bound, bound] (finite_floats)."""
    return hnp.arrays(np.float64, shape, elements=finite_floats(bound))


@CACHE
def float_arrays(shape: tuple[int, ...], low: float, high: float) -> st.SearchStrategy[Array]:
    """float64 arrays of `shape` with entries in [low, high] (hypothesis's st.floats(low, high))."""
    return hnp.arrays(np.float64, shape, elements=st.floats(low, high))


@CACHE
def integer_arrays(dtype: type, shape: tuple[int, ...], low: int, high: int) -> st.SearchStrategy[NDArray[Any]]:
    """Integer arrays of `dtype` and `shape` with entries in [low, high]."""
    return hnp.arrays(dtype, shape, elements=st.integers(low, high))


@CACHE
def boolean_arrays(shape: tuple[int, ...]) -> st.SearchStrategy[NDArray[np.bool_]]:
    """Boolean arrays of `shape`."""
    return hnp.arrays(np.bool_, shape)


def arrays_of_shapes(
    draw: st.DrawFn,
    shapes: Sequence[tuple[int, ...]],
    entries: Callable[[tuple[int, ...]], st.SearchStrategy[Array]],
    label: str,
) -> list[Array]:
    """Arrays of the given shapes from one draw of `entries((total size,))`, split in order: one array strategy
    drawn once costs hypothesis a fraction of one drawn per array, and shrinks as well (attention_problems)."""
    sizes = [math.prod(shape) for shape in shapes]
    flat = draw(entries((sum(sizes),)), label=label)
    parts = np.split(flat, np.cumsum(sizes)[:-1])
    return [part.reshape(shape) for part, shape in zip(parts, shapes, strict=True)]


def matrices(rows: int, cols: int, *, bound: float = ENTRY_BOUND) -> st.SearchStrategy[Array]:
    """rows x cols float64 matrices with entries in [-bound, bound]."""
    return finite_arrays((rows, cols), bound)


def columns(rows: int, *, bound: float = ENTRY_BOUND) -> st.SearchStrategy[Array]:
    """Bias vectors: rows x 1 float64 columns with entries in [-bound, bound]."""
    return matrices(rows, 1, bound=bound)


@composite
def well_conditioned_matrices(
    draw: st.DrawFn, rows: int, cols: int, *, max_condition: float = 10.0, bound: float = ENTRY_BOUND
) -> Array:
    """rows x cols matrices of full rank whose singular values lie within a factor max_condition.

    Drawn as U diag(sigma) V^T with U, V orthonormal (QR of drawn Gaussian-like matrices) and sigma in
    [bound / max_condition, bound]: for laws that need non-degenerate weights.
    """
    k = min(rows, cols)
    seed = draw(st.integers(0, 2**32 - 1), label="orthonormal factors seed")
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((rows, k)))
    V, _ = np.linalg.qr(rng.standard_normal((cols, k)))
    sigma = draw(
        float_arrays((k,), bound / max_condition, bound),
        label="singular values",
    )
    return np.asarray((U * sigma) @ V.T)


@composite
def unimodular_pairs(draw: st.DrawFn, n: int) -> tuple[Array, Array]:
    """(M, M^-1) for invertible n x n matrices M whose inverse is exactly representable.

    M = L U S with L, U unit triangular with entries in {-1, 0, 1} and S a diagonal of powers of two in
    [1/4, 4]: the inverse S^-1 U^-1 L^-1 has integer-over-power-of-two entries (at most 2^(2n+2) in size,
    exact in float64 for n < 25), so the law, not the construction, is what a test of it measures.
    """

    def unit_triangular(lower: bool) -> NDArray[np.int64]:
        entries = draw(integer_arrays(np.int64, (n, n), -1, 1))
        T = np.tril(entries, -1) if lower else np.triu(entries, 1)
        return np.asarray(T + np.eye(n, dtype=np.int64))

    def integer_inverse(T: NDArray[np.int64]) -> NDArray[np.int64]:
        # Unit triangular: det = 1, so the inverse is integral; np.linalg.inv is exact to rounding and
        # its rounded result recovers the integers.
        return np.rint(np.linalg.inv(T.astype(np.float64))).astype(np.int64)

    L, U = unit_triangular(True), unit_triangular(False)
    exponents = draw(integer_arrays(np.int64, (n,), -2, 2))
    S = np.ldexp(1.0, exponents)
    LU = L @ U
    M = LU.astype(np.float64) * S  # scales column j by S_j: exact, a power of two
    inverse = (integer_inverse(U) @ integer_inverse(L)).astype(np.float64) / S.reshape(-1, 1)
    return M, inverse


def inputs(D: int, N: int, *, bound: float = ENTRY_BOUND) -> st.SearchStrategy[Array]:
    """Inputs X: D x N, one input per column."""
    return matrices(D, N, bound=bound)


def permutations_of(n: int) -> st.SearchStrategy[NDArray[np.intp]]:
    """Permutations of range(n) as index arrays (X[:, p] permutes the columns)."""
    return st.permutations(range(n)).map(lambda p: np.asarray(p, dtype=np.intp))


def with_queries_scaled(problem: AttentionProblem, factor: float) -> AttentionProblem:
    """The problem with omega_q and beta_q multiplied by `factor`, entries that fall below the smallest
    normal number flushed to zero (the strategies promise no subnormals)."""

    def scaled(array: Array) -> Array:
        result = array * factor
        result[np.abs(result) < np.finfo(np.float64).smallest_normal] = 0.0
        return result

    return problem.replace(omega_q=scaled(problem.omega_q), beta_q=scaled(problem.beta_q))


def logit_bound(problem: AttentionProblem) -> float:
    """max over (m, n) of (Khat^T Qhat)_mn (AttentionProblem.logit_bounds): a bound on every unscaled logit."""
    return float(problem.logit_bounds().max(initial=0.0))


def with_logits_within(
    problem: AttentionProblem, max_logit: float, *, positions: Array | None = None
) -> AttentionProblem:
    """The problem with omega_q and beta_q halved as often as needed for every unscaled logit (of X + positions,
    when given) to be bounded by max_logit; powers of two keep the drawn numbers exact."""
    largest = logit_bound(problem if positions is None else problem.replace(X=problem.X + positions))
    if largest <= max_logit:
        return problem
    return with_queries_scaled(problem, 2.0 ** -int(np.ceil(np.log2(largest / max_logit))))


@composite
def attention_problems(
    draw: st.DrawFn,
    dims: st.SearchStrategy[Dimensions] | None = None,
    *,
    bound: float = ENTRY_BOUND,
    max_logit: float | None = SEMANTIC_LOGIT_BOUND,
) -> AttentionProblem:
    """X and the six parameters of self-attention, for dimensions drawn from `dims`.

    With `max_logit`, omega_q and beta_q are halved as often as needed for every logit to be bounded by it
    (powers of two keep the drawn numbers exact): ordinary problems, on which even a softmax without the
    shift by the column maximum cannot overflow. Large logits are the business of large_logit_problems.
    """
    d = draw(dimensions() if dims is None else dims, label="dimensions")
    shapes = [(d.D, d.N), (d.D_v, d.D), (d.D_q, d.D), (d.D_q, d.D), (d.D_v, 1), (d.D_q, 1), (d.D_q, 1)]
    sizes = [rows * cols for rows, cols in shapes]
    # One draw for all seven arrays: four times faster to generate than seven, and it shrinks as well.
    entries = draw(
        finite_arrays((sum(sizes),), bound),
        label="entries of X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, in that order",
    )
    parts = np.split(entries, np.cumsum(sizes)[:-1])
    problem = AttentionProblem(*(part.reshape(shape) for part, shape in zip(parts, shapes, strict=True)))
    return problem if max_logit is None else with_logits_within(problem, max_logit)


def _large_logit_target(draw: st.DrawFn, current: float, largest: float) -> float:
    """A logit magnitude drawn log-uniformly from [100, `largest`], for a problem whose logit bound is `current`;
    a problem that would need queries scaled by more than MAX_QUERY_GAIN (queries or keys nearly all zero,
    giving queries of absurd size) is rejected."""
    target = float(10 ** draw(st.floats(2.0, float(np.log10(largest))), label="log10 of the logit magnitude"))
    if current * MAX_QUERY_GAIN < target:
        reject()
    return target


@composite
def large_logit_problems(
    draw: st.DrawFn, dims: st.SearchStrategy[Dimensions] | None = None, *, largest: float = 1e4
) -> AttentionProblem:
    """Problems whose logits reach magnitudes between 100 and `largest` (about 1e4 by default).

    A drawn problem's omega_q and beta_q are rescaled so that the bound on |K^T Q| (unscaled) equals a
    target drawn log-uniformly from [100, largest] (_large_logit_target).
    """
    problem = draw(attention_problems(dims, max_logit=None))
    current = logit_bound(problem)
    return with_queries_scaled(problem, _large_logit_target(draw, current, largest) / current)


@composite
def large_logit_problems_with_options(
    draw: st.DrawFn, *, largest: float = 1e4
) -> tuple[AttentionProblem, AttentionOptions]:
    """A problem (N >= 2) and options (positions, mask, causal, bias) whose logits, positions included, reach
    magnitudes between 100 and `largest` as in large_logit_problems; a drawn bias is often rescaled to the same
    magnitude, so that a bias alone can also set the logits far beyond exp's range."""
    problem, options = draw(problems_with_options())
    X = problem.X if options.positional is None else problem.X + options.positional
    current = logit_bound(problem.replace(X=X))
    target = _large_logit_target(draw, current, largest)
    problem = with_queries_scaled(problem, target / current)
    bias = options.bias
    if bias is not None and np.abs(bias).max() > 0 and draw(st.booleans(), label="bias as large?"):
        options = options.replace(bias=bias * (target / np.abs(bias).max()))
    return problem, options


@composite
def problems_with_permutations(
    draw: st.DrawFn, problems: st.SearchStrategy[AttentionProblem] | None = None
) -> tuple[AttentionProblem, NDArray[np.intp]]:
    """A problem and a permutation of its N inputs."""
    problem = draw(attention_problems() if problems is None else problems)
    return problem, draw(permutations_of(problem.N), label="permutation")


@composite
def symmetric_positive_definite_matrices(draw: st.DrawFn, n: int, *, low: float = 0.5, high: float = 2.0) -> Array:
    """n x n symmetric matrices U diag(lambda) U^T with U orthonormal and every eigenvalue in [low, high]."""
    seed = draw(st.integers(0, 2**32 - 1), label="eigenvector seed")
    U, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    eigenvalues = draw(float_arrays((n,), low, high), label="eigenvalues")
    return np.asarray((U * eigenvalues) @ U.T)


@composite
def problems_with_value_shifts(
    draw: st.DrawFn, *, at_least: float = 0.0
) -> tuple[AttentionProblem, NDArray[np.float64]]:
    """A problem and a shift c (D_v x 1) of its value bias with max |c_d| >= at_least."""
    problem = draw(attention_problems())
    shifts = columns(problem.D_v)
    if at_least > 0:
        shifts = shifts.filter(lambda c: bool(np.abs(c).max() >= at_least))
    return problem, draw(shifts, label="c")


@composite
def multihead_problems(draw: st.DrawFn, max_heads: int = 3, min_heads: int = 1) -> MultiheadProblem:
    """min_heads to max_heads heads on one X, each with its own D_q and D_v (often all of one shape), and an
    omega_c for their stacked outputs."""
    side = size_limit()
    base = draw(attention_problems(dimensions(max_side=side)), label="X and the first head")
    heads = [base.arrays()[1:]]
    one_shape = draw(st.booleans(), label="every head of the first head's shape?")
    for _ in range(draw(st.integers(min_heads, max_heads), label="H") - 1):
        if one_shape:
            D_q, D_v = base.D_q, base.D_v
        else:
            D_q, D_v = draw(st.integers(1, side), label="D_q"), draw(st.integers(1, side), label="D_v")
        shapes = AttentionProblem.shapes(base.D, D_q, D_v, base.N)[1:]
        sizes = [rows * cols for rows, cols in shapes]
        # One draw for the six arrays, as in attention_problems: much faster to generate than six.
        entries = draw(finite_arrays((sum(sizes),)),
                       label="entries of omega_v, omega_q, omega_k, beta_v, beta_q, beta_k")  # fmt: skip
        parts = np.split(entries, np.cumsum(sizes)[:-1])
        arrays = [part.reshape(shape) for part, shape in zip(parts, shapes, strict=True)]
        head = with_logits_within(AttentionProblem(base.X, *arrays), SEMANTIC_LOGIT_BOUND)
        heads.append(head.arrays()[1:])
    rows = draw(st.integers(1, side), label="rows of omega_c")
    omega_c = draw(matrices(rows, sum(head[0].shape[0] for head in heads)), label="omega_c")
    stacked: tuple[Head, ...] = tuple(heads)  # type: ignore[arg-type]
    return MultiheadProblem(base.X, stacked, omega_c)


# --- Logit matrices for the column softmax (properties/test_softmax.py) ---

# Logits of moderate size for the semantic softmax laws; the robustness law spans the whole float range.
SOFTMAX_LOGIT_BOUND = 50.0


@composite
def logit_matrices(draw: st.DrawFn, bound: float = SOFTMAX_LOGIT_BOUND) -> Array:
    """Matrices of logits, N x columns with N in [1, 8] and columns in [1, 4]."""
    rows, cols = draw(st.integers(1, 8), label="N"), draw(st.integers(1, 4), label="columns")
    return draw(matrices(rows, cols, bound=bound), label="logits")


@composite
def logits_with_column_shifts(draw: st.DrawFn) -> tuple[Array, Array]:
    data = draw(logit_matrices())
    return data, draw(matrices(1, data.shape[1], bound=SOFTMAX_LOGIT_BOUND), label="shift per column")


# --- Problems paired with what the value laws vary ---


@composite
def problems_with_second_values(draw: st.DrawFn) -> tuple[AttentionProblem, Array, Array, float, float]:
    problem = draw(attention_problems())
    omega_v = draw(matrices(problem.D_v, problem.D), label="second omega_v")
    beta_v = draw(columns(problem.D_v), label="second beta_v")
    a, c = draw(finite_floats(), label="a"), draw(finite_floats(), label="b")
    return problem, omega_v, beta_v, a, c


@composite
def problems_with_repeated_inputs(draw: st.DrawFn) -> tuple[AttentionProblem, NDArray[np.intp]]:
    """A problem whose inputs repeat: X = X0[:, index] with at least one index drawn twice."""
    problem = draw(attention_problems(dimensions(min_n=1)))
    n = draw(st.integers(problem.N + 1, problem.N + 4), label="number of inputs after repetition")
    index = np.asarray(draw(st.lists(st.integers(0, problem.N - 1), min_size=n, max_size=n), label="index"))
    return problem.with_columns(index), index


# --- Problems paired with what the invariance laws vary ---


@composite
def problems_with_second_key_bias(draw: st.DrawFn) -> tuple[AttentionProblem, NDArray[np.float64]]:
    problem = draw(attention_problems())
    return problem, draw(columns(problem.D_q), label="second beta_k")


@composite
def problems_with_gauges(
    draw: st.DrawFn,
) -> tuple[AttentionProblem, NDArray[np.float64], NDArray[np.float64]]:
    problem = draw(attention_problems())
    M, M_inverse = draw(unimodular_pairs(problem.D_q), label="(M, M^-1)")
    return problem, M, M_inverse


# --- Temperatures ---


@composite
def problems_with_temperatures(draw: st.DrawFn) -> tuple[AttentionProblem, float]:
    return draw(attention_problems()), draw(st.floats(1.0, 8.0), label="t")


# --- Masks, causal attention and logit biases ---

# Later (or hidden) inputs are multiplied by up to this much: whatever they become must not matter.
HUGE = 1e6


def circulant(first_column: Array) -> Array:
    """B[m, n] = c[(n - m) mod N]: a bias that depends on the distance n - m on a ring only."""
    N = first_column.shape[0]
    index = (np.arange(N)[None, :] - np.arange(N)[:, None]) % N
    return np.asarray(first_column[index])


def huge_scales() -> st.SearchStrategy[float]:
    """Scales in [1, HUGE], log-uniform: every magnitude drawn alike, so that a kernel in float16 (largest number
    65504), which cannot hold the larger ones, still meets many within its range."""
    return st.floats(0.0, float(np.log10(HUGE))).map(lambda exponent: float(10**exponent))


@composite
def problems_with_a_position(draw: st.DrawFn) -> tuple[AttentionProblem, int, float]:
    """A problem (N >= 2), a query n < N - 1, and a scale for the inputs after n (huge_scales)."""
    problem = draw(attention_problems(dimensions(min_n=2)))
    n = draw(st.integers(0, problem.N - 2), label="query n")
    return problem, n, draw(huge_scales(), label="scale of the later inputs")


@composite
def problems_with_masks(draw: st.DrawFn) -> tuple[AttentionProblem, NDArray[np.bool_], NDArray[np.bool_], float]:
    """A problem, a mask (any pattern, fully hidden queries included), and a set of inputs to change (some, not
    all). One unchanged query n is made to see an unchanged key m and none of the changed ones, so that a query
    unaffected by the change exists (the mask laws compare those)."""
    problem = draw(attention_problems(dimensions(min_n=2)))
    mask = draw(masks(problem.N), label="mask")
    bits = draw(st.integers(1, 2**problem.N - 2), label="bits: inputs to change (some, not all)")
    changed = (bits >> np.arange(problem.N)) & 1 == 1
    unchanged = np.flatnonzero(~changed).tolist()
    n = draw(st.sampled_from(unchanged), label="an unaffected query n")
    m = draw(st.sampled_from(unchanged), label="an unchanged key m it sees")
    mask[changed, n], mask[m, n] = False, True
    return problem, mask, changed, draw(huge_scales(), label="scale")


@composite
def problems_with_circulant_biases(draw: st.DrawFn) -> tuple[AttentionProblem, Array, int]:
    problem = draw(attention_problems())
    bias = circulant(draw(columns(problem.N), label="relative bias c").ravel())
    return problem, bias, draw(st.integers(0, max(problem.N - 1, 0)), label="cyclic shift")


@composite
def bias_witnesses(draw: st.DrawFn) -> tuple[AttentionProblem, Array, NDArray[np.intp], Array]:
    """A generic bias with omega_q = omega_k = 0, so that the bias alone sets the attention, on inputs and
    value weights of full rank (D >= N, D_v >= D), so that different weights give different outputs.
    Returns the problem, the bias, a transposition p and the law-side weights a = softmax_cols(bias)."""
    N = draw(st.integers(2, 4), label="N")
    D = draw(st.integers(N, N + 2), label="D")
    if GENERATION.square:
        D_q = D_v = D
    else:
        D_q, D_v = draw(st.integers(1, 3), label="D_q"), draw(st.integers(D, D + 2), label="D_v")
    problem = AttentionProblem(
        X=draw(well_conditioned_matrices(D, N, max_condition=4.0, bound=1.0), label="X"),
        omega_v=draw(well_conditioned_matrices(D_v, D, max_condition=4.0, bound=1.0), label="omega_v"),
        omega_q=np.zeros((D_q, D)),
        omega_k=np.zeros((D_q, D)),
        beta_v=draw(columns(D_v), label="beta_v"),
        beta_q=draw(columns(D_q), label="beta_q"),
        beta_k=draw(columns(D_q), label="beta_k"),
    )
    bias = draw(matrices(N, N), label="bias")
    i, j = draw(st.lists(st.integers(0, N - 1), min_size=2, max_size=2, unique=True), label="transposed pair")
    p = np.arange(N)
    p[[i, j]] = p[[j, i]]
    return problem, bias, p, softmax_columns(bias)


# Every keyword option at once (the laws of test_masks.py, test_biases.py, test_positions.py, test_edges.py): each
# given or not, or forced by a law.
Switch = bool | None  # True: always given; False: never; None: drawn


def bit_matrices(N: int) -> st.SearchStrategy[NDArray[np.bool_]]:
    """N x N boolean matrices, drawn as the bits of one integer (fast to draw; shrinks towards all False)."""
    size = N * N
    return st.integers(0, 2**size - 1).map(
        lambda bits: np.asarray([(bits >> i) & 1 for i in range(size)], dtype=bool).reshape(N, N)
    )


@composite
def masks(draw: st.DrawFn, N: int, *, hidden_query: bool = False) -> NDArray[np.bool_]:
    """N x N boolean masks of any pattern, often with keys hidden from every query (all-False rows) and queries
    that see no key (all-False columns); with `hidden_query`, at least one such query (N >= 1)."""
    dense, other = draw(bit_matrices(N), label="mask"), draw(bit_matrices(N), label="more visible entries")
    mask = dense | other  # about three entries in four visible before the blanking below
    if N == 0:
        return mask
    # The AND of two random bit strings: each row (column) blanked with probability about 1/4.
    sparse_bits = st.tuples(st.integers(0, 2**N - 1), st.integers(0, 2**N - 1)).map(lambda ab: ab[0] & ab[1])
    hidden_keys = draw(sparse_bits, label="bits: keys hidden from every query")
    blind = draw(sparse_bits, label="bits: queries that see no key")
    if hidden_query:
        blind |= 1 << draw(st.integers(0, N - 1), label="a query that sees no key")
    bits = np.arange(N)
    mask[(hidden_keys >> bits) & 1 == 1, :] = False
    mask[:, (blind >> bits) & 1 == 1] = False
    return mask


def positions(D: int, N: int) -> st.SearchStrategy[Array]:
    """Positions Pi (D x N): the sinusoidal encoding (section 12.4.1) or learned ones in [-1, 1]."""
    learned = matrices(D, N, bound=1.0)
    if N == 0:
        return learned
    return st.one_of(st.just(sinusoidal_positional_encoding(D, N)), learned)


@composite
def attention_options(
    draw: st.DrawFn,
    D: int,
    N: int,
    *,
    positional: Switch = None,
    mask: Switch = None,
    causal: Switch = None,
    bias: Switch = None,
    hidden_query: bool = False,
) -> AttentionOptions:
    """Keyword options for inputs of dimension D and count N: each of positions (either mode), a mask, causal and
    a bias given or not (or as forced); with `hidden_query`, a mask under which some query sees no key."""

    def chosen(switch: Switch, label: str) -> bool:
        return draw(st.booleans(), label=label) if switch is None else switch

    Pi, mode = None, "input"
    if chosen(positional, "positions given?"):
        Pi = draw(positions(D, N), label="positions")
        mode = draw(st.sampled_from(("input", "query_key")), label="positional_mode")
    visibility = draw(masks(N, hidden_query=hidden_query)) if hidden_query or chosen(mask, "mask given?") else None
    return AttentionOptions(
        positional=Pi,
        positional_mode=mode,
        mask=visibility,
        causal=chosen(causal, "causal?"),
        bias=draw(matrices(N, N), label="bias") if chosen(bias, "bias given?") else None,
    )


@composite
def problems_with_options(
    draw: st.DrawFn, /, dims: st.SearchStrategy[Dimensions] | None = None, **switches: Any
) -> tuple[AttentionProblem, AttentionOptions]:
    """A problem and options for it (switches as attention_options), its logits with the positions within
    SEMANTIC_LOGIT_BOUND. N >= 2 unless `dims` says otherwise: N = 0 and N = 1 are edges with laws of their own."""
    problem = draw(attention_problems(dimensions(min_n=2) if dims is None else dims))
    options = draw(attention_options(problem.D, problem.N, **switches), label="options")
    if options.positional is not None:
        problem = with_logits_within(problem, SEMANTIC_LOGIT_BOUND, positions=options.positional)
    return problem, options


@composite
def problems_with_options_and_a_query(
    draw: st.DrawFn, /, **switches: Any
) -> tuple[AttentionProblem, AttentionOptions, int]:
    """A problem (N >= 2), options for it, and one of its queries n."""
    problem, options = draw(problems_with_options(**switches))
    return problem, options, draw(st.integers(0, problem.N - 1), label="query n")


@composite
def problems_with_options_and_column_shifts(
    draw: st.DrawFn,
) -> tuple[AttentionProblem, AttentionOptions, Array]:
    """A problem, options for it, and a row c (1 x N): one constant per query, to add down each bias column."""
    problem, options = draw(problems_with_options())
    return problem, options, draw(matrices(1, problem.N), label="c")


@composite
def problems_with_visible_subsets(
    draw: st.DrawFn,
) -> tuple[AttentionProblem, AttentionOptions, NDArray[np.intp]]:
    """A problem, options without a mask, and a non-empty increasing subset S of the inputs (all of them, often)."""
    problem, options = draw(problems_with_options(mask=False))
    everything = draw(st.booleans(), label="every input visible?")
    chosen = st.sets(st.integers(0, problem.N - 1), min_size=1)
    subset = range(problem.N) if everything else draw(chosen, label="visible keys S")
    return problem, options, np.asarray(sorted(subset), dtype=np.intp)


@composite
def problems_with_constant_logits(draw: st.DrawFn) -> tuple[AttentionProblem, AttentionOptions]:
    """A problem with omega_q = omega_k = 0, so that every logit is beta_k^T beta_q, and options with a bias."""
    problem, options = draw(problems_with_options(bias=True))
    zero = np.zeros_like(problem.omega_q)
    return problem.replace(omega_q=zero, omega_k=zero), options


# --- Positions ---

# Logits of the loss witnesses are kept within +-LOSS_LOGITS: the sigmoid's slope there, at least
# exp(-2 LOSS_LOGITS) / 4, turns the logit gap into a weight gap of a visible size.
LOSS_LOGITS = 2.0


@composite
def position_sensitive_witnesses(draw: st.DrawFn) -> tuple[AttentionProblem, Array]:
    """Two identical inputs x, x (N = 2) and positions Pi with pi_0 != pi_1, on weights that cannot hide them.

    Degenerate weights hide the loss (omega_q = 0 or omega_k = 0 make every query see the same weights;
    a singular omega_v can erase pi_0 - pi_1 from the values), so the strategy draws omega_q with full column
    rank (D_q >= D, singular values within a factor 4), omega_k = M omega_q with M symmetric positive definite,
    and omega_v with full column rank. Then delta = pi_0 - pi_1 gives the two queries logit gaps that differ by
    s delta^T omega_q^T M omega_q delta > 0: see test_absolute_positions_break_equivariance.
    """
    D = draw(st.integers(1, 4), label="D")
    if GENERATION.square:
        D_q = D_v = D
    else:
        D_q, D_v = draw(st.integers(D, D + 2), label="D_q"), draw(st.integers(D, D + 2), label="D_v")
    omega_q = draw(well_conditioned_matrices(D_q, D, max_condition=4.0, bound=1.0), label="omega_q")
    M = draw(symmetric_positive_definite_matrices(D_q), label="M (omega_k = M omega_q)")
    x = draw(columns(D, bound=1.0), label="x")
    if draw(st.booleans(), label="sinusoidal positions?"):
        Pi = sinusoidal_positional_encoding(D, 2)
    else:
        Pi = draw(matrices(D, 2, bound=1.0), label="learned positions")
        assume(np.linalg.norm(Pi[:, 0] - Pi[:, 1]) >= 0.25)
    problem = AttentionProblem(
        X=np.hstack([x, x]),
        omega_v=draw(well_conditioned_matrices(D_v, D, max_condition=4.0, bound=1.0), label="omega_v"),
        omega_q=omega_q,
        omega_k=M @ omega_q,
        beta_v=draw(columns(D_v, bound=1.0), label="beta_v"),
        beta_q=draw(columns(D_q, bound=1.0), label="beta_q"),
        beta_k=draw(columns(D_q, bound=1.0), label="beta_k"),
    )
    return with_logits_within(problem, LOSS_LOGITS, positions=Pi), Pi


@composite
def problems_with_positions_and_permutations(draw: st.DrawFn) -> tuple[AttentionProblem, Array, NDArray[np.intp]]:
    problem = draw(attention_problems())
    if draw(st.booleans(), label="sinusoidal positions?"):
        Pi = sinusoidal_positional_encoding(problem.D, problem.N)
    else:
        Pi = draw(matrices(problem.D, problem.N, bound=1.0), label="learned positions")
    return problem, Pi, draw(permutations_of(problem.N), label="permutation")


# --- Multi-head problems paired with what the multi-head laws vary ---


@composite
def multihead_problems_with_head_orders(draw: st.DrawFn) -> tuple[MultiheadProblem, NDArray[np.intp]]:
    problem = draw(multihead_problems())
    return problem, draw(permutations_of(len(problem.heads)), label="order of the heads")


@composite
def multihead_problems_with_permutations(draw: st.DrawFn) -> tuple[MultiheadProblem, NDArray[np.intp]]:
    problem = draw(multihead_problems())
    return problem, draw(permutations_of(problem.X.shape[1]), label="permutation")


@composite
def multihead_problems_with_second_mixings(draw: st.DrawFn) -> tuple[MultiheadProblem, Array, float, float]:
    problem = draw(multihead_problems())
    second = draw(finite_arrays(problem.omega_c.shape), label="second omega_c")
    return problem, second, draw(finite_floats(), label="a"), draw(finite_floats(), label="b")


@composite
def multihead_problems_with_any_mixing(draw: st.DrawFn) -> MultiheadProblem:
    """Multi-head problems whose omega_c is rectangular or, as often, square (rows = the stacked rows)."""
    problem = draw(multihead_problems())
    if draw(st.booleans(), label="square omega_c?"):
        rows = problem.omega_c.shape[1]
        problem = problem.replace(omega_c=draw(matrices(rows, rows), label="square omega_c"))
    return problem


# --- The row convention: batches of multi-head problems (properties/test_sdpa.py) ---

# Batches and heads multiply the work of every example: small sides keep a batched example as cheap as a few
# single ones, and every mistake of the row convention (an axis, a scale, a mask) shows at these sizes.
BATCHED_SIDE = 4


@composite
def head_on(draw: st.DrawFn, X: Array, dims: Dimensions) -> AttentionProblem:
    """A head's own parameters (for dimensions `dims`) on the given X, logits within SEMANTIC_LOGIT_BOUND."""
    problem = draw(attention_problems(st.just(dims)), label="a head's parameters")
    return with_logits_within(problem.replace(X=X), SEMANTIC_LOGIT_BOUND)


@composite
def batched_problems(
    draw: st.DrawFn, *, batch: tuple[int, int] = (2, 3), heads: tuple[int, int] = (2, 3), min_n: int = 1
) -> BatchedProblem:
    """B batch elements (B in `batch`), each an input X_b with H heads (H in `heads`) of their own parameters;
    one N, D, D_q, D_v for all."""
    dims = draw(dimensions(max_side=BATCHED_SIDE, min_n=min_n), label="dimensions")
    B, H = draw(st.integers(*batch), label="B"), draw(st.integers(*heads), label="H")
    head = AttentionProblem.shapes(dims.D, dims.D_q, dims.D_v, dims.N)[1:]
    label = "for each b: X_b, then each head's six parameters"
    arrays = iter(arrays_of_shapes(draw, [(dims.D, dims.N), *head * H] * B, finite_arrays, label))
    slots = []
    for _ in range(B):
        X = next(arrays)
        drawn = (AttentionProblem(X, *(next(arrays) for _ in head)) for _ in range(H))
        slots.append(tuple(with_logits_within(problem, SEMANTIC_LOGIT_BOUND) for problem in drawn))
    return BatchedProblem(tuple(slots))


@composite
def batched_problems_with_a_changed_slot(draw: st.DrawFn) -> tuple[BatchedProblem, int, int, AttentionProblem]:
    """A batch, a slot (b, h) and new parameters for that head on the same X_b."""
    problem = draw(batched_problems())
    b, h = draw(st.integers(0, problem.B - 1), label="b"), draw(st.integers(0, problem.H - 1), label="h")
    old = problem.slots[b][h]
    return problem, b, h, draw(head_on(old.X, Dimensions(old.D, old.D_q, old.D_v, old.N)), label="new head")


@composite
def batched_problems_with_batch_orders(draw: st.DrawFn) -> tuple[BatchedProblem, NDArray[np.intp]]:
    problem = draw(batched_problems())
    return problem, draw(permutations_of(problem.B), label="order of the batch")


@composite
def batched_problems_with_scales(draw: st.DrawFn) -> tuple[BatchedProblem, float]:
    """A batch and a logit scale c = t / sqrt(D_q), t in [1/8, 2]: the keyword must set it whatever it is."""
    problem = draw(batched_problems(heads=(1, 2)))
    t = draw(st.floats(0.125, 2.0), label="t")
    return problem, t / float(np.sqrt(problem.slots[0][0].D_q))


@composite
def batched_problems_with_key_padding(draw: st.DrawFn) -> tuple[BatchedProblem, NDArray[np.intp], float]:
    """A batch (N >= 2), a number of real keys n_b in [1, N] for each batch element (the rest is padding), and
    a factor in [1, 1e3] for what the padding holds: whatever it is must not matter."""
    problem = draw(batched_problems(heads=(1, 2), min_n=2))
    N = problem.slots[0][0].N
    lengths = draw(integer_arrays(np.intp, (problem.B,), 1, N), label="n_b")
    return problem, lengths, draw(st.floats(1.0, 1e3), label="factor of the padding")


@composite
def grouped_query_problems(draw: st.DrawFn) -> tuple[BatchedProblem, int]:
    """A batch whose H = G H_kv query heads come in H_kv groups of G (G >= 2) sharing keys and values: slot (b, h)
    has the key and value parameters of slot (b, (h // G) G), its own query parameters. Returns (problem, G)."""
    dims = draw(dimensions(max_side=BATCHED_SIDE), label="dimensions")
    B, kv_heads = draw(st.integers(1, 2), label="B"), draw(st.integers(1, 2), label="H_kv")
    G = draw(st.integers(2, 3), label="G")
    _, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = AttentionProblem.shapes(dims.D, dims.D_q, dims.D_v, dims.N)
    group = [omega_v, omega_k, beta_v, beta_k, *[omega_q, beta_q] * G]
    label = "for each b: X_b, then per group omega_v, omega_k, beta_v, beta_k and each query head's omega_q, beta_q"
    arrays = iter(arrays_of_shapes(draw, [(dims.D, dims.N), *group * kv_heads] * B, finite_arrays, label))
    slots = []
    for _ in range(B):
        X = next(arrays)
        heads = []
        for _ in range(kv_heads):
            ov, ok, bv, bk = (next(arrays) for _ in range(4))
            for _ in range(G):
                oq, bq = next(arrays), next(arrays)
                heads.append(with_logits_within(AttentionProblem(X, ov, oq, ok, bv, bq, bk), SEMANTIC_LOGIT_BOUND))
        slots.append(tuple(heads))
    return BatchedProblem(tuple(slots)), G


# --- Long sequences: lengths that cross the tiles of blocked kernels (properties/test_long_sequences.py) ---

# N around every power of two a kernel may tile by (16 ... 512), and beyond the reference's first slab of
# queries (attention/self_attention.py takes BLOCK_ELEMENTS // N rows at a time: N > 512 gives two or more).
LONG_LENGTHS = tuple(sorted({2**k + d for k in range(4, 10) for d in (-1, 0, 1)} | {600, 700}))
LONG_MAX_SIDE = 3  # D, D_q, D_v: small, so that N x N is the cost


def long_examples() -> int:
    """Examples a long-sequence law draws under the profile in force: a tenth of the usual, at least 2 (besides
    its fixed example of N = LONG_EXAMPLE_N)."""
    from hypothesis import settings

    return max(2, int(settings().max_examples) // 10)


@composite
def long_sequence_problems(draw: st.DrawFn, *, max_logit: float = SEMANTIC_LOGIT_BOUND) -> AttentionProblem:
    """Problems with N drawn from LONG_LENGTHS (15 ... 700) and D, D_q, D_v in [1, 3].

    The weights are drawn entry by entry; X (D x N, too large for hypothesis to draw entry by entry) comes from
    a drawn seed, uniform in [-ENTRY_BOUND, ENTRY_BOUND]. The queries are halved as for attention_problems
    until every logit is bounded by max_logit.
    """
    N = draw(st.sampled_from(LONG_LENGTHS), label="N")
    d = draw(dimensions(max_side=LONG_MAX_SIDE, min_n=1, max_n=1), label="D, D_q, D_v")
    seed = draw(st.integers(0, 2**32 - 1), label="seed of X")
    X = np.random.default_rng(seed).uniform(-ENTRY_BOUND, ENTRY_BOUND, (d.D, N))
    shapes = [(d.D_v, d.D), (d.D_q, d.D), (d.D_q, d.D), (d.D_v, 1), (d.D_q, 1), (d.D_q, 1)]
    named = zip(shapes, ARGUMENT_ORDER[1:], strict=True)
    weights = [draw(matrices(rows, cols), label=name) for (rows, cols), name in named]
    return with_logits_within(AttentionProblem(X, *weights), max_logit)


# The fixed long examples: N = 600 crosses every tile boundary up to 512; N = 1100 also gives the reference's
# full path two slabs of queries (it computes 2^20 // N = 953 rows of A^T at a time; tests/ checks that this
# stays true).
LONG_EXAMPLE_N = 600
TWO_SLABS_N = 1100


def long_sequence_example(N: int = LONG_EXAMPLE_N, *, D_q: int = 2, D_v: int = 2) -> AttentionProblem:
    """A fixed long problem (D = 2, seeded entries) checked on every run; D = D_q = D_v = 2 by default (also an
    example of --square)."""
    rng = np.random.default_rng(600)
    shapes = [(2, N), (D_v, 2), (D_q, 2), (D_q, 2), (D_v, 1), (D_q, 1), (D_q, 1)]
    arrays = [rng.uniform(-ENTRY_BOUND, ENTRY_BOUND, shape) for shape in shapes]
    return with_logits_within(AttentionProblem(*arrays), SEMANTIC_LOGIT_BOUND)


def long_sequence_example_as_generated(N: int = LONG_EXAMPLE_N) -> AttentionProblem:
    """The fixed long example of the long-sequence laws: square under --square, else with D_q = 3 != D = 2 and
    D_v = 1, so that a scale by 1/sqrt(D) (or 1/sqrt(D_v)) instead of 1/sqrt(D_q) shows on it whatever is drawn."""
    return long_sequence_example(N) if GENERATION.square else long_sequence_example(N, D_q=3, D_v=1)


def as_generated(problem: AttentionProblem) -> AttentionProblem:
    """A fixed example under the generation switches: unchanged, or under --square padded with zeros to
    D = D_q = D_v = max(D, D_q, D_v), the queries multiplied by sqrt(D'/D_q) so that the scaled logits
    K^T Q / sqrt(D_q) are unchanged (the unscaled ones grow by that factor); the values gain zero rows."""
    if not GENERATION.square:
        return problem
    side = max(problem.D, problem.D_q, problem.D_v)

    def padded(array: Array, rows: int, cols: int) -> Array:
        out = np.zeros((rows, cols))
        out[: array.shape[0], : array.shape[1]] = array
        return out

    gain = float(np.sqrt(side / problem.D_q))
    return AttentionProblem(
        X=padded(problem.X, side, problem.N),
        omega_v=padded(problem.omega_v, side, side),
        omega_q=padded(problem.omega_q, side, side) * gain,
        omega_k=padded(problem.omega_k, side, side),
        beta_v=padded(problem.beta_v, side, 1),
        beta_q=padded(problem.beta_q, side, 1) * gain,
        beta_k=padded(problem.beta_k, side, 1),
    )


@composite
def long_sequence_problems_with_permutations(draw: st.DrawFn) -> tuple[AttentionProblem, NDArray[np.intp]]:
    """A long-sequence problem and a permutation of its inputs: a random one, or a reversal (which moves every
    key of a partial tail block to the front, across every block boundary)."""
    problem = draw(long_sequence_problems())
    seed = draw(st.integers(0, 2**32 - 1), label="permutation seed")
    if draw(st.booleans(), label="reverse?"):
        return problem, np.arange(problem.N)[::-1].copy()
    return problem, np.random.default_rng(seed).permutation(problem.N).astype(np.intp)


# --- Tails: weights down to the smallest normal number (test_attention_matrix's softmax-ratio law) ---

# Logit spreads up to -log(smallest normal float64) ~ 708: weight ratios down to the smallest normal number.
# The logits stay within +-TAIL_LOGIT_BOUND, where even a softmax without the shift by the maximum stays finite.
TAIL_SPREAD = float(-np.log(np.finfo(np.float64).smallest_normal))
TAIL_LOGIT_BOUND = 354.0


@composite
def tail_problems(draw: st.DrawFn) -> AttentionProblem:
    """Problems (N >= 2) whose widest column of logits spans a target drawn log-uniformly from [10, 708]:
    weights in the far tail, down to about the smallest normal float64. The queries are rescaled to reach the
    target, or as close as keeping every logit within +-TAIL_LOGIT_BOUND allows."""
    problem = draw(attention_problems(dimensions(min_n=2), max_logit=None))
    spread = float(np.ptp(problem.logits(1.0), axis=0).max())
    bound = logit_bound(problem)
    target = 10 ** draw(st.floats(1.0, float(np.log10(TAIL_SPREAD))), label="log10 of the logit spread")
    if spread * MAX_QUERY_GAIN < target or bound == 0:
        return with_logits_within(problem, SEMANTIC_LOGIT_BOUND)  # (nearly) constant logits: no tail to draw
    return with_queries_scaled(problem, min(target / spread, TAIL_LOGIT_BOUND / bound))


# --- Backward passes (properties/test_gradients*.py): rows (B, H, N, E) on a dyadic grid ---------------------

# Entries are multiples of 2^-8: q + h dq is then exact for every power-of-two step h >= 2^-40
# (backward.SMALLEST_STEP), so the central differences of the gradient laws perturb exactly what they claim.
GRID = 2.0**-8
GRADIENT_ENTRY_BOUND = 2.0  # q, k, v and d_out; logits stay within 4 E s, a few units: the weights spread
DIRECTION_BOUND = 1.0
GRADIENT_SCALES = (0.25, 0.5, 1.0, 2.0)
# Lengths across the tiles of blockwise backward passes: 2^k - 1, 2^k, 2^k + 1 (partial, full, one-over tiles).
LONG_GRADIENT_LENGTHS = tuple(sorted({2**k + d for k in range(4, 8) for d in (-1, 0, 1)}))


@CACHE
def grid_arrays(shape: tuple[int, ...], bound: float = GRADIENT_ENTRY_BOUND) -> st.SearchStrategy[Array]:
    """Arrays of `shape` whose entries are multiples of GRID within [-bound, bound]."""
    top = int(bound / GRID)
    return integer_arrays(np.int64, shape, -top, top).map(lambda a: a.astype(np.float64) * GRID)


def seeded_grid_array(draw: st.DrawFn, shape: tuple[int, ...], bound: float, label: str) -> Array:
    """A grid array too large to draw entry by entry: from a drawn seed."""
    seed = draw(st.integers(0, 2**32 - 1), label=f"seed of {label}")
    top = int(bound / GRID)
    return np.random.default_rng(seed).integers(-top, top + 1, shape).astype(np.float64) * GRID


@composite
def gradient_problems(
    draw: st.DrawFn,
    *,
    mask: bool = True,
    causal: bool | None = None,
    scale: bool = True,
    grouped: bool | None = None,
    min_n: int = 1,
    lengths: tuple[int, ...] | None = None,
    weights: bool = False,
    bias: bool = False,
) -> Any:
    """A GradientProblem: B, H_kv in [1, 2], N in [min_n, size_limit() + 1] (or from `lengths`, drawn from a seed),
    E, E_v in [1, size_limit() - 1], grid entries; with a boolean attn_mask (when `mask`), causal or not (or as
    `causal` says), a scale from GRADIENT_SCALES or None (when `scale`), G = 2 or 3 query heads per key/value
    head under enable_gqa (when `grouped`; drawn when None), a cotangent d_weights of the weights (when
    `weights`), and a bias of the logits (N x N, grid, when `bias`; or none, drawn)."""
    from properties.helpers.backward import GradientProblem

    side = max(2, size_limit() - 1)
    if lengths is None:
        B, H_kv = draw(st.integers(1, 2), label="B"), draw(st.integers(1, 2), label="H_kv")
        N = draw(st.integers(min_n, side + 2), label="N")
        E, E_v = draw(st.integers(1, side), label="E"), draw(st.integers(1, side), label="E_v")
    else:
        B, H_kv, E, E_v = 1, 1, 2, 2
        N = draw(st.sampled_from(lengths), label="N")
    if grouped is None:
        grouped = lengths is None and draw(st.booleans(), label="enable_gqa")
    G = draw(st.integers(2, 3), label="G") if grouped else 1
    H = H_kv * G
    if lengths is None:
        shapes = [(B, H, N, E), (B, H_kv, N, E), (B, H_kv, N, E_v), (B, H, N, E_v)]
        query, key, value, d_out = arrays_of_shapes(draw, shapes, grid_arrays, "query, key, value, d_out")
    else:
        query, key, value, d_out = (
            seeded_grid_array(draw, shape, GRADIENT_ENTRY_BOUND, name)
            for shape, name in (((B, H, N, E), "query"), ((B, H_kv, N, E), "key"), ((B, H_kv, N, E_v), "value"),
                                ((B, H, N, E_v), "d_out"))
        )  # fmt: skip
    attn_mask = None
    if mask and draw(st.booleans(), label="with a mask"):
        attn_mask = draw(boolean_arrays((N, N)), label="attn_mask")
    is_causal = draw(st.booleans(), label="is_causal") if causal is None else causal
    chosen = draw(st.sampled_from((None, *GRADIENT_SCALES)), label="scale") if scale else None
    d_weights = draw(grid_arrays((B, H, N, N)), label="d_weights") if weights else None
    logit_bias = draw(grid_arrays((N, N)), label="bias") if bias and draw(st.booleans(), label="with a bias") else None
    return GradientProblem(query, key, value, d_out, attn_mask, is_causal, chosen, grouped, d_weights, logit_bias)


@composite
def gradient_problems_with_directions(draw: st.DrawFn, /, **options: Any) -> Any:
    """(problem, (dq, dk, dv)): a GradientProblem and a direction for each of query, key, value (grid, |.| <= 1)."""
    problem = draw(gradient_problems(**options))
    directions = tuple(
        draw(grid_arrays(getattr(problem, name).shape, DIRECTION_BOUND), label=f"direction of {name}")
        for name in ("query", "key", "value")
    )
    return problem, directions


@composite
def gradient_problems_with_positions(draw: st.DrawFn) -> Any:
    """(problem, positional, mode): a problem (no scale keyword: the notebook has none; a bias or none), a
    positional encoding (N x N, grid) and its mode, "input" or "query_key" (the laws read the notebook at
    X = I_N - positional)."""
    problem = draw(gradient_problems(scale=False, grouped=False, bias=True))
    mode = draw(st.sampled_from(("input", "query_key")), label="positional_mode")
    N = problem.N
    positional = draw(grid_arrays((N, N)), label="positional")
    return problem, positional, mode


@composite
def gradient_problems_with_second_cotangents(draw: st.DrawFn) -> Any:
    """(problem, d_out_2, alpha, beta): a second output cotangent and two dyadic coefficients (the combination
    alpha d_out + beta d_out_2 is exact)."""
    problem = draw(gradient_problems())
    second = draw(grid_arrays(problem.d_out.shape), label="second d_out")
    coefficients = st.sampled_from((-2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0))
    return problem, second, draw(coefficients, label="alpha"), draw(coefficients, label="beta")


@composite
def gradient_problems_with_a_hidden_key(draw: st.DrawFn) -> Any:
    """(problem, j): a problem whose attn_mask hides key j from every query (and some other entries)."""
    problem = draw(gradient_problems(mask=False))
    N = problem.N
    j = draw(st.integers(0, N - 1), label="hidden key")
    seen = draw(boolean_arrays((N, N)), label="attn_mask")
    seen[:, j] = False
    return problem.replace(attn_mask=seen), j


@composite
def causal_gradient_problems_with_earlier_cotangents(draw: st.DrawFn) -> Any:
    """(problem, m, d_out_2): a causal problem (N >= 2), a split 1 <= m < N and d_out with the rows of the queries
    before m redrawn."""
    problem = draw(gradient_problems(causal=True, min_n=2))
    m = draw(st.integers(1, problem.N - 1), label="m")
    earlier = draw(grid_arrays((*problem.d_out.shape[:2], m, problem.d_out.shape[-1])), label="earlier d_out")
    second = problem.d_out.copy()
    second[..., :m, :] = earlier
    return problem, m, second


@composite
def gradient_problems_with_other_cotangents(draw: st.DrawFn) -> Any:
    """(problem, n, d_out_2): a problem (N >= 2), a query n and d_out with the rows of every other query redrawn."""
    problem = draw(gradient_problems(min_n=2))
    n = draw(st.integers(0, problem.N - 1), label="n")
    second = draw(grid_arrays(problem.d_out.shape), label="other d_out")
    second[..., n, :] = problem.d_out[..., n, :]
    return problem, n, second


@composite
def gradient_problems_with_permutations(draw: st.DrawFn) -> Any:
    """(problem, p): a problem without causal masking (which orders the tokens) and an order p of its N tokens."""
    problem = draw(gradient_problems(causal=False))
    return problem, draw(permutations_of(problem.N), label="p")


@composite
def gradient_problems_with_a_changed_slot(draw: st.DrawFn) -> Any:
    """(problem, changed, (b, h)): a problem and a copy whose query, key, value and d_out of batch element b and
    head h are redrawn (one key/value head per query head)."""
    problem = draw(gradient_problems(grouped=False))
    b = draw(st.integers(0, problem.query.shape[0] - 1), label="b")
    h = draw(st.integers(0, problem.query.shape[1] - 1), label="h")
    arrays = {}
    for name in ("query", "key", "value", "d_out"):
        array = getattr(problem, name).copy()
        array[b, h] = draw(grid_arrays(array.shape[2:]), label=f"new {name}")
        arrays[name] = array
    return problem, problem.replace(**arrays), (b, h)


# The depth (-log of the smallest normal number) of each judged dtype: a ladder's deepest weight sits just above
# it, so that a rule zeroing weights below any threshold between 1e-8 and that number leaves a visible hole.
TAIL_DEPTHS = tuple(float(-np.log(np.finfo(dtype).smallest_normal)) for dtype in (np.float64, np.float32, np.float16))


def tail_ladder(dims: Dimensions, depth: float, omega_v: Array, beta_v: Array) -> AttentionProblem:
    """Every query the same, q = sqrt(D_q) depth e_0 (omega_q = 0), and keys k_m = -m / (N - 1) e_0: the scaled
    logits of each column are the ladder 0, -depth / (N - 1), ..., -depth, so the weights run from about 1 down to
    e^-depth, at evenly spaced depths (eq. 12.9's scale; unscaled, the ladder is sqrt(D_q) times deeper)."""
    D, D_q, N = dims.D, dims.D_q, dims.N
    X = np.zeros((D, N))
    X[0] = -np.arange(N) / max(N - 1, 1)
    omega_k = np.zeros((D_q, D))
    omega_k[0, 0] = 1.0
    beta_q = np.zeros((D_q, 1))
    beta_q[0, 0] = np.sqrt(D_q) * depth
    return AttentionProblem(X, omega_v, np.zeros((D_q, D)), omega_k, beta_v, beta_q, np.zeros((D_q, 1)))


@composite
def tail_ladder_problems(draw: st.DrawFn) -> AttentionProblem:
    """Ladders of weights (tail_ladder) down to just above the smallest normal number of a judged dtype (float64,
    float32 or float16, TAIL_DEPTHS), N >= 2: at every depth a weight a zeroing rule would remove."""
    dims = draw(dimensions(min_n=2))
    depth = draw(st.sampled_from(TAIL_DEPTHS), label="depth") * (1 - draw(st.floats(0.0, 0.01), label="jitter"))
    omega_v = draw(matrices(dims.D_v, dims.D), label="omega_v")
    return tail_ladder(dims, depth, omega_v, draw(columns(dims.D_v), label="beta_v"))
