"""The checks laws use: measurements that return numbers, and assertions that wrap them and report the worst
case (as e3nn's equivariance_error and assert_equivariant do).

Where a new check goes: here, when more than one law uses it or when it measures something a reader of a
FAIL needs explained; a check used by a single law stays in that law's module.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import note
from numpy.typing import ArrayLike, NDArray

from properties.helpers.implementations import LAST_RETURNED, Implementation, Result, returned_arrays
from properties.helpers.options import GENERATION
from properties.helpers.problems import AttentionOptions, AttentionProblem
from properties.helpers.strategies import MAX_QUERY_GAIN
from properties.helpers.tolerances import FLOAT64_EPS, ErrorBounds, option_error_bounds, tiny_of

# What the function under test was seen to do where a law accepts several behaviours (a convention): each law
# adds its observations with `observe`; attention-check's verdict recorder reads and clears them per law.
OBSERVED: Counter[str] = Counter()


def observe(what: str) -> None:
    """Record what the function under test did (e.g. "raises ValueError on N = 0"), for the law's report row."""
    OBSERVED[what] += 1


class LawViolation(AssertionError):
    """A law of self-attention does not hold on an example."""


@dataclass(frozen=True)
class Discrepancy:
    """The worst entry of |actual - expected| measured against its tolerance."""

    ratio: float  # worst error / tolerance; inf for a non-finite actual value; 0 when everything agrees
    index: tuple[int, ...]
    actual: float
    expected: float
    error: float
    tolerance: float

    def __str__(self) -> str:
        return (
            f"worst error {self.error:.3g} at index {self.index} (got {self.actual!r}, expected "
            f"{self.expected!r}) against tolerance {self.tolerance:.3g}: {self.ratio:.3g} x tolerance"
        )


def discrepancy(actual: ArrayLike, expected: ArrayLike, tolerance: ArrayLike) -> Discrepancy:
    """Measure how far `actual` is from `expected`, entry by entry, in units of `tolerance` (broadcast)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    a, e, t = np.broadcast_arrays(a, e, np.asarray(tolerance, dtype=np.float64))
    if a.size == 0:
        return Discrepancy(0.0, (), 0.0, 0.0, 0.0, 0.0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        error = np.abs(a - e)
        ratio = np.where(np.isfinite(a), error / t, np.inf)
        ratio = np.where(error == 0, 0.0, ratio)
    flat = int(np.argmax(ratio))
    index = tuple(int(i) for i in np.unravel_index(flat, a.shape))
    return Discrepancy(
        float(ratio[index]), index, float(a[index]), float(e[index]), float(error[index]), float(t[index])
    )


def assert_close(actual: ArrayLike, expected: ArrayLike, tolerance: ArrayLike, *, what: str) -> None:
    """Raise LawViolation naming `what` unless |actual - expected| <= tolerance everywhere."""
    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape != e.shape:
        raise LawViolation(f"{what}: shape {a.shape}, expected shape {e.shape}")
    worst = discrepancy(a, e, tolerance)
    if worst.ratio > 1.0:
        raise LawViolation(f"{what}: {worst}")


def assert_finite(array: ArrayLike, *, what: str) -> None:
    """Raise LawViolation naming `what` at the first NaN or infinity."""
    a = np.asarray(array)
    finite = np.isfinite(a)
    if not finite.all():
        index = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise LawViolation(f"{what}: non-finite value {float(a[index])!r} at index {index}")


def assert_at_most(smaller: ArrayLike, larger: ArrayLike, tolerance: ArrayLike, *, what: str) -> None:
    """Raise LawViolation naming `what` unless smaller <= larger + tolerance everywhere."""
    s, big, t = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (smaller, larger, tolerance)))
    with np.errstate(invalid="ignore"):
        excess = s - big - t
    bad = ~(excess <= 0)
    if bad.any():
        worst = np.where(bad, np.nan_to_num(excess, nan=np.inf), -np.inf)
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(worst)), s.shape))
        raise LawViolation(
            f"{what}: {float(s[index])!r} exceeds {float(big[index])!r} by {s[index] - big[index]:.3g} "
            f"at index {index}, beyond tolerance {t[index]:.3g}"
        )


def entropy(attentions: NDArray[np.floating]) -> NDArray[np.float64]:
    """Shannon entropy (nats) of every column, with 0 log 0 = 0."""
    a = np.asarray(attentions, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0)), 0.0)
    return np.asarray(-terms.sum(axis=0))


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside an exception group (hypothesis may raise several), or the exception itself."""
    group = getattr(error, "exceptions", None)
    if group is None:
        return [error]
    return [leaf for inner in group for leaf in leaves(inner)]


def equivariance_error(implementation: Implementation, problem: AttentionProblem, p: NDArray[np.intp]) -> Discrepancy:
    """How far f(X P) is from f(X) P, in units of the forward-error bound of the two evaluations."""
    original, permuted = implementation(problem), implementation(problem.with_columns(p))
    bounds = implementation.bounds(problem, max(original.eps, permuted.eps))
    return discrepancy(permuted.X_prime, original.X_prime[:, p], (bounds + bounds).x_prime[:, p])


def assert_equivariant(
    implementation: Implementation, problem: AttentionProblem, p: NDArray[np.intp], *, what: str = "X'"
) -> None:
    """Raise LawViolation unless f(X P) = f(X) P within tolerance, reporting the worst entry."""
    worst = equivariance_error(implementation, problem, p)
    if worst.ratio > 1.0:
        raise LawViolation(f"{what} of the inputs permuted by {p.tolist()} must be {what} permuted alike: {worst}")


def assert_in_value_hull(implementation: Implementation, problem: AttentionProblem, result: Result) -> None:
    """Raise LawViolation unless min_m V_dm <= X'_dn <= max_m V_dm for every d, n (within the X' bound)."""
    V = problem.values()
    tolerance = implementation.bounds(problem, result.eps).x_prime
    assert_at_most(V.min(axis=1, keepdims=True), result.X_prime, tolerance,
                   what="X' must not fall below the smallest value of its row")  # fmt: skip
    assert_at_most(result.X_prime, V.max(axis=1, keepdims=True), tolerance,
                   what="X' must not exceed the largest value of its row")  # fmt: skip


def value_shift_error(
    implementation: Implementation, problem: AttentionProblem, c: NDArray[np.float64], before: Result, after: Result
) -> Discrepancy:
    """How far f(beta_v + c), given as `after`, is from f(beta_v) + c 1^T (`before` + c), in tolerance units."""
    shifted = problem.replace(beta_v=problem.beta_v + c)
    eps = max(before.eps, after.eps)
    expected = before.X_prime + c
    tolerance = (implementation.bounds(problem, eps) + implementation.bounds(shifted, eps)).x_prime
    return discrepancy(after.X_prime, expected, tolerance + eps * np.abs(expected))


# --- Keyword options (test_masks.py, test_biases.py, test_positions.py, test_edges.py) ---

OPTION_KEYWORDS = ("positional", "mask", "causal", "bias")


def supported(implementation: Implementation, options: AttentionOptions) -> AttentionOptions:
    """The options without those the implementation takes no keyword for (a law true for every set of options
    holds for fewer); positions need both positional= and positional_mode=."""
    return options.replace(
        positional=options.positional if implementation.accepts("positional", "positional_mode") else None,
        mask=options.mask if implementation.accepts("mask") else None,
        causal=options.causal and implementation.accepts("causal"),
        bias=options.bias if implementation.accepts("bias") else None,
    )


def require_some_option(implementation: Implementation) -> None:
    """Skip the calling test unless the implementation takes at least one of the keyword options."""
    if not any(implementation.accepts(*(("positional", "positional_mode") if k == "positional" else (k,)))
               for k in OPTION_KEYWORDS):  # fmt: skip
        implementation.require("mask")  # skips, naming one of them


def option_bounds(
    implementation: Implementation, problem: AttentionProblem, options: AttentionOptions, eps: float
) -> ErrorBounds:
    """Forward-error bounds of one evaluation of the implementation with these options
    (tolerances.option_error_bounds)."""
    return option_error_bounds(problem, options, implementation.scale(problem.D_q), eps)


def assert_in_visible_value_hull(
    problem: AttentionProblem, options: AttentionOptions, result: Result, bounds: ErrorBounds
) -> None:
    """Raise LawViolation unless min_{m visible to n} V_dm <= X'_dn <= max_{m visible to n} V_dm for every d and
    every query n that sees a key (within bounds.x_prime, those of these options: option_bounds); V holds the
    positions where the mode puts them."""
    V = options.without_positions(problem).values()
    visible = options.visible(problem.N)
    seen = visible.any(axis=0)
    below = np.where(visible, V[:, :, None], np.inf).min(axis=1)[:, seen]
    above = np.where(visible, V[:, :, None], -np.inf).max(axis=1)[:, seen]
    tolerance = bounds.x_prime[:, seen]
    X_prime = result.X_prime[:, seen]
    assert_at_most(below, X_prime, tolerance, what="X' must not fall below the smallest value its query sees")
    assert_at_most(X_prime, above, tolerance, what="X' must not exceed the largest value its query sees")


def stacked_queries_and_keys(problem: AttentionProblem) -> AttentionProblem:
    """Queries and keys stacked on themselves: D_q doubles and every logit K^T Q doubles.

    Under --square (D_q = D_v = D only) the inputs are stacked too, with weights [[W, 0], [W, 0]], so that
    D doubles along with D_q and the values are [V; V]: the doubled problem stays square.
    """

    def twice(array: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.vstack([array, array])

    if not GENERATION.square:
        return problem.replace(
            omega_q=twice(problem.omega_q),
            beta_q=twice(problem.beta_q),
            omega_k=twice(problem.omega_k),
            beta_k=twice(problem.beta_k),
        )

    def padded(weights: NDArray[np.float64]) -> NDArray[np.float64]:
        return twice(np.hstack([weights, np.zeros_like(weights)]))

    return AttentionProblem(
        X=twice(problem.X),
        omega_v=padded(problem.omega_v),
        omega_q=padded(problem.omega_q),
        omega_k=padded(problem.omega_k),
        beta_v=twice(problem.beta_v),
        beta_q=twice(problem.beta_q),
        beta_k=twice(problem.beta_k),
    )


def call(implementation: Implementation, problem: AttentionProblem, options: AttentionOptions) -> Result:
    return implementation(problem, **options.keywords())


def check_attention_columns_are_probability_distributions(
    implementation: Implementation, problem: AttentionProblem
) -> None:
    """The body of the law test_attention_columns_are_probability_distributions (which states it), shared with its twin
    on long sequences (test_long_sequences.py)."""
    result = implementation(problem)
    A = result.require_attentions()
    tolerance = implementation.bounds(problem, result.eps).column_sum
    assert_at_most(0.0, A, 0.0, what="attention weights must be >= 0")
    assert_close(A.sum(axis=0), np.ones(problem.N), tolerance, what="columns of attentions must sum to 1")


def check_output_is_equivariant_under_column_permutations(
    implementation: Implementation, case: tuple[AttentionProblem, NDArray[np.intp]]
) -> None:
    """The body of the law test_output_is_equivariant_under_column_permutations (which states it), shared with its twin
    on long sequences (test_long_sequences.py)."""
    problem, p = case
    assert_equivariant(implementation, problem, p)


def check_outputs_lie_in_the_convex_hull_of_the_values(
    implementation: Implementation, problem: AttentionProblem
) -> None:
    """The body of the law test_outputs_lie_in_the_convex_hull_of_the_values (which states it), shared with its twin
    on long sequences (test_long_sequences.py)."""
    assert_in_value_hull(implementation, problem, implementation(problem))


# Columns whose two largest logits are at least GAP apart (after sharpening) put all but exp(-GAP) of their
# weight on the largest: exp(-60) ~ 1e-26, far below any tolerance here. Sharpening stops where a logit
# could reach LARGEST_LOGIT, so that no softmax, shifted or not, overflows (exp(600) ~ 4e260).
GAP = 60.0
LARGEST_LOGIT = 600.0  # and the queries grow by at most MAX_QUERY_GAIN (tiny logits cannot be sharpened at will)


def check_sharp_queries_select_the_best_matching_value(
    implementation: Implementation, problem: AttentionProblem
) -> None:
    """The body of the law test_sharp_queries_select_the_best_matching_value (which states it), shared with its twin
    on long sequences (test_long_sequences.py)."""
    logits = problem.logits(implementation.scale(problem.D_q))
    bounds = implementation.bounds(problem, FLOAT64_EPS)
    ordered = np.sort(logits, axis=0)
    gaps = ordered[-1] - ordered[-2] if problem.N > 1 else np.full(1, np.inf)
    certain = gaps > 2 * bounds.logit_error
    if not certain.any():
        return
    largest = float(bounds.logit_bound.max())
    t = min(GAP / float(gaps[certain].min()), LARGEST_LOGIT / largest, MAX_QUERY_GAIN) if problem.N > 1 else 1.0
    certain &= t * gaps >= GAP
    sharp = problem.replace(omega_q=t * problem.omega_q, beta_q=t * problem.beta_q)
    result = implementation(sharp)
    sharp_bounds = implementation.bounds(sharp, result.eps)
    # The implementation's own logits are rounded in its dtype: only gaps beyond both roundings are certain.
    certain &= gaps > 2 * (bounds.logit_error + implementation.bounds(problem, result.eps).logit_error)
    winners = np.argmax(logits, axis=0)
    expected = problem.values()[:, winners]
    tolerance = (sharp_bounds + sharp_bounds).x_prime + sharp_bounds.value_bound * problem.N * np.exp(-GAP)
    columns = np.flatnonzero(certain)
    note(f"t = {t:.6g}; judged columns {columns.tolist()}; their best keys {winners[columns].tolist()}")
    assert_close(
        result.X_prime[:, columns],
        expected[:, columns],
        tolerance[:, columns],
        what=f"with queries sharpened by t={t:.6g}, x'_n must be the value of the best-matching key",
    )


def check_attentions_are_the_softmax_of_the_scaled_logits(
    implementation: Implementation, problem: AttentionProblem
) -> None:
    """The body of the law test_attentions_are_the_softmax_of_the_scaled_logits (which states it), shared with its twin
    on long sequences (test_long_sequences.py)."""
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


def check_returned_results_survive_later_calls(first: Callable[[], Any], later: Callable[[], Any], what: str) -> None:
    """Call `first`, keep what the function under test returned (not the wrapper's copy) and a snapshot of it, call
    `later` (a call on another problem of the same shapes), and raise LawViolation when the result the caller
    still holds has changed: the function returned a buffer it reuses."""
    first()
    held = LAST_RETURNED[0]
    snapshot = returned_arrays(held)
    later()
    now = returned_arrays(held)
    changed = [i for i, (a, b) in enumerate(zip(snapshot, now, strict=True))
               if a.shape != b.shape or a.tobytes() != b.tobytes()]  # fmt: skip
    if changed:
        raise LawViolation(
            f"{what}: the result returned by one call changed when the function was called again (array "
            f"{changed[0]} of what it returned): it hands back a buffer it reuses; return a fresh array"
        )
