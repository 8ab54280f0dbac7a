"""The catalogue of correct implementations, the mirror of properties/catalogues/mistakes/: each computes self-attention
(or the column softmax, or multi-head attention) correctly but differently from the reference, and no law may
FAIL on any of them (tests/catalogues/test_correct.py runs every law on every one).

The algorithms are those the tolerances (properties/helpers/tolerances.py) are derived for: division by the sum or
multiplication by its reciprocal, the log domain exp(z - lse), exp2 after pre-scaling by log2(e) with the
attention matrix rebuilt from lse (FlashAttention), online (blocked) rescaling with block sizes 1, 3, 16 and
64, reversed and data-dependent summation orders, the row convention, and float32 and float16 computation.
The reference's own blockwise path at small block sizes is here too (and in CI, as --impl targets).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from attention import blockwise_scaled_dot_product_self_attention
from attention.rows import scaled_dot_product_attention
from properties.helpers.options import Kind

Array = NDArray[Any]
Pair = tuple[Array, Array]
LOG2_E = float(np.log2(np.e))


def projections(arrays: tuple[Array, ...], dtype: type[np.floating[Any]]) -> tuple[Array, Array, Array, Any]:
    """(Q, K, V, s) in `dtype`: Q = omega_q X + beta_q and so on, s = 1/sqrt(D_q) in `dtype`."""
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = (np.asarray(a, dtype=dtype) for a in arrays)
    s = dtype(1) / np.sqrt(dtype(omega_q.shape[0]))
    return omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v, s


def _scaled(function: Callable[[Array, Array, Array, Any], Pair], dtype: type[np.floating[Any]] = np.float64) -> Any:
    """A notebook-signature function from a core f(Q, K, V, s) -> (X', attentions)."""

    def attention(
        X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
    ) -> Pair:
        Q, K, V, s = projections((X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k), dtype)
        return function(Q, K, V, s)

    return attention


# --- Cores f(Q, K, V, s) -> (X', attentions), in the dtype of their arguments ---


def reciprocal_core(Q: Array, K: Array, V: Array, s: Any) -> Pair:
    """Shift by the column maximum, exponentiate, multiply by the reciprocal of the sum."""
    logits = (K.T @ Q) * s
    weights = np.exp(logits - logits.max(axis=0, keepdims=True))
    A = weights * (1 / weights.sum(axis=0, keepdims=True))
    return V @ A, A


def division_core(Q: Array, K: Array, V: Array, s: Any) -> Pair:
    """Shift by the column maximum, exponentiate, divide by the sum."""
    logits = K.T @ (Q * s)
    weights = np.exp(logits - logits.max(axis=0, keepdims=True))
    A = weights / weights.sum(axis=0, keepdims=True)
    return V @ A, A


def log_domain_core(Q: Array, K: Array, V: Array, s: Any) -> Pair:
    """A = exp(L - lse) with lse = M + log sum exp(L - M): the normaliser taken in the log domain."""
    logits = (K.T @ Q) * s
    M = logits.max(axis=0, keepdims=True)
    lse = M + np.log(np.exp(logits - M).sum(axis=0, keepdims=True))
    A = np.exp(logits - lse)
    return V @ A, A


def online_core(block_size: int) -> Callable[[Array, Array, Array, Any], Pair]:
    """An online softmax over blocks of `block_size` keys (all queries at once): running maximum, running sum
    and running weighted sum of values, rescaled by exp(m_old - m_new); the attention matrix rebuilt as
    exp(L - lse) from a second product L and lse = m + log(sum)."""

    def core(Q: Array, K: Array, V: Array, s: Any) -> Pair:
        N = Q.shape[1]
        running_max = np.full((1, N), -np.inf, dtype=Q.dtype)
        total = np.zeros((1, N), dtype=Q.dtype)
        acc = np.zeros((V.shape[0], N), dtype=Q.dtype)
        for k0 in range(0, N, block_size):
            scores = (K[:, k0 : k0 + block_size].T @ Q) * s
            new_max = np.maximum(running_max, scores.max(axis=0, keepdims=True))
            correction = np.exp(running_max - new_max)
            weights = np.exp(scores - new_max)
            total = total * correction + weights.sum(axis=0, keepdims=True)
            acc = acc * correction + V[:, k0 : k0 + block_size] @ weights
            running_max = new_max
        lse = running_max + np.log(total)
        A = np.exp((K.T @ (Q * s)) - lse)
        return acc / total, A

    core.__name__ = f"online_core_{block_size}"
    return core


def exp2_core(Q: Array, K: Array, V: Array, s: Any) -> Pair:
    """FlashAttention's arithmetic: scores pre-scaled by s log2(e), exp2 against a running maximum over blocks
    of 16 keys, X' = acc / l, and the attention matrix rebuilt as exp2(S' - lse2) from a second product S'
    (queries times keys, transposed) with lse2 = m + log2(l)."""
    c = Q.dtype.type(s * Q.dtype.type(LOG2_E))
    N = Q.shape[1]
    running_max = np.full((1, N), -np.inf, dtype=Q.dtype)
    total = np.zeros((1, N), dtype=Q.dtype)
    acc = np.zeros((V.shape[0], N), dtype=Q.dtype)
    for k0 in range(0, N, 16):
        scores = (K[:, k0 : k0 + 16].T @ Q) * c
        new_max = np.maximum(running_max, scores.max(axis=0, keepdims=True))
        correction = np.exp2(running_max - new_max)
        weights = np.exp2(scores - new_max)
        total = total * correction + weights.sum(axis=0, keepdims=True)
        acc = acc * correction + V[:, k0 : k0 + 16] @ weights
        running_max = new_max
    lse2 = running_max + np.log2(total)
    A = np.exp2((Q.T @ K).T * c - lse2)
    return acc / total, A


def reversed_order_core(Q: Array, K: Array, V: Array, s: Any) -> Pair:
    """Division-normalised, every sum over the keys taken one by one from the last key to the first."""
    logits = (K.T @ Q) * s
    weights = np.exp(logits - logits.max(axis=0, keepdims=True))
    A = weights / np.cumsum(weights[::-1], axis=0)[-1:]
    X_prime = np.cumsum(V[:, ::-1, None] * A[None, ::-1, :], axis=1)[:, -1, :]
    return X_prime, A


def sorted_order_core(Q: Array, K: Array, V: Array, s: Any) -> Pair:
    """Division-normalised, every sum taken in a data-dependent order: smallest weight first, one by one."""
    logits = (K.T @ Q) * s
    weights = np.exp(logits - logits.max(axis=0, keepdims=True))
    order = np.argsort(weights, axis=0, kind="stable")
    A = weights / np.cumsum(np.take_along_axis(weights, order, axis=0), axis=0)[-1:]
    terms = V[:, order] * np.take_along_axis(A, order, axis=0)[None, :, :]  # (D_v, N keys in order, N queries)
    return np.cumsum(terms, axis=1)[:, -1, :], A


# --- Self-attention with the notebook's signature ---

reciprocal_multiplication = _scaled(reciprocal_core)
log_domain = _scaled(log_domain_core)
exp2_with_lse_reconstruction = _scaled(exp2_core)
online_blocks_of_1 = _scaled(online_core(1))
online_blocks_of_3 = _scaled(online_core(3))
online_blocks_of_16 = _scaled(online_core(16))
online_blocks_of_64 = _scaled(online_core(64))
reversed_summation_order = _scaled(reversed_order_core)
sorted_summation_order = _scaled(sorted_order_core)
float32_throughout = _scaled(division_core, np.float32)
float32_online_blocks_of_16 = _scaled(online_core(16), np.float32)
float16_throughout = _scaled(division_core, np.float16)


def log_domain_unscaled(*arrays: Array) -> Pair:
    """Unscaled self-attention (eq. 12.8) in the log domain."""
    Q, K, V, _ = projections(arrays, np.float64)
    return log_domain_core(Q, K, V, 1.0)


def float32_unscaled(*arrays: Array) -> Pair:
    """Unscaled self-attention (eq. 12.8) in float32, divided by the sum."""
    Q, K, V, _ = projections(arrays, np.float32)
    return division_core(Q, K, V, np.float32(1))


def float32_rows_log_domain(*arrays: Array) -> Pair:
    """The row convention (inputs as rows, as in PyTorch) in float32 with a log-domain softmax over each row."""
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = (np.asarray(a, dtype=np.float32) for a in arrays)
    rows = X.T
    Q, K, V = rows @ omega_q.T + beta_q.T, rows @ omega_k.T + beta_k.T, rows @ omega_v.T + beta_v.T
    scores = (Q @ K.T) / np.sqrt(np.float32(omega_q.shape[0]))  # [n, m]: query n, key m
    M = scores.max(axis=1, keepdims=True)
    P = np.exp(scores - (M + np.log(np.exp(scores - M).sum(axis=1, keepdims=True))))
    return (P @ V).T, P.T


def raises_on_empty_input(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """The usual student code: shift by logits.max(axis=0), which has no identity for N = 0 and raises there
    (an API choice, a convention: test_conventions.py names it; every other law holds)."""
    Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
    logits = K.T @ Q / np.sqrt(omega_q.shape[0])
    A = np.exp(logits - logits.max(axis=0))
    A /= A.sum(axis=0)
    return V @ A, A


def scipy_softmax(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """The column softmax by scipy.special.softmax(axis=0) (shifted by scipy; raises on an empty input)."""
    from scipy.special import softmax  # a test dependency only: the catalogue holds this variant when it is there

    Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
    A = np.asarray(softmax(K.T @ Q / np.sqrt(omega_q.shape[0]), axis=0))
    return V @ A, A


def float32_notebook_signature(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """The notebook's function written in float32 (inputs cast, float32 returned), shifted: judged by float32's
    epsilon on the problems float32 can represent (the others are set aside), with no range guard of its own."""
    with np.errstate(over="ignore", invalid="ignore"):  # problems beyond float32 overflow here; they are set aside
        x, w_v, w_q, w_k, b_v, b_q, b_k = (
            np.asarray(a, dtype=np.float32) for a in (X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k)
        )
        Q, K, V = w_q @ x + b_q, w_k @ x + b_k, w_v @ x + b_v
        logits = (K.T @ Q) / np.sqrt(np.float32(w_q.shape[0]))
        A = np.exp(logits - logits.max(axis=0, keepdims=True, initial=-np.inf))
        A /= A.sum(axis=0, keepdims=True)
        return V @ A, A


def reference_blockwise(block_size: int) -> Callable[..., Array]:
    """The reference's blockwise path (X' only) with a small block size: every block boundary exercised."""

    def attention(*arrays: Array) -> Array:
        return blockwise_scaled_dot_product_self_attention(*arrays, block_size=block_size)

    attention.__name__ = attention.__qualname__ = f"reference_blockwise_{block_size}"
    return attention


# Module-level targets for --impl (CI runs the whole battery on each).
reference_blockwise_1 = reference_blockwise(1)
reference_blockwise_3 = reference_blockwise(3)
reference_blockwise_16 = reference_blockwise(16)


# --- The column softmax: f(data) ---


# A column spanning more than the float range overflows z - max to -inf, whose exp, 0, is the right weight.


def log_domain_softmax(data: Array) -> Array:
    """exp(z - lse), lse = M + log sum exp(z - M)."""
    M = data.max(axis=0, keepdims=True)
    with np.errstate(over="ignore", under="ignore"):
        return np.asarray(np.exp(data - (M + np.log(np.exp(data - M).sum(axis=0, keepdims=True)))))


def exp2_softmax(data: Array) -> Array:
    """exp2 after pre-scaling by log2(e), times the reciprocal of the sum."""
    with np.errstate(over="ignore", under="ignore"):
        scaled = data * LOG2_E
        weights = np.exp2(scaled - scaled.max(axis=0, keepdims=True))
    return np.asarray(weights * (1 / weights.sum(axis=0, keepdims=True)))


def float32_softmax(data: Array) -> Array:
    """Division-normalised in float32."""
    z = np.asarray(data, dtype=np.float32)
    with np.errstate(over="ignore", under="ignore"):
        weights = np.exp(z - z.max(axis=0, keepdims=True))
    return np.asarray(weights / weights.sum(axis=0, keepdims=True))


def reversed_order_softmax(data: Array) -> Array:
    """Division-normalised, the sum taken from the last entry to the first."""
    with np.errstate(over="ignore", under="ignore"):
        weights = np.exp(data - data.max(axis=0, keepdims=True))
    return np.asarray(weights / np.cumsum(weights[::-1], axis=0)[-1:])


# --- Multi-head attention: f(X, heads, omega_c) ---


def float32_multihead(X: Array, heads: Any, omega_c: Array) -> Array:
    """Every head in float32 (division-normalised), omega_c applied in float32."""
    outputs = [float32_throughout(X, *head)[0] for head in heads]
    return np.asarray(np.asarray(omega_c, dtype=np.float32) @ np.vstack(outputs))


def log_domain_multihead(X: Array, heads: Any, omega_c: Array) -> Array:
    """Every head in the log domain, in float64."""
    return np.asarray(omega_c @ np.vstack([log_domain(X, *head)[0] for head in heads]))


@dataclass(frozen=True)
class Variant:
    """One correct implementation: its function, what it implements, and the kind of attention (for
    self-attention). A variant that computes in a narrower dtype holds only problems whose magnitudes (inputs,
    projections, logits) stay within `max_magnitude`, a quarter of that dtype's largest number: no
    implementation in that dtype can hold larger ones, so the false-alarm test skips them."""

    function: Callable[..., Any]
    role: str  # "implementation", "softmax", "multihead" or "kernel" (row convention, f(query, key, value))
    kind: Kind = "scaled"
    max_magnitude: float = float(np.finfo(np.float64).max)

    @property
    def name(self) -> str:
        return str(getattr(self.function, "__name__", self.function))


def _named(function: Any, name: str) -> Any:
    function.__name__ = function.__qualname__ = name
    return function


FLOAT16_RANGE = float(np.finfo(np.float16).max) / 4
FLOAT32_RANGE = float(np.finfo(np.float32).max) / 4
# Pre-scaling by log2(e) ~ 1.44 overflows logits beyond max / log2(e): exp2 softmaxes hold a quarter of the range.
PRESCALED_RANGE = float(np.finfo(np.float64).max) / 4
_SELF_ATTENTION = [
    Variant(_named(function, name), "implementation")
    for name, function in [
        ("reciprocal_multiplication", reciprocal_multiplication),
        ("log_domain", log_domain),
        ("exp2_with_lse_reconstruction", exp2_with_lse_reconstruction),
        ("online_blocks_of_1", online_blocks_of_1),
        ("online_blocks_of_3", online_blocks_of_3),
        ("online_blocks_of_16", online_blocks_of_16),
        ("online_blocks_of_64", online_blocks_of_64),
        ("reversed_summation_order", reversed_summation_order),
        ("sorted_summation_order", sorted_summation_order),
        ("reference_blockwise_1", reference_blockwise_1),
        ("reference_blockwise_3", reference_blockwise_3),
        ("reference_blockwise_16", reference_blockwise_16),
    ]
] + [
    Variant(_named(function, name), "implementation", max_magnitude=FLOAT32_RANGE)
    for name, function in [
        ("float32_throughout", float32_throughout),
        ("float32_online_blocks_of_16", float32_online_blocks_of_16),
        ("float32_rows_log_domain", float32_rows_log_domain),
    ]
]
HAS_SCIPY = importlib.util.find_spec("scipy") is not None
CATALOGUE: tuple[Variant, ...] = (
    *_SELF_ATTENTION,
    Variant(raises_on_empty_input, "implementation"),
    *([Variant(scipy_softmax, "implementation")] if HAS_SCIPY else []),
    Variant(float32_notebook_signature, "implementation"),  # no max_magnitude: the battery sets aside what it must
    Variant(_named(float16_throughout, "float16_throughout"), "implementation", max_magnitude=FLOAT16_RANGE),
    Variant(log_domain_unscaled, "implementation", "unscaled"),
    Variant(float32_unscaled, "implementation", "unscaled", max_magnitude=FLOAT32_RANGE),
    Variant(log_domain_softmax, "softmax"),
    Variant(exp2_softmax, "softmax", max_magnitude=PRESCALED_RANGE),
    Variant(float32_softmax, "softmax", max_magnitude=FLOAT32_RANGE),
    Variant(reversed_order_softmax, "softmax"),
    Variant(float32_multihead, "multihead"),
    Variant(log_domain_multihead, "multihead"),
    Variant(scaled_dot_product_attention, "kernel"),  # the bundled row-convention kernel, every law through sdpa
)
