"""Diagnosis, measured: which known mistake (properties/catalogues/mistakes/) an implementation's output agrees with.

On the law's counterexample and on two probe problems whose sizes keep every candidate scale apart
(sqrt(D), sqrt(D_q), D_q, sqrt(D_v), 2 and 1 all differ, and one has the notebook's N = 3, the other not),
the implementation's output is compared with each mistake's and with the correct answer's. A mistake is
named when it agrees with the implementation on every problem (both raise, or both return results that
agree within tolerance) while the correct answer disagrees on at least one. Nothing matching: no diagnosis.

Tolerance: every candidate is an ordinary evaluation of self-attention with a logit scale of at most 1
(or a column softmax of the same logits), so twice the largest forward-error bound of tolerances.error_bounds
at scale 1 (resp. tolerances.softmax_error) covers both evaluations compared; the mistakes differ from each
other by O(1) on the probes, many orders above it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from properties.catalogues import mistakes as b
from properties.checker.report import first_problem
from properties.helpers.implementations import Implementation, Result
from properties.helpers.problems import AttentionProblem
from properties.helpers.tolerances import FLOAT64_EPS, error_bounds, softmax_error

Array = NDArray[np.float64]
EQ_12_9 = "eq. 12.9 scales by 1/sqrt(D_q) = 1/sqrt(omega_q.shape[0])"
NOTEBOOK_SOFTMAX = "the notebook's softmax_cols"
OVERFLOW = (
    "overflows as the notebook's softmax_cols does (exp of a logit above ~709 is inf): subtract each column's "
    "maximum before exponentiating"
)

OVERFLOW_ALONE = (
    "returns inf or NaN where the exact answer is finite: an overflow (exp of a logit above ~709 is inf); "
    "subtract each column's maximum before exponentiating"
)


@dataclass(frozen=True)
class Diagnosis:
    """A known mistake that the implementation's output agrees with, and what to tell the student."""

    mistake: str
    message: str


@dataclass(frozen=True)
class Mistake:
    function: Callable[..., Any]
    message: str
    kinds: tuple[str, ...] = ("scaled",)


MISTAKES = (
    Mistake(b.scale_by_sqrt_D, f"matches attention scaled by 1/sqrt(D) = 1/sqrt(X.shape[0]); {EQ_12_9}"),
    Mistake(b.scale_by_sqrt_D_v, f"matches attention scaled by 1/sqrt(D_v) = 1/sqrt(omega_v.shape[0]); {EQ_12_9}"),
    Mistake(b.scale_by_D_q, "matches attention scaled by 1/D_q; eq. 12.9 scales by 1/sqrt(D_q), its square root"),
    Mistake(b.not_scaled, f"matches unscaled attention softmax(K^T Q) (eq. 12.8): the scale is missing; {EQ_12_9}"),
    Mistake(
        b.scale_hard_coded,
        "matches attention scaled by 1/2 whatever the sizes: a hard-coded sqrt(4) (the "
        "notebook's D_q); use sqrt(omega_q.shape[0])",
    ),
    Mistake(
        b.scaled_by_sqrt_D_q,
        "matches scaled attention (eq. 12.9); self_attention is eq. 12.8, softmax(K^T Q) with no scale",
        ("unscaled",),
    ),
    Mistake(
        b.softmax_over_rows,
        "matches attention with the softmax over each row (axis=1); eq. 12.5 normalises "
        "each column, over the keys (axis=0)",
        ("scaled", "unscaled"),
    ),
    Mistake(
        b.softmax_over_whole_matrix,
        "matches attention with one softmax over the whole N x N matrix; eq. 12.5 "
        "normalises each column separately (axis=0)",
        ("scaled", "unscaled"),
    ),
    Mistake(
        b.transposed_logits,
        "your logits look transposed: the output matches Q^T K; the logits are K^T Q "
        "(keys.T @ queries), one column per query",
        ("scaled", "unscaled"),
    ),
    Mistake(
        b.attentions_transposed_in_output,
        "matches X' = V A^T; eq. 12.6 is X' = V A (values @ attentions)",
        ("scaled", "unscaled"),
    ),
    Mistake(
        b.keys_from_query_weights,
        "matches attention with the keys computed from omega_q; the keys are K = omega_k X + beta_k (eq. 12.7)",
    ),
    Mistake(
        b.values_without_bias,
        "matches attention without the value bias; V = omega_v X + beta_v (eq. 12.2)",
        ("scaled", "unscaled"),
    ),
    Mistake(
        b.queries_without_bias,
        "matches attention without the query bias; Q = omega_q X + beta_q (eq. 12.7)",
        ("scaled", "unscaled"),
    ),
    Mistake(
        b.without_biases,
        "matches attention with no biases at all; add beta_v, beta_q and beta_k (eqs. 12.2, 12.7)",
        ("scaled", "unscaled"),
    ),
    Mistake(
        b.query_bias_on_keys,
        "matches attention with beta_q and beta_k swapped: the queries take beta_q, the keys beta_k (eq. 12.7)",
    ),
    Mistake(
        b.bias_tiled_for_three_inputs,
        "right for N = 3 only (the notebook's N): a hard-coded 3, e.g. "
        "np.tile(beta, 3) or np.ones((1, 3)); let broadcasting add beta to every column",
        ("scaled", "unscaled"),
    ),
    Mistake(b.notebook_softmax, OVERFLOW, ("scaled", "unscaled")),
)
SOFTMAX_MISTAKES = (
    Mistake(
        b.row_softmax,
        "matches a softmax over each row (axis=1); softmax_cols normalises each column (axis=0)",
    ),
    Mistake(
        b.softmax_over_all_entries,
        "matches one softmax over the whole matrix; softmax_cols normalises each column separately (axis=0)",
    ),
    Mistake(b.notebook_softmax_cols, OVERFLOW),
)


def _probe(seed: int, D: int, D_q: int, D_v: int, N: int) -> AttentionProblem:
    rng = np.random.default_rng(seed)
    return AttentionProblem(*(rng.uniform(-1.0, 1.0, size=shape) for shape in AttentionProblem.shapes(D, D_q, D_v, N)))


PROBES = (_probe(1, D=3, D_q=5, D_v=2, N=4), _probe(2, D=2, D_q=3, D_v=6, N=3))
SOFTMAX_PROBE = np.random.default_rng(3).uniform(-3.0, 3.0, size=(4, 3))


def _unscaled(function: Callable[..., Any]) -> Callable[..., Any]:
    """A scaled mistake as its unscaled (eq. 12.8) form: the queries multiplied by sqrt(D_q) cancel its scale.
    Only for mistakes in which the queries (omega_q, beta_q) enter the logits linearly and nowhere else."""

    def unscaled(X: Array, omega_v: Array, omega_q: Array, omega_k: Array, *biases: Array) -> Any:
        c = np.sqrt(omega_q.shape[0])
        beta_v, beta_q, beta_k = biases
        return function(X, omega_v, c * omega_q, omega_k, beta_v, c * beta_q, beta_k)

    return unscaled


def _agree(one: NDArray[Any] | None, other: NDArray[Any] | None, tolerance: float) -> bool:
    if one is None or other is None:
        return True  # X' only: nothing to compare
    if one.shape != other.shape:
        return False
    one, other = np.asarray(one, dtype=np.float64), np.asarray(other, dtype=np.float64)
    finite = np.isfinite(one)
    if not np.array_equal(finite, np.isfinite(other)):
        return False
    infinite = np.isinf(one)
    if not np.array_equal(np.isnan(one), np.isnan(other)) or not np.array_equal(one[infinite], other[infinite]):
        return False
    with np.errstate(invalid="ignore", over="ignore"):
        return bool(np.all(np.abs(one[finite] - other[finite]) <= tolerance))


Outcome = Result | type[BaseException]


def _outcome(implementation: Implementation, problem: AttentionProblem) -> Outcome:
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return implementation(problem)
    except Exception as error:
        return type(error)


def _same(one: Outcome, other: Outcome, problem: AttentionProblem) -> bool:
    if not isinstance(one, Result) or not isinstance(other, Result):
        return not isinstance(one, Result) and not isinstance(other, Result)
    bounds = error_bounds(problem, 1.0, max(one.eps, other.eps))
    with np.errstate(over="ignore", invalid="ignore"):
        x_tolerance, a_tolerance = 2 * float(np.max(bounds.x_prime)), 2 * float(np.max(bounds.attentions))
    return _agree(one.X_prime, other.X_prime, x_tolerance) and _agree(one.attentions, other.attentions, a_tolerance)


def diagnose_attention(implementation: Implementation, problem: AttentionProblem | None) -> Diagnosis | None:
    """The first mistake of MISTAKES that the implementation agrees with on every probe, where the correct
    answer does not; None when there is none."""
    problems = ([problem] if problem is not None else []) + list(PROBES)
    observed = [_outcome(implementation, p) for p in problems]
    correct = b.scaled_by_sqrt_D_q if implementation.kind == "scaled" else b.not_scaled
    reference = Implementation(correct, implementation.kind)
    if all(_same(o, _outcome(reference, p), p) for o, p in zip(observed, problems, strict=True)):
        return None
    for mistake in MISTAKES:
        if implementation.kind not in mistake.kinds:
            continue
        function = mistake.function if implementation.kind == "scaled" else _unscaled(mistake.function)
        if mistake.function is b.scaled_by_sqrt_D_q:
            function = mistake.function
        candidate = Implementation(function, implementation.kind)
        if all(_same(o, _outcome(candidate, p), p) for o, p in zip(observed, problems, strict=True)):
            return Diagnosis(mistake.function.__name__, mistake.message)
    if problem is not None and _overflows(observed[0], _outcome(reference, problem)):
        return Diagnosis("overflow", OVERFLOW_ALONE)
    if problem is not None:
        return _finer_dtype_than_computed(implementation, problem, observed[0], _outcome(reference, problem))
    return None


FLOAT32_EPS = float(np.finfo(np.float32).eps)


def _finer_dtype_than_computed(
    implementation: Implementation, problem: AttentionProblem, observed: Outcome, correct: Outcome
) -> Diagnosis | None:
    """A float64 result whose X' is off the exact one beyond float64's bounds but within float32's: it was computed
    in float32 (or a softmax was) and returned as float64, claiming a precision it does not have. The bounds are
    those of one evaluation in each dtype (tolerances.error_bounds), plus float64's for the reference's side."""
    if not isinstance(observed, Result) or not isinstance(correct, Result) or observed.X_prime.dtype != np.float64:
        return None
    scale = implementation.scale(problem.D_q)
    exact = error_bounds(problem, scale, FLOAT64_EPS).x_prime
    bound64, bound32 = 2 * exact, error_bounds(problem, scale, FLOAT32_EPS).x_prime + exact
    with np.errstate(all="ignore"):
        error = np.abs(observed.X_prime - correct.X_prime)
    if not np.isfinite(error).all() or not (error > bound64).any() or (error > bound32).any():
        return None
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(error / bound64)), error.shape))
    return Diagnosis(
        "float32_accuracy_in_float64",
        f"returns float64 but is only as accurate as float32: worst error {float(error[worst]):.3g} at {worst} "
        f"against float64's bound {float(bound64[worst]):.3g} (and float32's {float(bound32[worst]):.3g}); "
        "return the dtype you compute in (float32), or compute in float64",
    )


def _overflows(observed: Outcome, correct: Outcome) -> bool:
    """Whether the implementation returned inf or NaN where the correct answer is finite."""
    if not isinstance(observed, Result) or not isinstance(correct, Result):
        return False
    pairs = [(observed.X_prime, correct.X_prime), (observed.attentions, correct.attentions)]
    return any(
        mine is not None
        and right is not None
        and mine.shape == right.shape
        and bool(np.isfinite(right).all())
        and not np.isfinite(mine).all()
        for mine, right in pairs
    )


def _softmax_outcome(softmax: Callable[[Array], Any], data: Array) -> Array | type[BaseException]:
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return np.asarray(softmax(data.copy()), dtype=np.float64)
    except Exception as error:
        return type(error)


def diagnose_softmax(softmax: Callable[[Array], Any], data: Array | None) -> Diagnosis | None:
    """As diagnose_attention, for a column softmax on the law's logits and one probe matrix."""
    inputs = ([np.asarray(data, dtype=np.float64)] if data is not None else []) + [SOFTMAX_PROBE]
    observed = [_softmax_outcome(softmax, x) for x in inputs]

    def same(one: Array | type[BaseException], other: Array | type[BaseException], x: Array) -> bool:
        if not isinstance(one, np.ndarray) or not isinstance(other, np.ndarray):
            return not isinstance(one, np.ndarray) and not isinstance(other, np.ndarray)
        return _agree(one, other, 2 * float(np.max(softmax_error(x, FLOAT64_EPS), initial=0.0)))

    if all(same(o, _softmax_outcome(b.stable_softmax, x), x) for o, x in zip(observed, inputs, strict=True)):
        return None
    for mistake in SOFTMAX_MISTAKES:
        if all(same(o, _softmax_outcome(mistake.function, x), x) for o, x in zip(observed, inputs, strict=True)):
            return Diagnosis(mistake.function.__name__, mistake.message)
    return None


def first_gradient_problem(value: Any) -> Any:
    """The first GradientProblem in a law's arguments (a problem, or a tuple case that holds one)."""
    from properties.helpers.backward import GradientProblem

    if isinstance(value, GradientProblem):
        return value
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, tuple | list) else ()
    return next((p for p in (first_gradient_problem(v) for v in items) if p is not None), None)


def diagnose(arguments: Mapping[str, Any]) -> Diagnosis | None:
    """The diagnosis of a law's failing call from its keyword arguments (see the module docstring)."""
    try:
        backward = arguments.get("backward")
        if backward is not None:
            return diagnose_backward(backward, first_gradient_problem(arguments))
        implementation = arguments.get("implementation")
        if isinstance(implementation, Implementation):
            return diagnose_attention(implementation, first_problem(dict(arguments)))
        softmax = arguments.get("softmax")
        if softmax is not None:
            data = arguments.get("data")
            return diagnose_softmax(softmax, data if isinstance(data, np.ndarray) else None)
    except Exception:  # the implementation under test may do anything; a diagnosis is optional
        return None
    return None


# --------------------------------------------------------------------------------------------- backward passes

BACKWARD_MISTAKES = (
    Mistake(b.backward_without_the_rowsum_term, "matches a backward without the softmax's rowsum(dO o O) term: "
            "dS = P o (dP - D), D = rowsum(dO o O)"),
    Mistake(b.backward_rowsum_over_the_queries, "matches a backward whose rowsum(dO o O) term sums over the queries: "
            "D[l] = sum over keys s of P[l, s] dP[l, s]"),
    Mistake(b.backward_dk_without_the_scale, "matches a backward whose dK misses the logit scale: dK = s dS^T Q"),
    Mistake(b.backward_dq_scaled_twice, "matches a backward whose dQ is scaled twice: dQ = s dS K, once"),
    Mistake(b.backward_dv_with_P_not_its_transpose, "matches dV = P dO: the value gradient is P^T dO"),
    Mistake(b.backward_groups_from_their_first_head, "matches grouped key/value heads whose dK and dV come from the "
            "first query head of their group: a shared head gets the sum over its group"),
    Mistake(b.backward_forgets_the_causal_mask, "matches a backward that forgets the causal mask (is_causal)"),
    Mistake(b.backward_forgets_the_key_padding_mask, "matches a backward that forgets attn_mask"),
    Mistake(b.backward_gradients_flow_to_masked_keys, "matches dK and dV from the weights without attn_mask: keys "
            "hidden by the mask get gradient"),
    Mistake(b.backward_from_unscaled_logits, "matches P recomputed from unscaled logits q k^T: the forward scales "
            "them by s"),
    Mistake(b.backward_blocks_skip_the_partial_tile, "matches dK and dV never computed for a partial last block "
            "of 16 keys"),
    Mistake(b.backward_scales_d_out_in_place, "matches a backward that scales d_out in place: inputs must be kept"),
    Mistake(b.backward_clips_d_out, "matches a backward that clips d_out to [-1, 1]"),
    Mistake(b.backward_always_causal, "matches a backward that is causal whatever is_causal says"),
    Mistake(b.backward_keys_of_the_first_batch_element, "matches P recomputed from the keys of batch element 0 for "
            "every batch element"),
)  # fmt: skip
# backward_in_a_changing_order agrees with the correct gradients within any tolerance: only its bits tell it.


def _gradient_probe(seed: int, is_causal: bool) -> Any:
    """B = 2, one key/value head for G = 2 query heads (enable_gqa), N = 19 (a partial last block of 16), E = 3,
    E_v = 2, a scale of 0.75, |d_out| up to 4 (beyond a clip at 1), and attn_mask hiding key 0 and a few more
    entries while every query sees a key; causal or not."""
    from properties.helpers.backward import GradientProblem

    rng = np.random.default_rng(seed)
    N = 19

    def grid(*shape: int, bound: float = 2.0) -> Array:
        return np.round(rng.uniform(-bound, bound, shape) * 256) / 256

    mask = rng.random((N, N)) > 0.2
    mask[:, 0] = False
    mask[np.arange(N), np.arange(N)] = True
    mask[0, 0] = False
    mask[0, 1] = True  # query 0 sees key 1 (and, under causal, no other): every query sees a key
    if is_causal:
        mask[np.arange(1, N), np.arange(N - 1)] = True
    return GradientProblem(grid(2, 2, N, 3), grid(2, 1, N, 3), grid(2, 1, N, 2), grid(2, 2, N, 2, bound=4.0),
                           mask, is_causal, 0.75, True)  # fmt: skip


GRADIENT_PROBES = (_gradient_probe(21, False), _gradient_probe(22, True))


def _gradient_outcome(backward: Any, problem: Any) -> Any:
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return backward(problem)
    except Exception as error:
        return type(error)


def _same_gradients(one: Any, other: Any, bounds: Any) -> bool:
    """Both raise, or both return gradients within the sum of both evaluations' bounds (twice one evaluation's,
    at the coarser epsilon) and change the same inputs."""
    from properties.helpers.backward import Gradients

    if not isinstance(one, Gradients) or not isinstance(other, Gradients):
        return not isinstance(one, Gradients) and not isinstance(other, Gradients)
    if one.modified != other.modified:
        return False
    return all(
        _agree(a, c, 2 * float(np.max(bound, initial=0.0)))
        for a, c, bound in zip(one.as_float64(), other.as_float64(), bounds, strict=False)
    )


def diagnose_backward(backward: Any, problem: Any) -> Diagnosis | None:
    """The first broken backward of BACKWARD_MISTAKES whose gradients agree with the backward's on the law's
    counterexample and on GRADIENT_PROBES (each as the backward takes it: Backward.adapt), where the correct
    backward's do not on at least one; None when there is none.

    Tolerance: every candidate is the textbook backward in float64 with one term changed (magnitudes no larger
    than the correct one's but for a missing scale of at least 1/2 on the probes), so twice the bounds of one
    evaluation (gradient_bounds at the backward's epsilon, scale 1) cover both evaluations; the mistakes differ
    from the correct gradients by O(1) on the probes."""
    from properties.catalogues.mistakes._base import broken_backward
    from properties.helpers.backward import gradient_bounds

    problems = [backward.adapt(p) for p in ([problem] if problem is not None else []) + list(GRADIENT_PROBES)]
    observed = [_gradient_outcome(backward, p) for p in problems]

    def bounds_of(outcome: Any, p: Any) -> Any:
        eps = getattr(outcome, "eps", FLOAT64_EPS)
        return gradient_bounds(p, max(1.0, abs(backward.scale(p.E, p.scale))), eps)

    def agrees(function: Callable[..., Any]) -> bool:
        candidate = broken_backward(function)
        return all(_same_gradients(o, _gradient_outcome(candidate, p), bounds_of(o, p))
                   for o, p in zip(observed, problems, strict=True))  # fmt: skip

    if agrees(b.textbook_backward):
        return None
    for mistake in BACKWARD_MISTAKES:
        if agrees(mistake.function):
            return Diagnosis(mistake.function.__name__, mistake.message)
    return None
