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
from properties.conventions import Convention, SdpaImplementation
from properties.implementation import Implementation, Multihead, Softmax
from properties.kernels import scaled_dot_product_attention as row_attention

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


# --- Mistakes in row-convention kernels: f(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
# scale=None, enable_gqa=False) on (B, H, L, E) rows, as torch's SDPA; each starts from properties/kernels.py ---


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
