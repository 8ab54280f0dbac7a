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
from typing import Any, TypeVar

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


T = TypeVar("T")


def _quietly(call: Callable[[], T]) -> T | type[Exception]:
    """call() with numpy's floating-point warnings and every other warning silenced: what it returned, or the type of
    the exception it raised (the code under test may do anything; a diagnosis compares outcomes)."""
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return call()
    except Exception as error:
        return type(error)


def _outcome(implementation: Implementation, problem: AttentionProblem) -> Outcome:
    return _quietly(lambda: implementation(problem))


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
        if arguments.get("varlen") is not None:
            return diagnose_varlen(arguments["varlen"])
        if arguments.get("merge") is not None:
            return diagnose_merge(arguments["merge"])
        if arguments.get("flash") is not None:
            return diagnose_flash(arguments["flash"], first_flash_problem(arguments))
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
    return _quietly(lambda: backward(problem))


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


# ----------------------------------------------------------------------- kernels: flash, packed batches, merges
# Tolerance: every candidate is one evaluation of attention in float64 (attention/flash.py's reference with one
# twist), the target one evaluation at its own epsilon: the bounds of both (flash_convention.row_bounds at scale 1,
# which is at least every scale the probes use, with the ALiBi bias in l_n and the sink as one more key), twice
# over, cover the two compared; the mistakes differ from the correct answer and from each other by O(0.1) or more
# on the probes, many orders above it.

FLASH_MISTAKES = (
    Mistake(b.flash_causal_top_left, "matches causal aligned to the top left (query n sees keys m <= n); "
            "FlashAttention's causal is bottom-right, m <= n + S - L"),
    Mistake(b.flash_always_causal, "matches a causal mask applied whatever `causal` says"),
    Mistake(b.flash_softmax_over_queries, "matches a softmax over the queries; each query's weights are a softmax "
            "over the keys (the last axis of q k^T)"),
    Mistake(b.flash_ignores_softmax_scale, "matches attention scaled by 1/sqrt(D) whatever softmax_scale says"),
    Mistake(b.flash_decoding_cache_off_by_one, "matches a decoding step (L = 1) that misses the newest key: the "
            "cache's length is S, not S - 1"),
    Mistake(b.flash_window_left_off_by_one, "matches a window that sees left + 1 keys behind a query (<= where < "
            "belongs): query n sees keys with -right <= n + S - L - m <= left"),
    Mistake(b.flash_window_right_off_by_one, "matches a window that sees right + 1 keys ahead of a query"),
    Mistake(b.flash_window_top_left, "matches a window aligned to the top left (rel = n - m) while causal is "
            "bottom-right (rel = n + S - L - m)"),
    Mistake(b.flash_window_unbounded_as_zero, "matches a window side of -1 read as 0: -1 leaves that side "
            "unbounded"),
    Mistake(b.flash_softcap_before_the_scale, "matches soft-capping before the scale, scale c tanh(q.k / c); the "
            "cap applies to the scaled logit, c tanh(scale q.k / c)"),
    Mistake(b.flash_softcap_ignored, "matches attention without the soft-cap: softcap is taken and never applied"),
    Mistake(b.flash_score_modification_path_unscaled, "matches a path for softcap, alibi_slopes or sinks that "
            "forgets softmax_scale (uses 1)"),
    Mistake(b.flash_alibi_wrong_sign, "matches ALiBi with the wrong sign, +slope |rel|: the bias is -slope |rel|"),
    Mistake(b.flash_alibi_signed_distance, "matches ALiBi charging the signed distance slope (n - m); it charges "
            "|n + S - L - m| on both sides"),
    Mistake(b.flash_sink_in_the_numerator, "matches a sink added to every key's numerator; a sink joins the "
            "denominator only"),
    Mistake(b.flash_nan_for_queries_without_keys, "matches NaN (0 / 0) for a query that sees no key; "
            "FlashAttention gives it out = 0"),
    Mistake(b.flash_lse_in_base_2, "matches softmax_lse in base 2 (an exp2 kernel's log2 sum); softmax_lse is the "
            "natural log: multiply by ln 2"),
    Mistake(b.flash_lse_over_all_keys, "matches softmax_lse over every key, masked ones included; the lse is over "
            "the keys each query sees"),
    Mistake(b.flash_lse_without_the_alibi_bias, "matches softmax_lse of the logits before the ALiBi bias"),
)  # fmt: skip
SDPA_KERNEL_MISTAKES = (
    Mistake(b.sdpa_causal_bottom_right, "matches is_causal aligned to the bottom right (key m <= n + S - L); torch's "
            "is_causal is top-left, m <= n"),
)  # fmt: skip
VARLEN_MISTAKES = (
    Mistake(b.varlen_sees_the_previous_last_block, "matches packed sequences that also see the last block of 16 "
            "keys of the sequence before: each sequence's keys start at cu_seqlens_k[b]"),
    Mistake(b.varlen_aligned_by_the_longest_sequences, "matches causal and windows aligned by max_seqlen_k - "
            "max_seqlen_q for every packed sequence; each aligns by its own S_b - L_b"),
    Mistake(b.varlen_alibi_slopes_of_the_first_sequence, "matches (batch, nheads) ALiBi slopes read at row 0 for "
            "every packed sequence; sequence b takes row b"),
)  # fmt: skip
# Packed kernels whose outputs are right and whose softmax_lse is not: named by comparing the lse alone.
VARLEN_LSE_MISTAKES = (
    Mistake(b.varlen_lse_over_every_packed_key, "matches softmax_lse taken over the keys of the whole packed batch: "
            "each sequence's lse is over its own keys only"),
)  # fmt: skip
MERGE_MISTAKES = (
    Mistake(b.merge_without_the_max_shift, "matches a merge that weighs parts by exp(lse) unshifted (inf / inf "
            "beyond lse ~ 709): weigh them by exp(lse_part - max)"),
    Mistake(b.merge_with_the_weights_swapped, "matches a merge that gives out_a the weight of part b and out_b that "
            "of part a"),
    Mistake(b.merge_special_casing_only_empty_parts, "matches a merge that sets aside a part with no key at all but "
            "gives NaN to a query that sees no key in the first part only (lse_a = -inf): weigh it 0 row by row"),
)  # fmt: skip


def _flash_problem(seed: int, B: int, L: int, S: int, H: int, H_k: int, D: int, D_v: int) -> Any:
    from properties.helpers.flash_convention import FlashProblem

    rng = np.random.default_rng(seed)
    shapes = [(B, L, H, D), (B, S, H_k, D), (B, S, H_k, D_v)]
    return FlashProblem(*(rng.uniform(-1.5, 1.5, size=shape) for shape in shapes))


# (problem, options, lse): L = 3 against S = 5 and L = 5 against S = 3 (both alignments differ; under causal the
# second's first two queries see no key), a decoding step against 6 keys; D = 3 (a scale of 1/sqrt(3), not 1),
# grouped heads. Windows stay on L <= S + 1, where FlashAttention 2's reading of a side of -1 is the definition's;
# lse probes hold no query without keys and no causal ALiBi (FlashAttention's constant of the row).
_WIDE, _TALL, _STEP = (_flash_problem(31, 1, 3, 5, 2, 1, 3, 2), _flash_problem(32, 2, 5, 3, 2, 2, 3, 2),
                       _flash_problem(33, 1, 1, 6, 2, 1, 3, 2))  # fmt: skip
_SLOPES, _SINKS = np.array([0.5, 0.25]), np.array([0.5, -1.0])
FLASH_PROBES: tuple[tuple[Any, dict[str, Any], bool], ...] = (
    (_WIDE, {}, False), (_TALL, {}, False), (_STEP, {}, False),
    (_WIDE, {"causal": True}, False), (_TALL, {"causal": True}, False), (_STEP, {"causal": True}, False),
    (_WIDE, {"window_size": (1, 0)}, False), (_TALL, {"window_size": (0, 1)}, False),
    (_WIDE, {"window_size": (-1, -1)}, False), (_WIDE, {"window_size": (1, -1)}, False),
    (_WIDE, {"softcap": 0.7}, False), (_WIDE, {"alibi_slopes": _SLOPES}, False),
    (_WIDE, {"alibi_slopes": _SLOPES, "causal": True}, False), (_WIDE, {"sinks": _SINKS}, False),
    (_WIDE, {"softmax_scale": 0.3}, False),
    (_WIDE, {}, True), (_WIDE, {"causal": True}, True), (_WIDE, {"alibi_slopes": _SLOPES}, True),
)  # fmt: skip


def _flash_outcome(flash: Any, problem: Any, options: dict[str, Any], lse: bool) -> Any:
    return _quietly(lambda: flash.call(problem, lse=lse, **options))


def _same_flash(one: Any, other: Any, problem: Any, options: dict[str, Any]) -> bool:
    """Both raise, or both give out (and softmax_lse, when both returned one) within the bounds above."""
    from properties.helpers.flash_convention import FlashResult, row_bounds

    if not isinstance(one, FlashResult) or not isinstance(other, FlashResult):
        return not isinstance(one, FlashResult) and not isinstance(other, FlashResult)
    slopes = options.get("alibi_slopes")
    offset = 0.0 if slopes is None else float(np.max(slopes)) * (problem.L + problem.S)
    sinks = options.get("sinks")
    bounds = (row_bounds(problem, 1.0, max(one.lse_eps, other.lse_eps), offset=offset, sinks=sinks)
              + row_bounds(problem, 1.0, FLOAT64_EPS, offset=offset, sinks=sinks)) * 2  # fmt: skip
    if not _agree(one.out, other.out, float(np.max(bounds.out, initial=0.0))):
        return False
    return one.lse is None or other.lse is None or _agree(one.lse, other.lse, float(np.max(bounds.lse, initial=0.0)))


def diagnose_flash(flash: Any, problem: Any = None) -> Diagnosis | None:
    """The first mistake of FLASH_MISTAKES (SDPA_KERNEL_MISTAKES for a row-convention kernel) whose results agree with
    the kernel's on the law's counterexample (a plain call) and on every FLASH_PROBES call whose options the kernel
    takes, where the correct kernel's do not on at least one; None when there is none."""
    from attention.flash import flash_attn_func
    from attention.rows import scaled_dot_product_attention
    from properties.helpers.flash_convention import FlashImplementation
    from properties.helpers.row_convention import Convention

    calls: list[tuple[Any, dict[str, Any], bool]] = [(problem, {}, False)] if problem is not None else []
    calls += [(p, options, lse) for p, options, lse in FLASH_PROBES
              if flash.takes(*options, *(("return_attn_probs",) if lse else ()))]  # fmt: skip
    observed = [_flash_outcome(flash, p, options, lse) for p, options, lse in calls]

    def agrees(function: Callable[..., Any]) -> bool:
        layout = "BHLE" if flash.source == "sdpa" else "BLHE"  # rows (B, H, L, E) for a row-convention kernel
        candidate = FlashImplementation(function, function.__name__, Convention(layout=layout), flash.alignment,
                                        flash.source)  # fmt: skip
        return all(_same_flash(o, _flash_outcome(candidate, p, options, lse), p, options)
                   for o, (p, options, lse) in zip(observed, calls, strict=True))  # fmt: skip

    sdpa = flash.source == "sdpa"
    if agrees(scaled_dot_product_attention if sdpa else flash_attn_func):
        return None
    for mistake in SDPA_KERNEL_MISTAKES if sdpa else FLASH_MISTAKES:
        if agrees(mistake.function):
            return Diagnosis(mistake.function.__name__, mistake.message)
    return None


def _packed_probe() -> tuple[Any, ...]:
    """Three sequences (L_b, S_b) = (3, 5), (4, 2), (2, 7): the second's keys start at 5, inside a block of 16, and
    S_b - L_b differs from max_seqlen_k - max_seqlen_q = 3; two heads on one key head, D = 3, D_v = 2."""
    rng = np.random.default_rng(41)
    cu_q, cu_k = np.array([0, 3, 7, 9], dtype=np.int32), np.array([0, 5, 7, 14], dtype=np.int32)
    q, k, v = (rng.uniform(-1.5, 1.5, size=shape) for shape in ((9, 2, 3), (14, 1, 3), (14, 1, 2)))
    return q, k, v, cu_q, cu_k


VARLEN_PROBES: tuple[dict[str, Any], ...] = (
    {}, {"causal": True}, {"window_size": (1, 1)},
    {"alibi_slopes": np.array([[0.5, 0.25], [0.0, 1.0], [0.25, 0.5]])},
)  # fmt: skip


def diagnose_varlen(varlen: Any) -> Diagnosis | None:
    """The first mistake of VARLEN_MISTAKES whose outputs agree with the packed kernel's on the packed probe under
    every VARLEN_PROBES option set it takes, where the bundled flash_attn_varlen_func's do not on one; None else.
    Tolerance as diagnose_flash's: both evaluations' row_bounds (float64, scale 1) of the longest sequence, twice."""
    from attention.flash import flash_attn_varlen_func
    from properties.helpers.flash_convention import FlashProblem, VarlenImplementation, row_bounds

    q, k, v, cu_q, cu_k = _packed_probe()
    fixed = {"cu_seqlens_q": cu_q, "cu_seqlens_k": cu_k, "max_seqlen_q": 4, "max_seqlen_k": 7}
    probes = [options for options in VARLEN_PROBES if varlen.takes(*options)]
    whole = FlashProblem(q[None], k[None], v[None])
    tolerance = 4 * float(np.max(row_bounds(whole, 1.0, FLOAT64_EPS, offset=14.0).out))

    def outcome(target: Any, options: dict[str, Any]) -> Any:
        return _quietly(lambda: target.call(q, k, v, **fixed, **options))

    observed = [outcome(varlen, options) for options in probes]

    def agrees(function: Callable[..., Any]) -> bool:
        candidate = VarlenImplementation(function, function.__name__)
        for seen, options in zip(observed, probes, strict=True):
            theirs = outcome(candidate, options)
            if isinstance(seen, np.ndarray) != isinstance(theirs, np.ndarray):
                return False
            if isinstance(seen, np.ndarray) and not _agree(seen, theirs, tolerance):
                return False
        return True

    if agrees(flash_attn_varlen_func):
        return _diagnose_varlen_lse(varlen, (q, k, v), fixed)
    for mistake in VARLEN_MISTAKES:
        if agrees(mistake.function):
            return Diagnosis(mistake.function.__name__, mistake.message)
    return None


def diagnose_merge(merge: Any) -> Diagnosis | None:
    """The first mistake of MERGE_MISTAKES whose (out, lse) agree with the merge's on two parts of a probe (keys
    [0, 2) and [2, 5) of the wide probe, their lse shifted by 0 and by 800, where exp overflows, and under the window
    (1, 0), where queries 1 and 2 see no key in the first part), where the bundled merge_attention_states's do not on
    one; None else. Tolerance: four float64 row_bounds of the probe (as the merge law's), plus 4 u |shift| on the
    lse."""
    from attention.flash import merge_attention_states
    from properties.helpers.flash_convention import MergeImplementation, exact_attention, row_bounds, window_readings

    scale = 1 / np.sqrt(_WIDE.D)
    parts = [exact_attention(_WIDE.keys(0, 2), scale), exact_attention(_WIDE.keys(2, _WIDE.S), scale)]
    bounds = row_bounds(_WIDE, scale, FLOAT64_EPS) * 4
    cases = [(shift, [(out, lse + shift) for out, lse in parts]) for shift in (0.0, 800.0)]
    band = window_readings(_WIDE.L, _WIDE.S, (1, 0))[0]
    cases.append((0.0, [exact_attention(_WIDE.keys(0, 2), scale, visible=band[:, :2]),
                        exact_attention(_WIDE.keys(2, _WIDE.S), scale, visible=band[:, 2:])]))  # fmt: skip

    def outcome(target: Any, arrays: list[tuple[Array, Array]]) -> Any:
        return _quietly(lambda: target.call(arrays[0][0], arrays[0][1], arrays[1][0], arrays[1][1]))

    observed = [outcome(merge, arrays) for _, arrays in cases]

    def agrees(function: Callable[..., Any]) -> bool:
        candidate = MergeImplementation(function, function.__name__)
        for seen, (shift, arrays) in zip(observed, cases, strict=True):
            theirs = outcome(candidate, arrays)
            if isinstance(seen, tuple) != isinstance(theirs, tuple):
                return False
            if isinstance(seen, tuple) and not (
                _agree(seen[0], theirs[0], float(np.max(bounds.out)))
                and _agree(seen[1], theirs[1], float(np.max(bounds.lse)) + 4 * shift * FLOAT64_EPS)
            ):
                return False
        return True

    if agrees(merge_attention_states):
        return None
    for mistake in MERGE_MISTAKES:
        if agrees(mistake.function):
            return Diagnosis(mistake.function.__name__, mistake.message)
    return None


def first_flash_problem(value: Any) -> Any:
    """The first FlashProblem in a law's arguments (a problem, or a tuple case that holds one)."""
    from properties.helpers.flash_convention import FlashProblem

    if isinstance(value, FlashProblem):
        return value
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, tuple | list) else ()
    return next((p for p in (first_flash_problem(v) for v in items) if p is not None), None)


def _diagnose_varlen_lse(varlen: Any, arrays: tuple[Any, ...], fixed: dict[str, Any]) -> Diagnosis | None:
    """For a packed kernel whose outputs are right on the probe: the first mistake of VARLEN_LSE_MISTAKES whose
    softmax_lse (each sequence's, concatenated) agrees with the kernel's where the bundled kernel's does not; None
    when the kernel returns no lse or it matches none. Tolerance: four lse bounds of the probe at scale 1 and the
    epsilon of the kernel's lse dtype (float32's for FlashAttention's lse), as diagnose_varlen's for outputs."""
    from attention.flash import flash_attn_varlen_func
    from properties.helpers.flash_convention import FlashProblem, VarlenImplementation, row_bounds

    def lses(target: Any) -> tuple[Any, float] | None:
        if not target.takes("return_attn_probs"):
            return None
        returned = _quietly(lambda: target.call_with_lse(*arrays, **fixed))
        if isinstance(returned, type):  # it raised
            return None
        _, parts, eps = returned
        return np.concatenate([part.ravel() for part in parts]), eps

    seen = lses(varlen)
    if seen is None:
        return None
    q, k, v = arrays
    whole = FlashProblem(q[None], k[None], v[None])
    tolerance = 4 * float(np.max(row_bounds(whole, 1.0, seen[1], offset=14.0).lse))
    bundled = lses(VarlenImplementation(flash_attn_varlen_func, "flash_attn_varlen_func"))
    if bundled is not None and _agree(seen[0], bundled[0], tolerance):
        return None
    for mistake in VARLEN_LSE_MISTAKES:
        theirs = lses(VarlenImplementation(mistake.function, mistake.function.__name__))
        if theirs is not None and _agree(seen[0], theirs[0], tolerance):
            return Diagnosis(mistake.function.__name__, mistake.message)
    return None
