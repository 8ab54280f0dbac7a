"""What the mistakes start from: correct starting points (stable_softmax, correct_attention, masked_attention, the
reference with options), the `mistake` decorator, and the wrappers that hand a broken function to a law.

The catalogue of deliberately broken implementations (the other modules of this package): each one mistake seen
in real solutions of notebooks 12.1 and 12.2 or in attention code, and each caught by at least one law (its
meta-test names it).

Self-attention mistakes share the notebook's signature (and take the keyword options where the mistake is in
one); multi-head ones take (X, heads, omega_c); softmax ones take the logits. `broken(f)` wraps a function as
the implementation under test, as the plugin wraps a user's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from attention import scaled_dot_product_self_attention
from properties.helpers.backward import NotebookBackward, RowBackward
from properties.helpers.implementations import Implementation, Multihead, Softmax
from properties.helpers.options import REFERENCE_TARGETS, SDPA_REFERENCE_TARGET, Kind
from properties.helpers.row_convention import Convention, SdpaImplementation

Array = NDArray[np.float64]
Pair = tuple[Array, Array]
MISTAKES = "properties.catalogues.mistakes"  # the package re-exports every mistake: MISTAKES:name is a TARGET


def stable_softmax(logits: Array, axis: int = 0) -> Array:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=axis, keepdims=True))


def correct_attention(
    X: Array,
    omega_v: Array,
    omega_q: Array,
    omega_k: Array,
    beta_v: Array,
    beta_q: Array,
    beta_k: Array,
    *,
    scale: float,
) -> Pair:
    """Correct self-attention with logit scale `scale`: what each bug below starts from."""
    Q = omega_q @ X + beta_q
    K = omega_k @ X + beta_k
    V = omega_v @ X + beta_v
    A = stable_softmax(scale * (K.T @ Q))
    return V @ A, A


def x_prime_only(function: Any) -> Any:
    """The same function, returning X' alone (as the notebook's template does)."""

    def wrapped(*arguments: Array) -> Array:
        return np.asarray(function(*arguments)[0])

    wrapped.__name__ = wrapped.__qualname__ = f"{function.__name__}_x_prime_only"
    wrapped.__doc__ = function.__doc__
    return wrapped


Function = TypeVar("Function", bound=Callable[..., Any])


def mistake(option: str, kind: str) -> Callable[[Function], Function]:
    """Tag a broken function with the option(s) it gets wrong and the kind of mistake (for the coverage matrix)."""

    def tag(function: Function) -> Function:
        setattr(function, "option", option)  # noqa: B010 (an attribute of a function, not of its type)
        setattr(function, "mistake", kind)  # noqa: B010
        return function

    return tag


def _triangle(N: int) -> NDArray[np.bool_]:
    """[m, n] True iff m <= n: causal visibility."""
    return np.asarray(np.tri(N, dtype=bool).T)


def _visible(N: int, mask: Any, causal: bool) -> NDArray[np.bool_] | None:
    """Which keys each query sees (None: all), as the reference defines it."""
    if mask is None and not causal:
        return None
    seen = np.ones((N, N), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    return seen & _triangle(N) if causal else seen


def _projections(arrays: tuple[Array, ...], positional: Any, positional_mode: str) -> tuple[Array, Array, Array]:
    """Q, K, V with the positions where the mode puts them."""
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = arrays
    X_qk = X if positional is None else X + np.asarray(positional)
    X_v = X_qk if positional_mode == "input" else X
    return omega_q @ X_qk + beta_q, omega_k @ X_qk + beta_k, omega_v @ X_v + beta_v


def masked_attention(
    arrays: tuple[Array, ...],
    *,
    positional: Any = None,
    positional_mode: str = "input",
    visible: NDArray[np.bool_] | None = None,
    bias: Any = None,
    scale: float | None = None,
    fill: float = -np.inf,
) -> Pair:
    """Self-attention with the options, written out: logits s K^T Q + bias, hidden logits set to `fill`
    (-inf: excluded), a column softmax, and a zero column for a query that sees no key. The masked-path
    mistakes below start from it; with the defaults it is correct."""
    Q, K, V = _projections(arrays, positional, positional_mode)
    s = 1 / np.sqrt(Q.shape[0]) if scale is None else scale
    logits = s * (K.T @ Q) + (0.0 if bias is None else np.asarray(bias))
    N = logits.shape[0]
    seen = np.ones((N, N), dtype=bool) if visible is None else visible
    filled = np.where(seen, logits, fill)
    top = filled.max(axis=0, initial=-np.inf, keepdims=True)  # the largest logit taking part (none: -inf)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(under="ignore"):
        weights = np.exp(filled - top)
    totals = weights.sum(axis=0, keepdims=True)
    A = np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)
    return V @ A, A


def _reference(arrays: tuple[Array, ...], **options: Any) -> Pair:
    X_prime, A = scaled_dot_product_self_attention(*arrays, **options)
    return np.asarray(X_prime, dtype=np.float64), np.asarray(A, dtype=np.float64)


def _unseen(N: int, mask: Any, causal: bool) -> NDArray[np.bool_]:
    """The queries that see no key."""
    visible = _visible(N, mask, causal)
    return np.zeros(N, dtype=bool) if visible is None else np.asarray(~visible.any(axis=0))


def rows_softmax(logits: Array, visible: Any, axis: int = -1) -> Array:
    """Softmax of the visible logits along `axis` (hidden entries weigh 0); no visible entry gives zeros."""
    shown = np.broadcast_to(visible, logits.shape)
    top = np.max(np.where(shown, logits, -np.inf), axis=axis, keepdims=True)
    weights = np.exp(np.where(shown, logits - np.where(np.isfinite(top), top, 0.0), -np.inf))
    total = weights.sum(axis=axis, keepdims=True)
    return np.asarray(np.divide(weights, total, out=np.zeros_like(weights), where=total > 0))


def broken_kernel(function: Any, convention: Convention | None = None) -> SdpaImplementation:
    """A broken row-convention kernel behind the sdpa wrapper (numpy, float64 unless `convention` says)."""
    name = f"{MISTAKES}:{function.__name__}"
    return SdpaImplementation(function, "scaled", name, convention or Convention())


def broken_backward(function: Any) -> RowBackward:
    """A broken row-convention backward behind the backward wrapper, differentiating the bundled row kernel."""
    from attention.rows import scaled_dot_product_attention

    name = f"{MISTAKES}:{function.__name__}"
    return RowBackward(function, name, scaled_dot_product_attention, SDPA_REFERENCE_TARGET, "scaled")


def broken_notebook_backward(function: Any, kind: Kind = "scaled") -> NotebookBackward:
    """A broken backward of the notebook's contract behind its wrapper, differentiating the bundled reference of
    that kind (scaled_dot_product_self_attention or self_attention)."""
    import attention

    target = REFERENCE_TARGETS[kind]
    forward = getattr(attention, target.partition(":")[2])
    return NotebookBackward(function, f"{MISTAKES}:{function.__name__}", forward, target, kind)


def broken(function: Any, kind: str = "scaled") -> Implementation:
    """A broken function as an Implementation of the given kind, named after the function."""
    return Implementation(function, kind, f"{MISTAKES}:{function.__name__}")  # type: ignore[arg-type]


def broken_multihead(function: Any) -> Multihead:
    """A broken multi-head function behind the multi-head wrapper, named after the function."""
    return Multihead(function, f"{MISTAKES}:{function.__name__}")


def broken_softmax(function: Any) -> Softmax:
    """A broken column softmax behind the softmax wrapper, named after the function."""
    return Softmax(function, f"{MISTAKES}:{function.__name__}")
