"""The catalogue of deliberately broken implementations: each one mistake seen in real solutions of notebooks
12.1 and 12.2 or in attention code, and each caught by at least one law (its meta-test names it).

Self-attention mistakes share the notebook's signature (and take the keyword options where the mistake is in
one); multi-head ones take (X, heads, omega_c); softmax ones take the logits. `broken(f)` wraps a function as
the implementation under test, as the plugin wraps a user's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from attention import scaled_dot_product_self_attention, sinusoidal_positional_encoding
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


def keywords_ignored(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Takes the keywords mask, causal and bias, and ignores them."""
    return scaled_dot_product_self_attention(*arrays)


def mask_as_large_negative_bias(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Masks by adding -1e4 to hidden logits: hidden keys with huge logits still win."""
    N = arrays[0].shape[1]
    visible = np.ones((N, N), dtype=bool) if mask is None else np.asarray(mask)
    if causal:
        visible = visible & np.tri(N, dtype=bool).T
    penalty = np.where(visible, 0.0, -1e4) + (0.0 if bias is None else np.asarray(bias))
    return scaled_dot_product_self_attention(*arrays, bias=penalty)


def causal_upper_triangle(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Implements causal=True as key m visible to query n iff m >= n (the transposed triangle)."""
    N = arrays[0].shape[1]
    if causal:
        mask = np.tri(N, dtype=bool) if mask is None else np.asarray(mask) & np.tri(N, dtype=bool)
    return scaled_dot_product_self_attention(*arrays, mask=mask, bias=bias)


def mask_without_renormalising(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Zeroes hidden weights after the softmax and does not renormalise."""
    _, A = scaled_dot_product_self_attention(*arrays, bias=bias)
    if mask is not None:
        A = np.where(mask, A, 0.0)
    return (arrays[1] @ arrays[0] + arrays[4]) @ A, A


def bias_rows_reversed(*arrays: Array, causal: bool = False, mask: Any = None, bias: Any = None) -> Any:
    """Adds the bias upside down: B[N-1-m, n] instead of B[m, n]."""
    return scaled_dot_product_self_attention(*arrays, bias=None if bias is None else np.asarray(bias)[::-1])


def positions_reversed(*arrays: Array, positional: Any = None, positional_mode: Any = "input") -> Any:
    """Reads the positions back to front: Pi[:, ::-1]."""
    Pi = None if positional is None else np.asarray(positional)[:, ::-1]
    return scaled_dot_product_self_attention(*arrays, positional=Pi, positional_mode=positional_mode)


def adds_its_own_positions(*arrays: Array) -> Any:
    """Always adds a sinusoidal encoding to X, whatever positions the caller meant."""
    X = arrays[0]
    return scaled_dot_product_self_attention(X + 10 * sinusoidal_positional_encoding(*X.shape), *arrays[1:])


# --- Mistakes in multi-head attention: f(X, heads, omega_c) ---


def unscaled_heads(X: Array, heads: Any, omega_c: Array) -> Array:
    return np.asarray(omega_c @ np.vstack([correct_attention(X, *head, scale=1.0)[0] for head in heads]))


def heads_stacked_in_reverse(X: Array, heads: Any, omega_c: Array) -> Array:
    outputs = [scaled_dot_product_self_attention(X, *head)[0] for head in heads]
    return np.asarray(omega_c @ np.vstack(outputs[::-1]))


def positional_heads(X: Array, heads: Any, omega_c: Array) -> Array:
    return np.asarray(omega_c @ np.vstack([positional_bias(X, *head)[0] for head in heads]))


def shared_scale(X: Array, heads: Any, omega_c: Array) -> Array:
    """Scales every head by 1/sqrt of the total query dimension of all heads."""
    total = sum(head[1].shape[0] for head in heads)
    return np.asarray(omega_c @ np.vstack([correct_attention(X, *head, scale=1 / np.sqrt(total))[0] for head in heads]))


def heads_with_a_residual(X: Array, heads: Any, omega_c: Array) -> Array:
    """Adds X to the output when the shapes allow (a transformer block's residual)."""
    out = omega_c @ np.vstack([scaled_dot_product_self_attention(X, *head)[0] for head in heads])
    return np.asarray(out + X if out.shape == X.shape else out + 1.0)


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


def broken(function: Any, kind: str = "scaled") -> Implementation:
    """A broken function as an Implementation of the given kind, named after the function."""
    return Implementation(function, kind, f"properties.broken:{function.__name__}")  # type: ignore[arg-type]


def broken_multihead(function: Any) -> Multihead:
    """A broken multi-head function behind the multi-head wrapper, named after the function."""
    return Multihead(function, f"properties.broken:{function.__name__}")


def broken_softmax(function: Any) -> Softmax:
    """A broken column softmax behind the softmax wrapper, named after the function."""
    return Softmax(function, f"properties.broken:{function.__name__}")


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
