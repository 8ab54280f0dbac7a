"""The catalogue of deliberately broken implementations: each one mistake seen in real solutions of notebooks
12.1 and 12.2 or in attention code, and each caught by at least one law (its meta-test names it).

Self-attention mistakes share the notebook's signature (and take the keyword options where the mistake is in
one); multi-head ones take (X, heads, omega_c); softmax ones take the logits. `broken(f)` wraps a function as
the implementation under test, as the plugin wraps a user's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from attention import scaled_dot_product_self_attention, sinusoidal_positional_encoding
from attention.rows import scaled_dot_product_attention as row_attention
from properties.conventions import Convention, SdpaImplementation
from properties.implementation import Implementation, Multihead, Softmax

Array = NDArray[np.float64]
Pair = tuple[Array, Array]


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


def scale_by_sqrt_D(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Scales by 1/sqrt(D), the input dimension, instead of 1/sqrt(D_q): right only when D_q = D."""
    return correct_attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / np.sqrt(X.shape[0]))


def scale_hard_coded(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Scales by 1/sqrt(4), the notebook's D_q, for every problem."""
    return correct_attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / np.sqrt(4))


def scale_by_D_q(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Scales by 1/D_q instead of 1/sqrt(D_q)."""
    return correct_attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / omega_q.shape[0])


def softmax_over_rows(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Normalises each row of K^T Q (over the queries) instead of each column (over the keys)."""
    Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
    A = stable_softmax((K.T @ Q) / np.sqrt(omega_q.shape[0]), axis=1)
    return V @ A, A


def transposed_logits(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Uses Q^T K for K^T Q: the weight of key m for query n becomes q_m . k_n."""
    Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
    A = stable_softmax((Q.T @ K) / np.sqrt(omega_q.shape[0]))
    return V @ A, A


def bias_tiled_for_three_inputs(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Broadcasts the biases with a hard-coded N = 3 (np.tile(beta, 3)): fails for every other N."""
    Q = omega_q @ X + np.tile(beta_q, (1, 3))
    K = omega_k @ X + np.tile(beta_k, (1, 3))
    V = omega_v @ X + np.tile(beta_v, (1, 3))
    A = stable_softmax((K.T @ Q) / np.sqrt(omega_q.shape[0]))
    return V @ A, A


def notebook_softmax(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Correct, but with the notebook's softmax_cols (no shift by the column max): overflows for large logits."""
    Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
    with np.errstate(over="ignore", invalid="ignore"):
        exp_values = np.exp((K.T @ Q) / np.sqrt(omega_q.shape[0]))
        A = exp_values / exp_values.sum(axis=0, keepdims=True)
    return V @ A, A


def keys_from_query_weights(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Forms the keys with omega_q (a copy-paste slip): K = omega_q X + beta_k."""
    return correct_attention(X, omega_v, omega_q, omega_q, beta_v, beta_q, beta_k, scale=1 / np.sqrt(omega_q.shape[0]))


def values_without_bias(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Forgets beta_v: V = omega_v X."""
    return correct_attention(
        X, omega_v, omega_q, omega_k, 0 * beta_v, beta_q, beta_k, scale=1 / np.sqrt(omega_q.shape[0])
    )


def query_bias_on_keys(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Adds beta_q to the keys and beta_k to the queries."""
    return correct_attention(X, omega_v, omega_q, omega_k, beta_v, beta_k, beta_q, scale=1 / np.sqrt(omega_q.shape[0]))


def positional_bias(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Favours earlier keys by a bias of -0.5 per position: no longer permutation equivariant."""
    Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
    N = X.shape[1]
    A = stable_softmax((K.T @ Q) / np.sqrt(omega_q.shape[0]) - 0.5 * np.arange(N).reshape(-1, 1))
    return V @ A, A


def uniform_attention(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Ignores queries and keys: every column of attentions is uniform (the limit of a zero scale)."""
    N = X.shape[1]
    A = np.full((N, N), 1.0 / N)
    return (omega_v @ X + beta_v) @ A, A


def attentions_transposed_in_output(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Returns the right attention matrix but forms X' = V A^T."""
    _, A = correct_attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / np.sqrt(omega_q.shape[0]))
    return (omega_v @ X + beta_v) @ A.T, A


def mutates_inputs(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Correct output, but centres X in place (a caller's array is changed)."""
    result = correct_attention(
        X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / np.sqrt(omega_q.shape[0])
    )
    X -= X.mean() + 1.0
    return result


def nondeterministic_order(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Sums the values in a random order on every call: equal within rounding, not bitwise reproducible."""
    _, A = correct_attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / np.sqrt(omega_q.shape[0]))
    V = omega_v @ X + beta_v
    order = np.random.default_rng().permutation(X.shape[1])
    wobble = np.nextafter(1.0, 2.0) if np.random.default_rng().random() < 0.5 else 1.0
    return (V[:, order] * wobble) @ A[order, :], A


_CACHE: dict[Any, Pair] = {}


def cached_by_shape(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Caches its result by the shapes of the arguments, so a second problem of the same shape gets a stale answer."""
    key = tuple(a.shape for a in (X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k))
    if key not in _CACHE:
        _CACHE[key] = correct_attention(
            X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / np.sqrt(omega_q.shape[0])
        )
    X_prime, A = _CACHE[key]
    return X_prime.copy(), A.copy()


def x_prime_only(function: Any) -> Any:
    """The same function, returning X' alone (as the notebook's template does)."""

    def wrapped(*arguments: Array) -> Array:
        return np.asarray(function(*arguments)[0])

    wrapped.__name__ = wrapped.__qualname__ = f"{function.__name__}_x_prime_only"
    wrapped.__doc__ = function.__doc__
    return wrapped


# --- More mistakes in self-attention ---


def query_norm_squared_scale(*arrays: Array) -> tuple[Array, Array]:
    """Divides the logits by |q_n|^2 (over-normalised queries): sharper queries give flatter attention."""
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = arrays
    Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
    A = stable_softmax((K.T @ Q) / np.maximum((Q * Q).sum(axis=0, keepdims=True), 1e-12))
    return V @ A, A


def residual_added(*arrays: Array) -> tuple[Array, Array]:
    """Adds the input to the output (a transformer block's residual, where self-attention alone was asked)."""
    X_prime, A = correct_attention(*arrays, scale=1 / np.sqrt(arrays[2].shape[0]))
    return X_prime + arrays[0], A


# --- Mistakes in the keyword options (positions, masks, causal, bias) ---
# Each carries the option it gets wrong and the kind of mistake (see `mistake`): properties/catalogue.py
# prints the matrix of options and mistakes from these tags and the meta-tests that use them.

Options = Any  # the keyword arguments positional, positional_mode, mask, causal, bias (each optional)


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


@mistake("mask, causal, bias", "ignored")
def keywords_ignored(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Takes the keywords mask, causal and bias, and ignores them."""
    return scaled_dot_product_self_attention(*arrays)


@mistake("mask, causal", "finite fill")
def mask_as_large_negative_bias(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Masks by adding -1e4 to hidden logits: hidden keys with huge logits still win."""
    N = arrays[0].shape[1]
    visible = np.ones((N, N), dtype=bool) if mask is None else np.asarray(mask)
    if causal:
        visible = visible & np.tri(N, dtype=bool).T
    penalty = np.where(visible, 0.0, -1e4) + (0.0 if bias is None else np.asarray(bias))
    return scaled_dot_product_self_attention(*arrays, bias=penalty)


@mistake("mask, causal", "finite fill")
def hidden_logits_filled_with_minus_20(
    *arrays: Array, mask: Any = None, causal: bool = False, bias: Any = None
) -> Pair:
    """Sets hidden logits to -20 (a 'large' negative number) instead of excluding them: weight e^-20 leaks."""
    visible = _visible(arrays[0].shape[1], mask, causal)
    return masked_attention(arrays, visible=visible, bias=bias, fill=-20.0)


@mistake("causal", "transposed")
def causal_upper_triangle(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Implements causal=True as key m visible to query n iff m >= n (the transposed triangle)."""
    N = arrays[0].shape[1]
    if causal:
        mask = np.tri(N, dtype=bool) if mask is None else np.asarray(mask) & np.tri(N, dtype=bool)
    return scaled_dot_product_self_attention(*arrays, mask=mask, bias=bias)


@mistake("causal", "off-by-one diagonal")
def causal_excludes_the_diagonal(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Implements causal=True as m < n: a query no longer sees its own key (np.triu(..., k=1))."""
    N = arrays[0].shape[1]
    if causal:
        strict = np.triu(np.ones((N, N), dtype=bool), k=1)
        mask = strict if mask is None else np.asarray(mask) & strict
    return _reference(arrays, mask=mask, bias=bias)


@mistake("causal", "off-by-one diagonal")
def causal_sees_one_ahead(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Implements causal=True as m <= n + 1: each query also sees the next key (np.tril(..., k=1) transposed)."""
    N = arrays[0].shape[1]
    if causal:
        ahead = np.triu(np.ones((N, N), dtype=bool), k=-1)
        mask = ahead if mask is None else np.asarray(mask) & ahead
    return _reference(arrays, mask=mask, bias=bias)


@mistake("mask + causal", "ignored")
def causal_ignored_when_a_mask_is_given(
    *arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None
) -> Any:
    """Uses the mask when one is given and causal only otherwise: causal=True with a mask lets queries see ahead."""
    return (
        _reference(arrays, mask=mask, bias=bias) if mask is not None else _reference(arrays, causal=causal, bias=bias)
    )


@mistake("mask + causal", "or instead of and")
def causal_or_mask(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Combines causal and the mask with `or`: a key visible under either is seen."""
    N = arrays[0].shape[1]
    if causal and mask is not None:
        mask = np.asarray(mask) | _triangle(N)
        causal = False
    return _reference(arrays, mask=mask, causal=causal, bias=bias)


@mistake("mask", "transposed")
def mask_transposed(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Reads mask[n, m] for key m and query n (the PyTorch row convention applied to the book's columns)."""
    return _reference(arrays, mask=None if mask is None else np.asarray(mask).T, causal=causal, bias=bias)


@mistake("mask", "not renormalised")
def mask_without_renormalising(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Zeroes hidden weights after the softmax and does not renormalise."""
    _, A = scaled_dot_product_self_attention(*arrays, bias=bias)
    if mask is not None:
        A = np.where(mask, A, 0.0)
    return (arrays[1] @ arrays[0] + arrays[4]) @ A, A


@mistake("mask, causal", "logits ignored")
def uniform_over_the_visible_keys(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """With a mask or causal, spreads each query's weight evenly over its visible keys (the logits are lost)."""
    visible = _visible(arrays[0].shape[1], mask, causal)
    if visible is None:
        return _reference(arrays, bias=bias)
    return masked_attention(arrays, visible=visible, scale=0.0)


@mistake("mask, causal", "scale missing")
def masked_path_unscaled(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Drops the 1/sqrt(D_q) scale on the path taken when a mask or causal is given."""
    visible = _visible(arrays[0].shape[1], mask, causal)
    if visible is None:
        return _reference(arrays, bias=bias)
    return masked_attention(arrays, visible=visible, bias=bias, scale=1.0)


@mistake("mask, causal", "wrong scale")
def masked_path_scaled_by_sqrt_D(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Scales by 1/sqrt(D), the input dimension, on the path taken when a mask or causal is given."""
    visible = _visible(arrays[0].shape[1], mask, causal)
    if visible is None:
        return _reference(arrays, bias=bias)
    return masked_attention(arrays, visible=visible, bias=bias, scale=1 / np.sqrt(arrays[0].shape[0]))


@mistake("mask + bias, causal + bias", "ignored")
def bias_ignored_with_a_mask(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Forgets the bias on the path taken when a mask or causal is given."""
    return _reference(arrays, mask=mask, causal=causal, bias=bias if mask is None and not causal else None)


@mistake("mask", "wrong axis")
def seen_keys_along_the_wrong_axis(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Zeroes the values of the inputs whose query sees no key, where the inputs whose key no query sees were
    meant (visible.any(axis=0) for visible.any(axis=1)): a visible key then contributes a zero value."""
    visible = _visible(arrays[0].shape[1], mask, causal)
    X_prime, A = _reference(arrays, mask=mask, causal=causal, bias=bias)
    if visible is None:
        return X_prime, A
    V = arrays[1] @ arrays[0] + arrays[4]
    V[:, ~visible.any(axis=0)] = 0.0
    return V @ A, A


@mistake("bias", "transposed")
def bias_transposed(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Adds bias[n, m] to the logit of key m for query n (the row convention's bias on the book's columns)."""
    return _reference(arrays, mask=mask, causal=causal, bias=None if bias is None else np.asarray(bias).T)


@mistake("bias", "before the scale")
def bias_before_the_scale(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Pair:
    """Adds the bias before scaling: softmax((K^T Q + B) / sqrt(D_q)) instead of softmax(K^T Q / sqrt(D_q) + B)."""
    s = 1 / np.sqrt(arrays[2].shape[0])
    scaled_bias = None if bias is None else s * np.asarray(bias)
    return masked_attention(arrays, visible=_visible(arrays[0].shape[1], mask, causal), bias=scaled_bias)


@mistake("bias", "reversed")
def bias_rows_reversed(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Adds the bias upside down: B[N-1-m, n] instead of B[m, n]."""
    return scaled_dot_product_self_attention(*arrays, bias=None if bias is None else np.asarray(bias)[::-1])


@mistake("mask, causal", "warns")
def mask_as_the_log_of_the_visibility(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Adds log(visible) to the logits (log 0 = -inf hides a key): the right values, but numpy warns "divide by
    zero encountered in log" on every call that hides a key."""
    visible = _visible(arrays[0].shape[1], mask, causal)
    if visible is None:
        return _reference(arrays, bias=bias)
    penalty = np.log(visible.astype(np.float64)) + (0.0 if bias is None else np.asarray(bias))
    return masked_attention(arrays, bias=penalty)


@mistake("mask, causal", "unshifted")
def masked_softmax_without_the_shift(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Pair:
    """On the path taken when a mask or causal is given, exponentiates the visible logits without subtracting
    their maximum: right while every logit stays below ~709, inf / inf = NaN beyond."""
    visible = _visible(arrays[0].shape[1], mask, causal)
    if visible is None:
        return _reference(arrays, bias=bias)
    Q, K, V = _projections(arrays, None, "input")
    logits = (K.T @ Q) / np.sqrt(Q.shape[0]) + (0.0 if bias is None else np.asarray(bias))
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        weights = np.where(visible, np.exp(logits), 0.0)
        A = weights / weights.sum(axis=0, keepdims=True)
    return V @ A, A


@mistake("bias", "shifted before the bias")
def bias_added_after_the_shift(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Pair:
    """Subtracts each column's maximum of s K^T Q and adds the bias afterwards: exact in exact arithmetic, but a
    column whose bias lies ~709 below (above) its logits underflows (overflows) every weight: 0 / 0 = NaN."""
    visible = _visible(arrays[0].shape[1], mask, causal)
    seen = np.ones((arrays[0].shape[1],) * 2, dtype=bool) if visible is None else visible
    Q, K, V = _projections(arrays, None, "input")
    logits = np.where(seen, (K.T @ Q) / np.sqrt(Q.shape[0]), -np.inf)
    top = logits.max(axis=0, initial=-np.inf, keepdims=True)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        weights = np.exp(logits - np.where(np.isfinite(top), top, 0.0) + (0.0 if bias is None else np.asarray(bias)))
        A = weights / weights.sum(axis=0, keepdims=True)
    return V @ A, A


@mistake("every option at N = 0", "crashes on the edge")
def crashes_without_inputs(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Pair:
    """Shifts the logits by logits.max(axis=0), which has no identity for N = 0: raises where empty outputs are due."""
    Q, K, _ = _projections(arrays, None, "input")
    logits = (K.T @ Q) / np.sqrt(Q.shape[0]) + (0.0 if bias is None else np.asarray(bias))
    logits.max(axis=0)  # ValueError for N = 0: zero-size array to reduction operation maximum
    return _reference(arrays, mask=mask, causal=causal, bias=bias)


@mistake("mask, causal", "convention: NaN")
def nan_for_queries_without_keys(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Pair:
    """Correct, but a query that sees no key gets NaN (softmax over logits that are all -inf: 0 / 0), as
    PyTorch's math backend gives. Not a semantic mistake: only the conventions law may fail on it."""
    X_prime, A = _reference(arrays, mask=mask, causal=causal, bias=bias)
    unseen = _unseen(arrays[0].shape[1], mask, causal)
    X_prime[:, unseen], A[:, unseen] = np.nan, np.nan
    return X_prime, A


@mistake("mask, causal", "convention: uniform")
def uniform_for_queries_without_keys(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Pair:
    """Correct, but a query that sees no key attends to every key evenly (what a finite fill such as
    torch.finfo.min gives when every key is hidden). Not a semantic mistake: only the conventions law may fail."""
    X_prime, A = _reference(arrays, mask=mask, causal=causal, bias=bias)
    N = arrays[0].shape[1]
    unseen = _unseen(N, mask, causal)
    A[:, unseen] = 1.0 / max(N, 1)
    X_prime[:, unseen] = (arrays[1] @ arrays[0] + arrays[4]) @ A[:, unseen]
    return X_prime, A


@mistake("positional (input), positional (query_key)", "reversed")
def positions_reversed(*arrays: Array, positional: Any = None, positional_mode: Any = "input") -> Any:
    """Reads the positions back to front: Pi[:, ::-1]."""
    Pi = None if positional is None else np.asarray(positional)[:, ::-1]
    return scaled_dot_product_self_attention(*arrays, positional=Pi, positional_mode=positional_mode)


@mistake("positional (input)", "ignored")
def adds_its_own_positions(*arrays: Array) -> Any:
    """Always adds a sinusoidal encoding to X, whatever positions the caller meant."""
    X = arrays[0]
    return scaled_dot_product_self_attention(X + 10 * sinusoidal_positional_encoding(*X.shape), *arrays[1:])


@mistake("positional (input), positional (query_key)", "ignored")
def positions_ignored(*arrays: Array, positional: Any = None, positional_mode: str = "input", **options: Any) -> Any:
    """Takes positional= and positional_mode= and ignores them."""
    return _reference(arrays, **options)


@mistake("positional (input)", "wrong sign")
def positions_subtracted(*arrays: Array, positional: Any = None, positional_mode: str = "input", **options: Any) -> Any:
    """Subtracts the positions: X - Pi."""
    Pi = None if positional is None else -np.asarray(positional)
    return _reference(arrays, positional=Pi, positional_mode=positional_mode, **options)


@mistake("positional (input), positional (query_key)", "transposed")
def positions_transposed_when_square(
    *arrays: Array, positional: Any = None, positional_mode: str = "input", **options: Any
) -> Any:
    """Reads Pi in the row convention (N x D, one position per row) and transposes it whenever it is square."""
    Pi = positional
    if Pi is not None and np.shape(Pi)[0] == np.shape(Pi)[1]:
        Pi = np.asarray(Pi).T
    return _reference(arrays, positional=Pi, positional_mode=positional_mode, **options)


@mistake("positional (input)", "wrong operand")
def positions_never_in_the_values(
    *arrays: Array, positional: Any = None, positional_mode: str = "input", **options: Any
) -> Any:
    """Adds the positions to the queries and keys only, in both modes (mode "input" loses them in the values)."""
    return _reference(arrays, positional=positional, positional_mode="query_key", **options)


@mistake("positional (query_key)", "wrong operand")
def positions_always_in_the_values(
    *arrays: Array, positional: Any = None, positional_mode: str = "input", **options: Any
) -> Any:
    """Adds the positions to the inputs in both modes (mode "query_key" puts them into the values too)."""
    return _reference(arrays, positional=positional, positional_mode="input", **options)


@mistake("positional (query_key)", "ignored")
def query_key_positions_ignored(
    *arrays: Array, positional: Any = None, positional_mode: str = "input", **options: Any
) -> Any:
    """Drops the positions in mode "query_key" (only mode "input" uses them)."""
    used = positional if positional_mode == "input" else None
    return _reference(arrays, positional=used, positional_mode="input", **options)


def _positions_reaching(
    arrays: tuple[Array, ...], Pi: Any, *, queries: bool, keys: bool, values: bool
) -> tuple[Array, ...]:
    """The arguments with inputs [X; Pi] and weights [omega, omega] (Pi reaches that projection) or [omega, 0]."""
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = arrays

    def weights(omega: Array, reached: bool) -> Array:
        return np.hstack([omega, omega if reached else np.zeros_like(omega)])

    X_stacked = np.vstack([X, np.asarray(Pi)])
    return (
        X_stacked,
        weights(omega_v, values),
        weights(omega_q, queries),
        weights(omega_k, keys),
        beta_v,
        beta_q,
        beta_k,
    )


@mistake("positional (query_key)", "wrong operand")
def query_key_positions_on_the_queries_only(
    *arrays: Array, positional: Any = None, positional_mode: str = "input", **options: Any
) -> Any:
    """In mode "query_key" adds the positions to the queries and forgets the keys."""
    if positional is None or positional_mode == "input":
        return _reference(arrays, positional=positional, positional_mode=positional_mode, **options)
    return _reference(_positions_reaching(arrays, positional, queries=True, keys=False, values=False), **options)


@mistake("positional (query_key)", "wrong operand")
def query_key_positions_on_the_values_only(
    *arrays: Array, positional: Any = None, positional_mode: str = "input", **options: Any
) -> Any:
    """In mode "query_key" adds the positions to the values instead of the queries and keys."""
    if positional is None or positional_mode == "input":
        return _reference(arrays, positional=positional, positional_mode=positional_mode, **options)
    return _reference(_positions_reaching(arrays, positional, queries=False, keys=False, values=True), **options)


@mistake("positional + mask, positional + causal, positional + bias", "ignored")
def positions_dropped_with_other_options(
    *arrays: Array, positional: Any = None, positional_mode: str = "input", **options: Any
) -> Any:
    """Forgets the positions when a mask, causal or a bias is given too (a second code path without them)."""
    if any(value is not None and value is not False for value in options.values()):
        return _reference(arrays, **options)
    return _reference(arrays, positional=positional, positional_mode=positional_mode)


# --- Mistakes in multi-head attention: f(X, heads, omega_c) ---


def _head_outputs(X: Array, heads: Any) -> list[Array]:
    return [_reference((X, *head))[0] for head in heads]


@mistake("multi-head heads", "scale missing")
def unscaled_heads(X: Array, heads: Any, omega_c: Array) -> Array:
    """Forgets every head's 1/sqrt(D_q) scale."""
    return np.asarray(omega_c @ np.vstack([correct_attention(X, *head, scale=1.0)[0] for head in heads]))


@mistake("multi-head heads", "heads mixed up")
def heads_stacked_in_reverse(X: Array, heads: Any, omega_c: Array) -> Array:
    """Stacks the head outputs last head first."""
    return np.asarray(omega_c @ np.vstack(_head_outputs(X, heads)[::-1]))


@mistake("multi-head heads", "positions invented")
def positional_heads(X: Array, heads: Any, omega_c: Array) -> Array:
    """Each head favours earlier keys (positional_bias): no longer permutation equivariant."""
    return np.asarray(omega_c @ np.vstack([positional_bias(X, *head)[0] for head in heads]))


@mistake("multi-head heads of different shapes", "wrong scale")
def shared_scale(X: Array, heads: Any, omega_c: Array) -> Array:
    """Scales every head by 1/sqrt of the total query dimension of all heads."""
    total = sum(head[1].shape[0] for head in heads)
    return np.asarray(omega_c @ np.vstack([correct_attention(X, *head, scale=1 / np.sqrt(total))[0] for head in heads]))


@mistake("multi-head heads of different shapes", "wrong scale")
def first_heads_scale_for_every_head(X: Array, heads: Any, omega_c: Array) -> Array:
    """Scales every head by 1/sqrt of the first head's D_q (right only when all heads have one D_q)."""
    s = 1 / np.sqrt(heads[0][1].shape[0])
    return np.asarray(omega_c @ np.vstack([correct_attention(X, *head, scale=s)[0] for head in heads]))


@mistake("multi-head mixing", "extra term")
def heads_with_a_residual(X: Array, heads: Any, omega_c: Array) -> Array:
    """Adds X to the output when the shapes allow (a transformer block's residual)."""
    out = omega_c @ np.vstack(_head_outputs(X, heads))
    return np.asarray(out + X if out.shape == X.shape else out + 1.0)


@mistake("multi-head square mixing", "transposed")
def mixing_transposed(X: Array, heads: Any, omega_c: Array) -> Array:
    """Applies omega_c^T when omega_c is square (the row convention's H W_o read in the book's columns)."""
    stacked = np.vstack(_head_outputs(X, heads))
    mixer = omega_c.T if omega_c.shape[0] == omega_c.shape[1] else omega_c
    return np.asarray(mixer @ stacked)


@mistake("multi-head heads", "heads mixed up")
def heads_interleaved(X: Array, heads: Any, omega_c: Array) -> Array:
    """Stacks the head outputs row by row (row d of head h at d H + h, a reshape in the wrong order) when
    every head has the same D_v, and correctly otherwise."""
    outputs = _head_outputs(X, heads)
    if len({output.shape[0] for output in outputs}) == 1:
        stacked = np.stack(outputs, axis=1).reshape(-1, X.shape[1])
    else:
        stacked = np.vstack(outputs)
    return np.asarray(omega_c @ stacked)


@mistake("multi-head heads", "parameters mixed up")
def keys_of_the_next_head(X: Array, heads: Any, omega_c: Array) -> Array:
    """Head h forms its keys with head h + 1's omega_k (cyclically) where the shapes agree (an indexing slip)."""
    mixed = []
    for h, head in enumerate(heads):
        other = heads[(h + 1) % len(heads)][2]
        omega_k = other if other.shape == head[2].shape else head[2]
        mixed.append((head[0], head[1], omega_k, *head[3:]))
    return np.asarray(omega_c @ np.vstack(_head_outputs(X, mixed)))


@mistake("multi-head heads", "parameters mixed up")
def value_bias_of_the_first_head(X: Array, heads: Any, omega_c: Array) -> Array:
    """Every head adds the first head's beta_v where the shapes agree (one bias broadcast to all heads)."""
    first = heads[0][3]
    mixed = [(*head[:3], first if first.shape == head[3].shape else head[3], *head[4:]) for head in heads]
    return np.asarray(omega_c @ np.vstack(_head_outputs(X, mixed)))


# --- Mistakes in the column softmax: f(data) ---


def row_softmax(data: Array) -> Array:
    shifted = np.exp(data - data.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))


def exp_without_normalisation(data: Array) -> Array:
    return np.asarray(np.exp(data - data.max(axis=0, keepdims=True)))


def softmax_over_all_entries(data: Array) -> Array:
    shifted = np.exp(data - data.max())
    return np.asarray(shifted / shifted.sum())


def reversed_softmax(data: Array) -> Array:
    shifted = np.exp(data.min(axis=0, keepdims=True) - data)
    return np.asarray(shifted / shifted.sum(axis=0, keepdims=True))


def notebook_softmax_cols(data: Array) -> Array:
    """The notebook's own softmax_cols: no shift, so exp overflows for logits above ~709."""
    with np.errstate(over="ignore", invalid="ignore"):
        exp_values = np.exp(data)
        return np.asarray(exp_values / exp_values.sum(axis=0))


# --- Mistakes in row-convention kernels: f(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
# scale=None, enable_gqa=False) on (B, H, L, E) rows, as torch's SDPA; each starts from attention/rows.py ---


def rows_softmax(logits: Array, visible: Any, axis: int = -1) -> Array:
    """Softmax of the visible logits along `axis` (hidden entries weigh 0); no visible entry gives zeros."""
    shown = np.broadcast_to(visible, logits.shape)
    top = np.max(np.where(shown, logits, -np.inf), axis=axis, keepdims=True)
    weights = np.exp(np.where(shown, logits - np.where(np.isfinite(top), top, 0.0), -np.inf))
    total = weights.sum(axis=axis, keepdims=True)
    return np.asarray(np.divide(weights, total, out=np.zeros_like(weights), where=total > 0))


def kernel_scaled_by_value_width(
    query: Array, key: Array, value: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Array:  # fmt: skip
    """Defaults the scale to 1/sqrt(E_v), the value width, instead of 1/sqrt(E): right only when E_v = E."""
    scale = 1 / np.sqrt(value.shape[-1]) if scale is None else scale
    return row_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)


def kernel_ignores_scale(
    query: Array, key: Array, value: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Array:  # fmt: skip
    """Takes scale= and always uses 1/sqrt(E)."""
    return row_attention(query, key, value, attn_mask, dropout_p, is_causal, None, enable_gqa)


def kernel_softmax_over_queries(
    query: Array, key: Array, value: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Array:  # fmt: skip
    """Normalises q k^T over the queries (axis -2) instead of over the keys (axis -1)."""
    s = 1 / np.sqrt(query.shape[-1]) if scale is None else scale
    weights = rows_softmax(query @ np.swapaxes(key, -1, -2) * s, True if attn_mask is None else attn_mask, axis=-2)
    return np.asarray((weights @ value).astype(query.dtype))


def kernel_mask_polarity_inverted(
    query: Array, key: Array, value: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Array:  # fmt: skip
    """Reads a boolean attn_mask as True = masked out (the convention of some libraries), not True = takes part."""
    mask = None if attn_mask is None else ~np.asarray(attn_mask) if np.asarray(attn_mask).dtype == bool else attn_mask
    return row_attention(query, key, value, mask, dropout_p, is_causal, scale, enable_gqa)


def kernel_causal_upper_triangle(
    query: Array, key: Array, value: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Array:  # fmt: skip
    """Implements is_causal with np.triu: query l sees the keys s >= l, the future, instead of s <= l."""
    if is_causal:
        L, S = query.shape[-2], key.shape[-2]
        upper = np.triu(np.ones((L, S), dtype=bool))
        attn_mask = upper if attn_mask is None else upper & np.asarray(attn_mask)
    return row_attention(query, key, value, attn_mask, dropout_p, False, scale, enable_gqa)


def kernel_keywords_ignored(
    query: Array, key: Array, value: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Array:  # fmt: skip
    """Takes attn_mask and is_causal, and ignores both."""
    return row_attention(query, key, value, None, dropout_p, False, scale, enable_gqa)


def kernel_heads_merged_into_length(
    query: Array, key: Array, value: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Array:  # fmt: skip
    """Folds the heads into the length, (B, H, L, E) -> (B, H L, E): every query attends to the keys of all heads."""
    B, H, L = query.shape[:3]
    q, k, v = (a.reshape(B, H * a.shape[-2], a.shape[-1]) for a in (query, key, value))
    out = row_attention(q, k, v, None, dropout_p, False, scale)
    return np.asarray(out.reshape(B, H, L, value.shape[-1]))


def kernel_keys_of_first_batch_element(
    query: Array, key: Array, value: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Array:  # fmt: skip
    """Uses the keys and values of batch element 0 for every batch element (a test with batch size 1 hides it)."""
    key, value = np.broadcast_to(key[:1], key.shape), np.broadcast_to(value[:1], value.shape)
    return row_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)


def kernel_groups_tiled(
    query: Array, key: Array, value: Array, attn_mask: Any = None, dropout_p: float = 0.0,
    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
) -> Array:  # fmt: skip
    """Expands grouped key/value heads with np.tile (query head h reads key head h mod H_kv) instead of np.repeat
    (h // G): right only with one key/value head."""
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        group = query.shape[-3] // key.shape[-3]
        key, value = np.tile(key, (1, group, 1, 1)), np.tile(value, (1, group, 1, 1))
    return row_attention(query, key, value, attn_mask, dropout_p, is_causal, scale)


def broken_kernel(function: Any, convention: Convention | None = None) -> SdpaImplementation:
    """A broken row-convention kernel behind the sdpa wrapper (numpy, float64 unless `convention` says)."""
    name = f"properties.broken:{function.__name__}"
    return SdpaImplementation(function, "scaled", name, convention or Convention())


def broken(function: Any, kind: str = "scaled") -> Implementation:
    """A broken function as an Implementation of the given kind, named after the function."""
    return Implementation(function, kind, f"properties.broken:{function.__name__}")  # type: ignore[arg-type]


def broken_multihead(function: Any) -> Multihead:
    """A broken multi-head function behind the multi-head wrapper, named after the function."""
    return Multihead(function, f"properties.broken:{function.__name__}")


def broken_softmax(function: Any) -> Softmax:
    """A broken column softmax behind the softmax wrapper, named after the function."""
    return Softmax(function, f"properties.broken:{function.__name__}")


# --- More mistakes of the catalogue that attention-check's diagnosis (properties/diagnosis.py) names; their
# meta-tests are in properties/test_diagnosis.py.


def scale_by_sqrt_D_v(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Scales by 1/sqrt(D_v), the value dimension, instead of 1/sqrt(D_q)."""
    return correct_attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / np.sqrt(omega_v.shape[0]))


def not_scaled(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Leaves out the 1/sqrt(D_q) of eq. 12.9: eq. 12.8 where 12.9 was asked."""
    return correct_attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1.0)


def scaled_by_sqrt_D_q(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Divides by sqrt(D_q) where eq. 12.8 (self_attention) has no scale."""
    return correct_attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, scale=1 / np.sqrt(omega_q.shape[0]))


def softmax_over_whole_matrix(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Normalises K^T Q over all N^2 entries at once instead of over each column."""
    Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
    logits = (K.T @ Q) / np.sqrt(omega_q.shape[0])
    A = np.exp(logits - logits.max())
    A /= A.sum()
    return V @ A, A


def queries_without_bias(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Forgets beta_q: Q = omega_q X."""
    return correct_attention(
        X, omega_v, omega_q, omega_k, beta_v, 0 * beta_q, beta_k, scale=1 / np.sqrt(omega_q.shape[0])
    )


def without_biases(
    X: Array, omega_v: Array, omega_q: Array, omega_k: Array, beta_v: Array, beta_q: Array, beta_k: Array
) -> Pair:
    """Forgets every bias: Q = omega_q X, K = omega_k X, V = omega_v X."""
    return correct_attention(
        X, omega_v, omega_q, omega_k, 0 * beta_v, 0 * beta_q, 0 * beta_k, scale=1 / np.sqrt(omega_q.shape[0])
    )


# --- Tails and tiles (issue 9): sparsified weights, and blocked kernels that mishandle block boundaries ---


def tail_weights_zeroed(*arrays: Array) -> Pair:
    """Zeroes every weight below 1e-8 and renormalises (a "sparsification" shortcut)."""
    _, A = correct_attention(*arrays, scale=1 / np.sqrt(arrays[2].shape[0]))
    A = np.where(A < 1e-8, 0.0, A)
    A /= A.sum(axis=0, keepdims=True)
    return (arrays[1] @ arrays[0] + arrays[4]) @ A, A


TILE = 16  # the block size of the blocked mistakes below


def _blocked(arrays: tuple[Array, ...], *, drop_tail: bool = False, reuse_first_queries: bool = False) -> Array:
    """X' by an online softmax over blocks of TILE keys for blocks of TILE queries, with one of two mistakes."""
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = arrays
    Q = (omega_q @ X + beta_q) / np.sqrt(omega_q.shape[0])
    K, V = omega_k @ X + beta_k, omega_v @ X + beta_v
    N = X.shape[1]
    key_end = N - N % TILE if drop_tail and N > TILE else N
    out = np.empty((V.shape[0], N))
    for q0 in range(0, N, TILE):
        width = min(TILE, N - q0)
        q = Q[:, :width] if reuse_first_queries else Q[:, q0 : q0 + width]
        running_max, total = np.full(width, -np.inf), np.zeros(width)
        acc = np.zeros((V.shape[0], width))
        for k0 in range(0, key_end, TILE):
            scores = K[:, k0 : k0 + TILE].T @ q
            new_max = np.maximum(running_max, scores.max(axis=0))
            correction = np.exp(running_max - new_max)
            weights = np.exp(scores - new_max)
            total = total * correction + weights.sum(axis=0)
            acc = acc * correction + V[:, k0 : k0 + TILE] @ weights
            running_max = new_max
        out[:, q0 : q0 + width] = acc / total
    return out


def blocked_dropping_the_tail_block(*arrays: Array) -> Array:
    """A FlashAttention-style kernel (tiles of 16) that skips the last partial block of keys when N > 16."""
    return _blocked(arrays, drop_tail=True)


def blocked_reusing_the_first_query_block(*arrays: Array) -> Array:
    """A FlashAttention-style kernel (tiles of 16) that uses the first block of queries for every block."""
    return _blocked(arrays, reuse_first_queries=True)


# --- Where a correct implementation changes path: skipping the shift by the maximum on the wrong evidence ---

LOG_MAX = float(np.log(np.finfo(np.float64).max))  # ~709.78: exp of anything larger overflows
SHIFTED_PATH = 700.0  # the two-path kernels below take their shifted path once some |logit| reaches this


def _scaled_logits(arrays: tuple[Array, ...]) -> tuple[Array, Array]:
    """(K^T Q / sqrt(D_q), V): the logits and values of the problem, without options."""
    Q, K, V = _projections(arrays, None, "input")
    return (K.T @ Q) / np.sqrt(Q.shape[0]), V


def _reaches(logits: Array, limit: float) -> bool:
    """Whether some |logit| reaches `limit`."""
    return bool(np.abs(logits).max(initial=0.0) >= limit)


def shift_skipped_below_the_exp_limit(*arrays: Array) -> Pair:
    """Skips the shift by the column maximum when every logit is below log(max float), forgetting that N of
    them must also sum below it: N = 5 logits of 708.3 each sum to inf, and every weight becomes 0."""
    logits, V = _scaled_logits(arrays)
    if _reaches(logits, LOG_MAX):
        return masked_attention(arrays)
    with np.errstate(over="ignore", under="ignore"):
        weights = np.exp(logits)
        A = weights * (1 / weights.sum(axis=0, keepdims=True))
    return V @ A, A


def online_unshifted_for_moderate_logits(*arrays: Array) -> Array:
    """An online softmax over all keys at once that skips the running maximum whenever every |logit| is below
    SHIFTED_PATH (so that exp stays finite), forgetting the values it multiplies before normalising: exp(400)
    times a value of 1e200 overflows."""
    logits, V = _scaled_logits(arrays)
    if _reaches(logits, SHIFTED_PATH):
        return masked_attention(arrays)[0]
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        weights = np.exp(logits)
        return np.asarray((V @ weights) / weights.sum(axis=0, keepdims=True))


def online_blocks_skipping_the_first_key_when_shifted(*arrays: Array) -> Array:
    """An online softmax over blocks of 3 keys whose shifted path (taken once a logit reaches SHIFTED_PATH) starts
    its key loop at 1 instead of 0: with large logits the first key is never seen."""
    logits, V = _scaled_logits(arrays)
    if not _reaches(logits, SHIFTED_PATH):
        return masked_attention(arrays)[0]
    N = logits.shape[1]
    running_max, total, acc = np.full(N, -np.inf), np.zeros(N), np.zeros((V.shape[0], N))
    for k0 in range(1, N, 3):
        scores = logits[k0 : k0 + 3]
        new_max = np.maximum(running_max, scores.max(axis=0))
        correction = np.exp(running_max - new_max)
        with np.errstate(under="ignore"):
            weights = np.exp(scores - new_max)
        total = total * correction + weights.sum(axis=0)
        acc = acc * correction + V[:, k0 : k0 + 3] @ weights
        running_max = new_max
    return np.asarray(acc / total)


def bias_subtracted_on_the_shifted_path(
    *arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None
) -> Pair:
    """Adds the bias on the shift-free path but subtracts it on the shifted one (taken once a logit, bias
    included, reaches SHIFTED_PATH): two copies of the same code, one edited wrongly."""
    visible = _visible(arrays[0].shape[1], mask, causal)
    if bias is None:
        return masked_attention(arrays, visible=visible)
    large = _reaches(_scaled_logits(arrays)[0] + np.asarray(bias), SHIFTED_PATH)
    return masked_attention(arrays, visible=visible, bias=-np.asarray(bias) if large else bias)
