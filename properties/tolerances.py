"""Every tolerance of the battery, each derived from a forward-error bound and computed in float64.

Notation: u is the machine epsilon of the dtype under test (twice the unit roundoff, so first-order
bounds below also cover the second-order terms at these sizes); s is the logit scale (1/sqrt(D_q) or 1).
Absolute values of the projections bound everything any summation order can produce:

    Qhat = |omega_q| |X| + |beta_q| 1^T,   Khat likewise,   Vhat = |omega_v| |X| + |beta_v| 1^T.

k = 2D + D_q + N + 4 counts the rounding steps on any path from the inputs to one output entry: D + 1 in a
projection, D_q in a logit, D more for an association such as K^T (omega_q X), N in a softmax sum or in
the weighted sum of values, and a handful for exp, shift, scale and division.

1. Logits.  |delta L_mn| <= k u s (Khat^T Qhat)_mn <= k u l_n,  with l_n = s max_m (Khat^T Qhat)_mn.
2. Weights.  d(log a_m) = dL_m - sum_j a_j dL_j, so logit errors move each weight by at most 2 max|dL| in
   relative terms; evaluating exp, the column shift (or a log-sum-exp), the sum and the division adds at
   most k u (1 + |L_m - max L|) <= k u (1 + 2 l_n). Every weight thus has relative error at most
       r_n = k u (4 l_n + 1),
   which also bounds its absolute error (weights are at most 1). An online (blockwise) softmax rescales
   by exp(m_old - m_new) at most N times, each exact to u (1 + 2 l_n) relative: inside the same bound.
3. Outputs.  X'_dn = sum_m a_mn V_dm, so |delta X'_dn| <= v_d (r_n + k u), with v_d = max_m Vhat_dm:
   the weights' errors, the rounding of V (at most (D + 1) u Vhat) and of the sum (N u), all weighted by
   the a_mn that sum to 1. The same bound covers how far X' can leave the convex hull of the values.
4. Underflow.  Products and weights below the smallest normal number (tiny) lose relative accuracy but
   keep an absolute one: a floor of N tiny on each weight and k tiny on each entry of X' covers that.
5. Two evaluations.  A law comparing two evaluations uses `bounds_a + bounds_b` (ErrorBounds.__add__): the
   logit and value bounds add, and since every bound above grows with both, the result bounds the sum of
   the two evaluations' errors.

Each bound scales with the magnitudes involved, so a genuine bug (a wrong scale, axis, bias or index) shows
up as an error many orders of magnitude above it: about 1e-12 relative at the sizes the strategies draw,
against O(1e-3) or more for a bug.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from properties.problem import AttentionOptions, AttentionProblem, MultiheadProblem

Array = NDArray[np.float64]
FLOAT64_EPS = float(np.finfo(np.float64).eps)


def epsilon_of(*dtypes: np.dtype[Any]) -> float:
    """The machine epsilon to judge a result by: the coarsest float dtype among inputs and outputs.

    The battery passes float64; a result returned in float32 is judged by float32's epsilon, one in
    extended precision by float64's (its inputs were float64).
    """
    eps = [float(np.finfo(dtype.type).eps) for dtype in dtypes if np.issubdtype(dtype, np.floating)]
    return max([FLOAT64_EPS, *eps])


def tiny_of(eps: float) -> float:
    """Smallest normal number of the float type whose epsilon is `eps`."""
    dtype = np.float32 if eps > FLOAT64_EPS else np.float64
    return float(np.finfo(dtype).smallest_normal)


@dataclass(frozen=True)
class ErrorBounds:
    """Forward-error bounds of one self-attention evaluation (section comments in the module docstring)."""

    logit_bound: Array  # l_n, shape (N,): s max_m (Khat^T Qhat)_mn
    value_bound: Array  # v_d, shape (D_v, 1): max_m Vhat_dm
    steps: int  # k = 2D + D_q + N + 4
    eps: float

    @property
    def attentions(self) -> Array:
        """Bound on the error of every attention weight of column n, shape (1, N): r_n + N tiny."""
        N = self.logit_bound.shape[0]
        r = self.steps * self.eps * (4.0 * self.logit_bound + 1.0)
        return np.asarray(r + N * tiny_of(self.eps), dtype=np.float64).reshape(1, -1)

    @property
    def x_prime(self) -> Array:
        """Bound on the error of X'_dn, shape (D_v, N): v_d (r_n + k u) (+ the underflow floors)."""
        return self.value_bound * (self.attentions + self.steps * self.eps) + self.steps * tiny_of(self.eps)

    def with_logit_offset(self, offset: float) -> ErrorBounds:
        """Bounds when a term of magnitude at most `offset` (a bias matrix) is added to every logit."""
        return ErrorBounds(self.logit_bound + offset, self.value_bound, self.steps + 1, self.eps)

    def __add__(self, other: ErrorBounds) -> ErrorBounds:
        """Bounds that dominate both (of problems of the same shape): logit and value bounds add, steps and eps
        take the larger. Since every bound grows with l_n and v_d, (a + b).x_prime >= a.x_prime + b.x_prime up
        to the tiny floors, so it bounds the difference of the two evaluations (section 5 above)."""
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
    steps = 2 * problem.D + problem.D_q + N + 4
    return ErrorBounds(problem.logit_bounds(scale), value_bound, steps, eps)


def multihead_error(problem: MultiheadProblem, eps: float = FLOAT64_EPS, value_sizes: Array | None = None) -> Array:
    """Bound on the error of X' = omega_c [X'_1; ...; X'_H] (eq. 12.12), shape (rows of omega_c, N).

    Each head's X' bound (ErrorBounds, scale 1/sqrt(its D_q)) carried through |omega_c|, plus the rounding of
    the final product: at most (its inner dimension) u |omega_c| times the sizes of the stacked head outputs.
    Those sizes are the heads' v_d (bounds on |V|, hence on |X'_h|) unless `value_sizes` (stacked rows, one
    column) gives measured ones.
    """
    bounds = [
        error_bounds(problem.head_problem(h), 1 / np.sqrt(head[1].shape[0]), eps)
        for h, head in enumerate(problem.heads)
    ]
    stacked_error = np.vstack([bound.x_prime for bound in bounds])
    sizes = np.vstack([bound.value_bound for bound in bounds]) if value_sizes is None else value_sizes
    inner = problem.omega_c.shape[1]
    return np.asarray(np.abs(problem.omega_c) @ (stacked_error + inner * eps * sizes))


def softmax_error(data: Array, eps: float) -> Array:
    """Bound on the error of each softmax weight of a column of `data` (shape (1, columns)).

    As in 2. above with exact logits: k u (1 + |z_m - max z|) with k = N + 4, and |z_m - max z| is at most
    the column's spread; plus the underflow floor.
    """
    rows = data.shape[0]
    spread = np.ptp(data, axis=0, keepdims=True) if rows else np.zeros((1, data.shape[1]))
    with np.errstate(over="ignore"):
        spread = np.minimum(spread, np.finfo(np.float64).max)
    return np.asarray((rows + 4) * eps * (1.0 + spread) + rows * tiny_of(eps), dtype=np.float64)


def sum_to_one_error(rows: int, eps: float) -> float:
    """Bound on |sum of a softmax column - 1|: the division by the computed sum leaves at most (N + 4) u."""
    return (rows + 4) * eps


def no_weight_can_underflow(bounds: ErrorBounds) -> NDArray[np.bool_]:
    """Columns n in which every weight is at least exp(-2 l_n) / N > tiny, so must be strictly positive.

    Every logit of column n lies within 2 l_n of the column's largest, so its weight is at least
    exp(-2 l_n) / N; one is added to the exponent to cover the rounding of the logits (r_n << 1).
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

# (machine epsilon, largest finite, smallest normal) of each dtype the sdpa convention casts q, k, v to: IEEE 754
# binary16, binary32, binary64 and bfloat16 (8 exponent bits like binary32, 8 significand bits with the implicit
# one, so eps = 2^-7). Named rather than looked up, so that bfloat16 needs neither ml_dtypes nor an array library.
PRECISIONS: dict[str, tuple[float, float, float]] = {
    "float16": (2.0**-10, 65504.0, 2.0**-14),
    "bfloat16": (2.0**-7, float((2 - 2.0**-7) * 2.0**127), 2.0**-126),
    "float32": (2.0**-23, float(np.finfo(np.float32).max), 2.0**-126),
    "float64": (2.0**-52, float(np.finfo(np.float64).max), 2.0**-1022),
}


def epsilon_of_name(name: str) -> float:
    """Machine epsilon of a dtype named as numpy, torch ("torch.bfloat16") or ml_dtypes print it; float64's for
    a name not in PRECISIONS (an integer result, say), as epsilon_of does for non-float dtypes."""
    return PRECISIONS.get(name.removeprefix("torch."), PRECISIONS["float64"])[0]


def fits_in_range(problem: AttentionProblem, name: str) -> bool:
    """Whether casting q, k, v to dtype `name` and forming any logit stays below its largest finite number.

    Entries of Q, K, V are bounded by Qhat, Khat, Vhat, and every partial sum of a logit q_n . k_m (in any
    order) by (Khat^T Qhat)_mn; a factor 2 covers the rounding of both, and of the outputs, which are convex
    combinations of the values. A problem beyond this is not representable in the dtype: no law is judged on it.
    """
    largest = PRECISIONS[name][1] / 2
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
