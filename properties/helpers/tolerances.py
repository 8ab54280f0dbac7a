"""Every tolerance of the battery, each derived from a forward-error bound and computed in float64.

One error model covers every correct way to compute attention, so that a PASS and a FAIL mean the same for
all of them: the softmax normalised by dividing by the computed sum or multiplying by its reciprocal, in the
log domain (exp(z - lse) with lse = M + log sum exp(z - M)), with exp2 after pre-scaling by log2(e) and
the attention matrix rebuilt from a separately computed lse (FlashAttention), with an online (blocked) rescaling
by exp(m_old - m_new) for any block size, any summation order, in float16, float32 or float64 (judged by
the dtype returned: see the README).

Notation: u is the machine epsilon of the dtype judged (twice the unit roundoff: first-order bounds below then
also cover the second-order terms as long as (number of steps) u <= 1, beyond which they exceed 1 and judge
nothing); s is the logit scale (1/sqrt(D_q) or 1). Absolute values of the projections bound everything any
summation order can produce:

    Qhat = |omega_q| |X| + |beta_q| 1^T,   Khat likewise,   Vhat = |omega_v| |X| + |beta_v| 1^T.

exp, exp2 and log are assumed correct to 4u relative (libm is within 1 ulp, numpy's SIMD loops within 2).

1. Logits.  Every logit is rounded by at most k_L u s (Khat^T Qhat)_mn <= k_L u l_n, l_n = s max_m (Khat^T Qhat)_mn,
   with k_L = 2D + D_q + 5: 2 for converting the inputs to the working dtype, D + 1 in a projection, D more
   for an association such as K^T (omega_q X), D_q in the dot product, 2 for the scale. The bound holds for
   each evaluation separately, so it also covers logits computed twice (FlashAttention rebuilding the attention
   matrix as exp(S - lse) from a second product S). k = 2D + D_q + N + 8 >= k_L counts the steps to an entry
   of X' (and is the `steps` of ErrorBounds).
2. Normalisation (normalisation_error).  Given the computed logits z of a column (|z_m| <= l), each weight
   exp(z_m - c) / S of any algorithm above has relative error at most
       eta = u (14 l + 11 N + 7 ln N + 9).
   Per numerator exp(z_m - c): 3 u l for converting z and pre-scaling by log2(e) (a rounded constant and a
   product), u (2 l + ln N) for the shift (|z_m - c| <= 2 l + ln N, c being a maximum, a running maximum or
   an lse), 4u for exp or exp2, and for an online softmax at most N rescalings by exp(m_old - m_new), whose
   argument roundings add up to at most 2 u l (the running maximum only grows: |m_old - m_new| telescopes)
   and whose exp and product cost 5u each: u (7 l + ln N + 5 N + 4) in all. Division-normalised:
   numerator and sum S carry that each, the sum (N - 1) u more, the division or the reciprocal and product
   2u: u (14 l + 2 ln N + 11 N + 9). Log domain: lse = c + log S is off by S's relative error
   u (7 l + ln N + 6 N + 3), 4u ln N for the log and u (l + ln N) for the addition; exp(z_m - lse) adds
   u (5 l + ln N + 4): u (13 l + 7 ln N + 6 N + 7). eta bounds both.
3. Weights.  d(log a_m) = dz_m - sum_j a_j dz_j, so the logit errors of 1. move each weight by at most
   2 k_L u l_n in relative terms. Every weight thus has relative error at most
       r_n = 2 k_L u l_n + eta_n,
   which also bounds its absolute error (weights are at most 1). The columns sum to 1 within eta_n (a
   weighted mean of the weights' normalisation errors) plus 2 k_L u l_n when the logits of the numerators
   and of the normaliser come from two evaluations (section 1), plus N u for the law's own summation
   (ErrorBounds.column_sum).
4. Outputs.  X'_dn = sum_m a_mn V_dm, so |delta X'_dn| <= v_d (r_n + k u), with v_d = max_m Vhat_dm:
   the weights' errors (an online softmax rescales its weighted sum of values exactly as its weights),
   the rounding of V (at most (D + 3) u Vhat) and of the sum (N u), all weighted by the a_mn that sum to 1.
   The same bound covers how far X' can leave the convex hull of the values.
5. Underflow.  Products and weights below the smallest normal number (tiny, of the dtype judged) lose
   relative accuracy but keep an absolute one: a floor of N tiny on each weight and k tiny on each entry of
   X' covers that.
6. Two evaluations.  A law comparing two evaluations uses `bounds_a + bounds_b` (ErrorBounds.__add__): the
   logit and value bounds add, and since every bound above grows with both, the result bounds the sum of
   the two evaluations' errors.

Each bound scales with the magnitudes involved, so a genuine bug (a wrong scale, axis, bias or index) shows
up as an error many orders of magnitude above it: about 1e-12 relative at the sizes the strategies draw in
float64, against O(1e-3) or more for a bug.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from properties.helpers.problems import AttentionOptions, AttentionProblem, MultiheadProblem

Array = NDArray[np.float64]


class Precision(NamedTuple):
    """What the error model needs of a float dtype."""

    eps: float  # machine epsilon
    max: float  # largest finite number
    tiny: float  # smallest normal number


# The one table of dtypes, by name: IEEE 754 binary16, binary32, binary64 and bfloat16 (8 exponent bits like
# binary32, 8 significand bits with the implicit one, so eps = 2^-7). Named rather than looked up, so that bfloat16
# needs neither ml_dtypes nor an array library; tests/catalogues/test_correct.py checks numpy's three against finfo.
PRECISIONS: dict[str, Precision] = {
    "float16": Precision(2.0**-10, 65504.0, 2.0**-14),
    "bfloat16": Precision(2.0**-7, float((2 - 2.0**-7) * 2.0**127), 2.0**-126),
    "float32": Precision(2.0**-23, float((2 - 2.0**-23) * 2.0**127), 2.0**-126),
    "float64": Precision(2.0**-52, float(np.finfo(np.float64).max), 2.0**-1022),
}
FLOAT64_EPS = PRECISIONS["float64"].eps
# The float dtypes a result can be judged by, coarsest first.
JUDGED_DTYPES: tuple[type[np.floating[Any]], ...] = (np.float16, np.float32, np.float64)


def epsilon_of(*dtypes: np.dtype[Any]) -> float:
    """The machine epsilon to judge a result by: the coarsest float dtype among inputs and outputs.

    The battery passes float64; a result returned in float32 (or float16) is judged by that dtype's epsilon,
    one in extended precision by float64's (its inputs were float64).
    """
    eps = [float(np.finfo(dtype.type).eps) for dtype in dtypes if np.issubdtype(dtype, np.floating)]
    return max([FLOAT64_EPS, *eps])


def dtype_of(eps: float) -> type[np.floating[Any]]:
    """The float dtype whose epsilon is `eps` (the finest one at least as coarse, for an eps in between)."""
    at_least_as_coarse = [dtype for dtype in JUDGED_DTYPES if PRECISIONS[dtype.__name__].eps >= eps]
    return at_least_as_coarse[-1] if at_least_as_coarse else JUDGED_DTYPES[0]


def tiny_of(eps: float) -> float:
    """Smallest normal number of the float dtype whose epsilon is `eps` (float16, float32 or float64)."""
    return PRECISIONS[dtype_of(eps).__name__].tiny


def logit_steps(problem: AttentionProblem) -> int:
    """k_L = 2D + D_q + 5: the rounding steps of one logit (section 1)."""
    return 2 * problem.D + problem.D_q + 5


def normalisation_error(rows: int, eps: float, magnitude: ArrayLike) -> Array:
    """eta = u (14 l + 11 N + 7 ln N + 9): relative error of each softmax weight given its column's computed
    logits, bounded in magnitude by l (broadcast), N = rows (section 2). Covers division by the sum,
    multiplication by its reciprocal, the log domain exp(z - lse), exp2 after pre-scaling by log2(e), online
    rescaling with any block size and any summation order."""
    with np.errstate(over="ignore"):
        logit = np.minimum(np.asarray(magnitude, dtype=np.float64), np.finfo(np.float64).max / 64)
    return np.asarray(eps * (14.0 * logit + 11.0 * rows + 7.0 * np.log(max(rows, 1)) + 9.0), dtype=np.float64)


@dataclass(frozen=True)
class ErrorBounds:
    """Forward-error bounds of one self-attention evaluation (section comments in the module docstring), for
    every algorithm of the model: division or reciprocal, log domain, exp2 with lse reconstruction, online
    rescaling with any block size, any summation order, in the dtype whose epsilon is `eps`."""

    logit_bound: Array  # l_n, shape (N,): s max_m (Khat^T Qhat)_mn
    value_bound: Array  # v_d, shape (D_v, 1): max_m Vhat_dm
    steps: int  # k = 2D + D_q + N + 8 >= k_L
    eps: float

    @property
    def logit_error(self) -> Array:
        """Bound on the rounding of every logit of column n, shape (N,): k u l_n >= k_L u l_n (section 1)."""
        return np.asarray(self.steps * self.eps * self.logit_bound, dtype=np.float64)

    @property
    def attentions(self) -> Array:
        """Bound on the error of every attention weight of column n, shape (1, N): r_n + N tiny (section 3; logit
        errors of either evaluation, and every normalisation of section 2)."""
        N = self.logit_bound.shape[0]
        r = 2.0 * self.logit_error + normalisation_error(N, self.eps, self.logit_bound)
        return np.asarray(r + N * tiny_of(self.eps), dtype=np.float64).reshape(1, -1)

    @property
    def column_sum(self) -> Array:
        """Bound on |sum_m a_mn - 1| for each column n, shape (N,), the law summing in the result's dtype:
        eta_n + 2 k u l_n (numerators and normaliser from two evaluations of the logits) + N u (section 3)."""
        N = self.logit_bound.shape[0]
        return sum_to_one_error(N, self.eps, self.logit_bound) + 2.0 * self.logit_error

    @property
    def x_prime(self) -> Array:
        """Bound on the error of X'_dn, shape (D_v, N): v_d (r_n + k u) (+ the underflow floors; section 4, which
        covers an online softmax's rescaled weighted sum of values as well as V times the weights)."""
        return self.value_bound * (self.attentions + self.steps * self.eps) + self.steps * tiny_of(self.eps)

    def with_logit_offset(self, offset: float) -> ErrorBounds:
        """Bounds when a term of magnitude at most `offset` (a bias matrix) is added to every logit."""
        return ErrorBounds(self.logit_bound + offset, self.value_bound, self.steps + 1, self.eps)

    def __add__(self, other: ErrorBounds) -> ErrorBounds:
        """Bounds that dominate both (of problems of the same shape): logit and value bounds add, steps and eps
        take the larger. Since every bound grows with l_n and v_d, (a + b).x_prime >= a.x_prime + b.x_prime up
        to the tiny floors, so it bounds the difference of the two evaluations (section 6 above)."""
        return ErrorBounds(
            self.logit_bound + other.logit_bound,
            self.value_bound + other.value_bound,
            max(self.steps, other.steps),
            max(self.eps, other.eps),
        )


def error_bounds(problem: AttentionProblem, scale: float, eps: float = FLOAT64_EPS) -> ErrorBounds:
    """The forward-error bounds of evaluating self-attention on `problem` with logit scale `scale`."""
    N = problem.N
    Vhat = problem.magnitudes()[2]
    value_bound = Vhat.max(axis=1, keepdims=True) if N else np.zeros((problem.D_v, 1))
    steps = logit_steps(problem) + N + 3
    return ErrorBounds(problem.logit_bounds(scale), value_bound, steps, eps)


def multihead_error(problem: MultiheadProblem, eps: float, value_sizes: Array | None = None) -> Array:
    """Bound on the error of X' = omega_c [X'_1; ...; X'_H] (eq. 12.12), shape (rows of omega_c, N), judged by
    the epsilon `eps` of the dtype returned.

    Each head's X' bound (ErrorBounds, scale 1/sqrt(its D_q); every algorithm of sections 1-4) carried through
    |omega_c|, plus the rounding of the final product: at most (its inner dimension + 2, for converting
    omega_c and the head outputs) u |omega_c| times the sizes of the stacked head outputs. Those sizes are the
    heads' v_d (bounds on |V|, hence on |X'_h|) unless `value_sizes` (stacked rows, one column) gives measured
    ones.
    """
    bounds = [
        error_bounds(problem.head_problem(h), 1 / np.sqrt(head[1].shape[0]), eps)
        for h, head in enumerate(problem.heads)
    ]
    stacked_error = np.vstack([bound.x_prime for bound in bounds])
    sizes = np.vstack([bound.value_bound for bound in bounds]) if value_sizes is None else value_sizes
    inner = problem.omega_c.shape[1] + 2
    return np.asarray(np.abs(problem.omega_c) @ (stacked_error + inner * eps * sizes) + inner * tiny_of(eps))


def softmax_error(data: Array, eps: float) -> Array:
    """Bound on the error of each softmax weight of a column of `data` (shape (1, columns)): the logits are
    exact, so section 2 alone, eta with l = max |z| of the column, plus the underflow floor N tiny. Covers
    every algorithm of section 2."""
    rows = data.shape[0]
    magnitude = np.abs(data).max(axis=0, keepdims=True) if rows else np.zeros((1, data.shape[1]))
    return np.asarray(normalisation_error(rows, eps, magnitude) + rows * tiny_of(eps), dtype=np.float64)


def sum_to_one_error(rows: int, eps: float, magnitude: ArrayLike) -> Array:
    """Bound on |sum of a softmax column - 1| for logits bounded by `magnitude` (broadcast over the columns):
    eta (section 2; the weights' normalisation errors, weighted by the weights) plus (N - 1) u for the law's own
    summation in the result's dtype, plus N tiny for weights that underflow. Covers every algorithm of
    section 2 computing numerators and normaliser from the same logits; ErrorBounds.column_sum adds the logit
    term for algorithms that evaluate the logits twice."""
    return np.asarray(normalisation_error(rows, eps, magnitude) + rows * (eps + tiny_of(eps)), dtype=np.float64)


def no_weight_can_underflow(bounds: ErrorBounds) -> NDArray[np.bool_]:
    """Columns n in which every weight is at least exp(-2 l_n) / N > tiny, so must be strictly positive.

    Every logit of column n lies within 2 l_n of the column's largest, so its weight is at least
    exp(-2 l_n) / N; one is added to the exponent to cover the rounding of the logits. Any algorithm of the
    model computes such a weight without underflow: every intermediate (exp(z - c), its rescalings, the
    quotient) is at least the weight itself, hence normal.
    """
    N = bounds.logit_bound.shape[0]
    exponent = 2.0 * bounds.logit_bound * (1.0 + bounds.steps * bounds.eps) + np.log(max(N, 1)) + 1.0
    return np.asarray(exponent < -np.log(tiny_of(bounds.eps)))


def mixing_law_error(problem: MultiheadProblem, stacked: Array, eps: float = FLOAT64_EPS) -> Array:
    """Bound on |f(X, heads, omega_c) - omega_c H|, H = f(X, heads, I) as returned and omega_c H formed in float64
    on the law's side (the multi-head mixing law), shape (rows of omega_c, N).

    Three terms. The error of f(X, heads, omega_c): multihead_error(problem). The error of H: each entry is its
    head's X' error plus the rounding of a product with I (multihead_error of the problem with omega_c = I);
    carried through omega_c it is at most |omega_c| times that, which is multihead_error(problem) again. The float64
    rounding of omega_c H: at most (inner dimension) u64 |omega_c| |H|.
    """
    inner = problem.omega_c.shape[1]
    rounding = inner * FLOAT64_EPS * (np.abs(problem.omega_c) @ np.abs(stacked))
    return np.asarray(2 * multihead_error(problem, eps) + rounding)


def option_error_bounds(problem: AttentionProblem, options: AttentionOptions, scale: float, eps: float) -> ErrorBounds:
    """Forward-error bounds of one evaluation with the keyword options (positions, mask, causal, bias).

    Positions: every way of forming the projections with them, omega (X + Pi) or omega X + omega Pi, is bounded
    entry by entry by the magnitudes with |X| + |Pi| in place of |X| (mode "input"), or by those of the stacked
    problem [X; Pi] of AttentionOptions.without_positions (mode "query_key", whose 2D counts the extra steps):
    AttentionOptions.magnitudes. A bias: every logit grows by at most max |bias|, and adding it is one more
    rounding step (ErrorBounds.with_logit_offset). A mask or causal: a hidden key's term leaves the softmax's sums
    and the weighted sum of values, so each remaining sum has fewer rounding steps, and the visible logits of a
    column still lie within 2 l_n of their largest; every bound of section 2 and 3 above holds as it is.
    """
    bounds = error_bounds(options.magnitudes(problem), scale, eps)
    if options.bias is not None and options.bias.size:
        bounds = bounds.with_logit_offset(float(np.abs(options.bias).max()))
    return bounds


# --- Row-convention kernels in other precisions (--convention sdpa --dtype, issue 12) ---


def epsilon_of_name(name: str) -> float:
    """Machine epsilon of a dtype named as numpy, torch ("torch.bfloat16") or ml_dtypes print it; float64's for
    a name not in PRECISIONS (an integer result, say), as epsilon_of does for non-float dtypes."""
    return PRECISIONS.get(name.removeprefix("torch."), PRECISIONS["float64"]).eps


def fits_in_range(problem: AttentionProblem, name: str) -> bool:
    """Whether casting q, k, v to dtype `name` and forming any logit stays below its largest finite number.

    Entries of Q, K, V are bounded by Qhat, Khat, Vhat, and every partial sum of a logit q_n . k_m (in any
    order) by (Khat^T Qhat)_mn; a factor 2 covers the rounding of both, and of the outputs, which are convex
    combinations of the values. A problem beyond this is not representable in the dtype: no law is judged on it.
    """
    largest = PRECISIONS[name].max / 2
    Qhat, Khat, Vhat = problem.magnitudes()
    sizes = [float(a.max(initial=0.0)) for a in (Qhat, Khat, Vhat)]
    return max(sizes) <= largest and logit_bound_of(problem) <= largest


def logit_bound_of(problem: AttentionProblem) -> float:
    """max (Khat^T Qhat)_mn: a bound on every unscaled logit and on each of its partial sums."""
    return float(problem.logit_bounds().max(initial=0.0))


def plain_computation_floor(problem: AttentionProblem, scale: float, name: str) -> float:
    """The floor of the FlashAttention test rule, max |f - exact| <= 2 max |plain - exact| + floor.

    The rule (FlashAttention's tests) compares the worst error of the kernel with that of a plain computation
    in the same dtype on the same rounded inputs: a kernel that rounds no worse than the textbook passes, a
    mistake shows as an error many times the plain one. It is a cross-check, not a proof: the plain error can be
    small by luck. The floor keeps luck from failing a correct kernel where the plain computation is nearly
    exact: any result returned in the dtype is off by its rounding, up to eps/2 |x'| per entry, and the weights'
    rounding moves x' by at most (N + 1) eps max |v|; together at most (N + 2) eps max_d v_d, with v_d the
    value bounds of ErrorBounds. Below the dtype's smallest normal number a kernel may flush to zero (XLA on the
    CPU does) where the plain computation keeps a subnormal: up to that number in each of the same N + 2 steps.
    The exact side is computed in float64: its own forward-error bound is added.
    """
    eps, _, smallest = PRECISIONS[name]
    value = float(error_bounds(problem, scale).value_bound.max(initial=0.0))
    exact_error = float(error_bounds(problem, scale).x_prime.max(initial=0.0))
    return (problem.N + 2) * (eps * value + smallest) + exact_error


@dataclass(frozen=True)
class DtypeErrorBounds(ErrorBounds):
    """ErrorBounds with the underflow floor (section 4) of a named dtype whose smallest normal number lies above
    the one tiny_of(eps) assumes: float16's 2^-14, where tiny_of takes float32's 2^-126 for every eps coarser than
    float64's. An entry of q, k, v or of a result below it may be flushed or rounded to a subnormal with an
    absolute error of at most that number: `floor` is added where section 4 adds tiny (N on each weight, k on
    each entry of X'). Sums and logit offsets keep the larger floor."""

    floor: float = 0.0

    @property
    def attentions(self) -> Array:
        return np.asarray(super().attentions + self.logit_bound.shape[0] * self.floor)

    @property
    def x_prime(self) -> Array:
        return np.asarray(super().x_prime + self.steps * self.floor)

    def with_logit_offset(self, offset: float) -> DtypeErrorBounds:
        plain = super().with_logit_offset(offset)
        return DtypeErrorBounds(plain.logit_bound, plain.value_bound, plain.steps, plain.eps, self.floor)

    def __add__(self, other: ErrorBounds) -> DtypeErrorBounds:
        plain = super().__add__(other)
        floor = max(self.floor, getattr(other, "floor", 0.0))
        return DtypeErrorBounds(plain.logit_bound, plain.value_bound, plain.steps, plain.eps, floor)


def dtype_error_bounds(problem: AttentionProblem, scale: float, eps: float, name: str) -> ErrorBounds:
    """error_bounds for a result in dtype `name` (PRECISIONS), with that dtype's underflow floor when it lies
    above tiny_of(eps) (float16)."""
    bounds = error_bounds(problem, scale, eps)
    smallest = PRECISIONS[name][2]
    if smallest <= tiny_of(eps):
        return bounds
    return DtypeErrorBounds(bounds.logit_bound, bounds.value_bound, bounds.steps, bounds.eps, smallest)
