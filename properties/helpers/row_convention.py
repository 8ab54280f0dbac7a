"""The row convention (--convention sdpa): kernels called as f(query, key, value, ...) with tokens as rows and
batch and head axes, as torch.nn.functional.scaled_dot_product_attention, jax.nn.dot_product_attention and most
hand-written kernels take them.

An adapter, not a second battery: `SdpaImplementation` is an `Implementation` whose call builds q, k, v from the
drawn AttentionProblem (projections in float64: q = Q^T = (omega_q X + beta_q 1^T)^T, likewise k and v), casts
them to the dtype and array library asked for, calls the target through `call_function`, and turns its output
back into the book's X' (D_v x N), so every law of the battery keeps its one meaning. The book's keywords map to
the target's: mask[m, n] (key m visible to query n) becomes attn_mask / mask [n, m], causal becomes is_causal,
bias[m, n] becomes bias [n, m] (or a float attn_mask, which torch adds to the logits). The attention matrix is
taken from the target when it returns (out, weights), else recovered by a second call with the identity as
values (out = weights when value = I); a target that rejects that call leaves the laws needing it skipped. A
target that needs values as wide as the keys (jax) gets q, k, v padded with zero columns and the scale passed.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import currently_in_test_context, reject
from numpy.typing import NDArray

from properties.helpers.implementations import Implementation, ImplementationFailed, Result, call_function
from properties.helpers.options import ARRAYS, DTYPES, LAYOUTS
from properties.helpers.problems import AttentionProblem
from properties.helpers.tolerances import PRECISIONS, ErrorBounds, dtype_error_bounds, epsilon_of_name, fits_in_range

Array = NDArray[np.float64]

# The keywords of the row convention, by what they do. dropout_p is always passed as 0.0 when taken.
MASK_KEYWORDS = ("attn_mask", "mask")
SDPA_KEYWORDS = (*MASK_KEYWORDS, "is_causal", "scale", "bias", "dropout_p", "enable_gqa")
# The keywords of the row contract of a backward pass (properties/helpers/backward.py), and of `row_forward`.
ROW_KEYWORDS = ("attn_mask", "is_causal", "scale", "enable_gqa")
# Builtins whose signature inspect cannot read: their documented keywords, by module:qualname.
KNOWN_KEYWORDS: dict[str, frozenset[str]] = {
    "torch._C._nn:scaled_dot_product_attention": frozenset(
        {"attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"}
    ),
}


# Targets that take grouped key/value heads (fewer than the query heads) without a keyword, as documented.
IMPLICIT_GROUPS = frozenset({"jax._src.nn.functions:dot_product_attention"})


@dataclass(frozen=True)
class Convention:
    """How q, k, v reach the target: the axis order, the array library and the dtype."""

    layout: str = "BHLE"  # (batch, heads, length, width), torch's; "BLHE" is jax's (batch, length, heads, width)
    array: str = "numpy"
    dtype: str = "float64"

    def __post_init__(self) -> None:
        for name, value, choices in (("layout", self.layout, LAYOUTS), ("array", self.array, ARRAYS),
                                     ("dtype", self.dtype, DTYPES)):  # fmt: skip
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}; got {value!r}")

    @property
    def eps(self) -> float:
        return PRECISIONS[self.dtype].eps

    def check_available(self) -> None:
        """ValueError naming the missing package when the array library or the dtype cannot be used here."""
        needs = {"torch": ("torch", '".[torch]"'), "jax": ("jax", '".[jax]"')}
        if self.array in needs:
            module, extra = needs[self.array]
            if importlib.util.find_spec(module) is None:
                raise ValueError(f"--array {self.array} needs {module}: pip install -e {extra}")
        if self.dtype == "bfloat16" and self.array == "numpy" and importlib.util.find_spec("ml_dtypes") is None:
            raise ValueError('--dtype bfloat16 with numpy arrays needs ml_dtypes: pip install -e ".[bfloat16]"')
        if self.array == "jax":
            use_jax_compilation_cache()
        if self.array == "jax" and self.dtype == "float64":
            import jax

            config: Any = jax.config
            if not config.read("jax_enable_x64"):
                raise ValueError("jax computes in float32 unless 64-bit mode is on: set JAX_ENABLE_X64=1")

    def numpy_dtype(self) -> Any:
        """The numpy dtype of self.dtype (bfloat16 from ml_dtypes)."""
        if self.dtype == "bfloat16":
            import ml_dtypes

            return ml_dtypes.bfloat16
        return np.dtype(self.dtype)

    def rounded(self, array: Array) -> Array:
        """`array` rounded to the dtype (to nearest) and back to float64: what the target receives, exactly."""
        if self.array == "torch":  # torch rounds to bfloat16 itself; numpy would need ml_dtypes
            import torch

            tensor = torch.from_numpy(np.array(array, dtype=np.float64))
            return np.asarray(tensor.to(getattr(torch, self.dtype)).to(torch.float64).numpy())
        return np.asarray(np.asarray(array).astype(self.numpy_dtype()).astype(np.float64))

    def to_target(self, array: NDArray[Any], *, cast: bool = True, laid_out: bool = True) -> Any:
        """A (B, H, L, E) float64 (or boolean) array as the target's array: laid out, cast, in its library.
        Masks and biases keep their (B, H, L, S) axes in every layout (laid_out=False)."""
        if laid_out and self.layout == "BLHE" and array.ndim == 4:
            array = np.swapaxes(array, 1, 2)
        array = np.ascontiguousarray(array)
        if cast and array.dtype != np.bool_:
            array = array.astype(self.numpy_dtype()) if self.array != "torch" else array
        if self.array == "torch":
            import torch

            tensor = torch.from_numpy(array.copy())
            return tensor.to(getattr(torch, self.dtype)) if cast and array.dtype != np.bool_ else tensor
        if self.array == "jax":  # device_put: jnp.asarray compiles a copy for each new shape
            import jax

            return jax.device_put(array)
        return array.copy()

    def from_target(self, value: Any, what: str, *, laid_out: bool = True) -> tuple[Array, float]:
        """What the target returned as a float64 (B, H, L, E) numpy array, and the epsilon of its dtype (attention
        weights keep their (B, H, L, S) axes in every layout: laid_out=False)."""
        dtype_name = str(getattr(value, "dtype", "float64"))
        try:
            if self.array == "torch" and hasattr(value, "detach"):
                import torch

                value = value.detach().cpu().to(torch.float64).numpy()
            array = np.asarray(value)
            array = array.astype(np.float64) if array.dtype.kind in "fiuV" and array.dtype != np.float64 else array
        except Exception as error:
            raise ImplementationFailed(f"{what} could not be converted to a numpy array: {error!r}") from error
        if array.dtype != np.float64:
            raise ImplementationFailed(f"{what} has dtype {dtype_name}; expected a real float array")
        if laid_out and self.layout == "BLHE" and array.ndim == 4:
            array = np.swapaxes(array, 1, 2)
        return array, epsilon_of_name(dtype_name)


@dataclass(frozen=True)
class Batched:
    """What one call of the target returned, in the canonical (B, H, L, .) layout and float64."""

    out: Array  # (B, H, L, E_v)
    weights: Array | None  # (B, H, L, S) when the target returned them
    eps: float  # the coarser of the convention's dtype and the returned one
    modified: tuple[str, ...]  # query, key or value, when the call changed them in place


@dataclass(frozen=True)
class ConventionResult(Result):
    """A Result judged by the convention's dtype, and why the attention matrix is missing when it is."""

    dtype_eps: float = 0.0
    missing: str = "the implementation returns X' only; this law needs the attention matrix"

    @property
    def eps(self) -> float:
        return max(super().eps, self.dtype_eps)

    def require_attentions(self) -> NDArray[np.floating]:
        if self.attentions is None:
            pytest.skip(self.missing)
        return self.attentions


@functools.cache
def use_jax_compilation_cache() -> Path | None:
    """jax's persistent compilation cache for jax targets, every compilation kept, in ATTENTION_JAX_CACHE
    (default: $XDG_CACHE_HOME or ~/.cache, then attention-properties/jax; "off" for none), unless jax's own
    JAX_COMPILATION_CACHE_DIR is set. The laws draw the same shapes on every run (derandomised), and compiling them
    is most of a jax check: the second check of a target reuses the first's executables, which compute exactly
    what a fresh compilation would (jax keys them by the program, its shapes, options and backend)."""
    import jax

    config: Any = jax.config
    if os.environ.get("JAX_COMPILATION_CACHE_DIR") or config.jax_compilation_cache_dir:
        return None
    chosen = os.environ.get("ATTENTION_JAX_CACHE", "")
    if chosen == "off":
        return None
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    directory = Path(chosen) if chosen else home / "attention-properties" / "jax"
    config.update("jax_compilation_cache_dir", str(directory))
    config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


@functools.cache
def jax_compiled(function: Callable[..., Any], static: frozenset[str]) -> Callable[..., Any]:
    """jax.jit of a jax target, its keywords that are not arrays (is_causal...) static: one compilation per shape
    of the whole function, where op-by-op execution compiles each of its operations per shape."""
    import jax

    compiled: Callable[..., Any] = jax.jit(function, static_argnames=tuple(sorted(static)))
    return compiled


# jax targets whose Python code cannot be traced (a value read into Python control flow): called op by op.
JAX_EAGER: set[Callable[..., Any]] = set()
# jax targets that read their scale into Python (float(scale), a branch on it): given it static, a compilation a value.
JAX_STATIC_SCALE: set[Callable[..., Any]] = set()


def _untraceable(failed: ImplementationFailed) -> bool:
    """Whether the target failed on a tracer (it reads a traced value into Python), not on its inputs."""
    import jax

    untraceable = (jax.errors.JAXTypeError, jax.errors.NonConcreteBooleanIndexError, jax.errors.JAXIndexError)
    return isinstance(failed.__cause__, untraceable)


def call_target(name: str, function: Callable[..., Any], array: str, *arguments: Any, **keywords: Any) -> Any:
    """call_function(name, function, ...), through jax.jit for jax arrays: hypothesis draws many shapes, and op by
    op jax compiles every operation anew for each, which made a check of jax.nn.dot_product_attention take
    minutes. A float `scale` is passed as a 0-d jax array, traced like the arrays, so that one compilation serves
    every scale (the same value in the same dtype: jax rounds a Python float scale to the logits' dtype too); a
    target that cannot take it traced gets it static from then on, and one that cannot be traced at all (jax's
    tracer errors) is called op by op."""
    if array != "jax" or function in JAX_EAGER:
        return call_function(name, function, *arguments, **keywords)
    import jax

    scale = keywords.get("scale")
    if isinstance(scale, float | int) and not isinstance(scale, bool) and function not in JAX_STATIC_SCALE:
        traced = {**keywords, "scale": jax.device_put(np.asarray(float(scale)))}
        try:
            return call_function(name, jax_compiled(function, _static(traced)), *arguments, **traced)
        except ImplementationFailed as failed:
            if not _untraceable(failed):
                raise
        JAX_STATIC_SCALE.add(function)
    try:
        return call_function(name, jax_compiled(function, _static(keywords)), *arguments, **keywords)
    except ImplementationFailed as failed:
        if not _untraceable(failed):
            raise
    JAX_EAGER.add(function)
    return call_function(name, function, *arguments, **keywords)


def _static(keywords: dict[str, Any]) -> frozenset[str]:
    """The keywords whose values are not jax arrays: static arguments of jax.jit."""
    import jax

    return frozenset(key for key, value in keywords.items() if not isinstance(value, jax.Array))


# Lengths and widths of jax calls are rounded up to a multiple of BUCKET, beyond BUCKET_LIMIT to a power of 2
# (padded_to_buckets): the laws draw every small length and a handful of long ones.
BUCKET, BUCKET_LIMIT = 8, 64


def bucket(n: int) -> int:
    """n rounded up to a multiple of BUCKET (0 stays 0), or beyond BUCKET_LIMIT to a power of 2."""
    return -(-n // BUCKET) * BUCKET if n <= BUCKET_LIMIT else 1 << (n - 1).bit_length()


@dataclass(frozen=True)
class Padded:
    """q, k, v and the keywords of a call padded to bucketed shapes."""

    arrays: tuple[Array, Array, Array]
    keywords: dict[str, Any]


def every_query_sees_a_key(visible: NDArray[np.bool_] | None, causal: bool, L: int, S: int) -> bool:
    """Whether every query sees at least one key under the mask `visible` (B|1, H|1, L, S) and, when causal, under
    either alignment (keys m <= n + offset, offset 0 or S - L: the smaller is checked, which is the stricter)."""
    if S == 0:
        return L == 0
    seen = np.ones((1, 1, L, S), dtype=bool) if visible is None else visible
    if causal:
        n, m = np.arange(L)[:, None], np.arange(S)[None, :]
        seen = seen & (m <= n + min(0, S - L))
    return bool(np.all(seen.any(axis=-1)))


def padded_to_buckets(
    query: Array, key: Array, value: Array, keywords: dict[str, Any], mask_keyword: str | None
) -> Padded | None:
    """The call padded to bucketed shapes, whose results cut back to (L, S, E_v) are those of the call itself
    (None when there is nothing to pad or it cannot be padded exactly): a jax target compiles once a shape, and
    the laws draw hundreds of shapes; bucketed, they share a few dozen compilations.

    Why it is exact, for a kernel that computes attention (what every law assumes of a correct target):
    - widths (only when the call passes a scale, or its values are not as wide as the keys): q, k and v get zero
      columns up to W = bucket(max(E, E_v)) and the scale of width E is passed
      explicitly (1/sqrt(E) unless given): a zero column adds 0 to every logit, and a zero value column gives a
      zero output column, cut off;
    - queries: zero rows appended up to bucket(L); each query's output depends on its own row only, and the
      appended rows' outputs are cut off;
    - keys (only when the call passes a boolean mask: a call without one keeps its unmasked path): zero rows of k
      and v appended up to bucket(S), hidden from every query by that mask, extended with False columns, which the
      target combines with its other options: a hidden key gets weight exactly 0 (exp of the masked fill minus a
      visible logit underflows) so long as the query sees some real key. Keys are therefore padded only when
      every query sees a key under the mask and causal (else the convention of a query that sees no key, jax's
      mean of all values, would take the padded values in), never when S = 0;
    - causal: queries and keys are padded by the same number p (or not at all), so that S - L, the offset of a
      bottom-right alignment, stays what it was; with the top-left alignment (offset 0) the real queries see the
      real keys they saw, and any padded key they might reach is hidden by the mask;
    - a bias is padded with zeros (those logits are hidden); a mask keyword holding a float mask (torch's
      additive attn_mask) is left alone: no padding.
    The padded call then differs from the call itself only in the order in which the target may sum its exact
    zeros, which the error model allows (any summation order)."""
    L, E = query.shape[-2:]
    S, E_v = key.shape[-2], value.shape[-1]
    if mask_keyword is None or E == 0:  # E = 0: no default scale 1/sqrt(E) to pass for the padded width
        return None
    mask = keywords.get(mask_keyword)
    if mask is not None and (not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.ndim != 4):
        return None
    bias = keywords.get("bias")
    if bias is not None and (not isinstance(bias, np.ndarray) or bias.ndim != 4):
        return None
    causal = bool(keywords.get("is_causal"))
    visible = None if mask is None else np.broadcast_to(mask, (*mask.shape[:2], L, S))
    # The target takes the code path of the call itself: keys are padded only when the call passes a mask already,
    # widths only when it passes a scale or its values are not as wide as the keys (a jax target needs them as
    # wide: the scale is passed then in any case), so that a call without a mask, or with the default scale, is
    # never checked as a masked or explicitly scaled one.
    pad_keys = mask is not None and every_query_sees_a_key(visible, causal, L, S) and S > 0
    if causal and not pad_keys:
        L_b, S_b = L, S
    elif causal:
        p = bucket(max(L, S)) - max(L, S)
        L_b, S_b = L + p, S + p
    else:
        L_b, S_b = bucket(L), bucket(S) if pad_keys else S
    W = bucket(max(E, E_v, 1)) if keywords.get("scale") is not None or E_v != E else E
    if (L_b, S_b, W) == (L, S, E) and E_v == E:
        return None

    def zeros_around(a: NDArray[Any], length: int, width: int, fill: Any = 0) -> NDArray[Any]:
        grown = np.full((*a.shape[:-2], length, width), fill, dtype=a.dtype)
        grown[..., : a.shape[-2], : a.shape[-1]] = a
        return grown

    given = dict(keywords)
    if W > E:  # zero columns change no logit, but the default scale 1/sqrt(width) would see the padded width
        given["scale"] = 1.0 / np.sqrt(E) if keywords.get("scale") is None else keywords["scale"]
    if S_b > S or visible is not None:
        base = np.ones((1, 1, L, S), dtype=bool) if visible is None else visible
        grown = zeros_around(base, L_b, S_b, False)
        grown[..., L:, :S] = True  # appended queries see the real keys (their outputs are cut off)
        given[mask_keyword] = grown
    if bias is not None:
        given["bias"] = zeros_around(np.broadcast_to(bias, (*bias.shape[:2], L, S)), L_b, S_b)
    arrays = (zeros_around(query, L_b, W), zeros_around(key, S_b, W), zeros_around(value, S_b, W))
    return Padded(arrays, given)


def rows(problem: AttentionProblem) -> tuple[Array, Array, Array]:
    """q, k, v of a problem as rows, (N, D_q), (N, D_q), (N, D_v), computed in float64."""
    X = problem.X
    return (
        (problem.omega_q @ X + problem.beta_q).T,
        (problem.omega_k @ X + problem.beta_k).T,
        (problem.omega_v @ X + problem.beta_v).T,
    )


@dataclass(frozen=True, repr=False)
class SdpaImplementation(Implementation):
    """A row-convention kernel f(query, key, value, ...) behind the notebook convention's wrapper."""

    convention: Convention = field(default_factory=Convention)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kind == "unscaled" and "scale" not in self.keywords():
            raise ValueError("an unscaled row-convention kernel is checked with scale=1.0: the target takes no scale")

    def __repr__(self) -> str:
        return f"SdpaImplementation(load_function({self.name!r}), {self.kind!r}, {self.name!r}, {self.convention!r})"

    def bounds(self, problem: AttentionProblem, eps: float, scale: float | None = None) -> ErrorBounds:
        """The forward-error bounds of one evaluation in the convention's dtype (its underflow floor included),
        with the logit scale of the kind unless `scale` is given."""
        s = self.scale(problem.D_q) if scale is None else scale
        return dtype_error_bounds(problem, s, eps, self.convention.dtype)

    def keywords(self) -> frozenset[str]:
        """The row-convention keywords the target names in its signature (or documents, for known builtins)."""
        try:
            parameters = inspect.signature(self.function).parameters
        except (TypeError, ValueError):
            module = getattr(self.function, "__module__", "")
            return KNOWN_KEYWORDS.get(f"{module}:{getattr(self.function, '__qualname__', '')}", frozenset())
        return frozenset(name for name in SDPA_KEYWORDS if name in parameters)

    def grouped_heads(self) -> dict[str, Any] | None:
        """The keywords that make the target take fewer key/value heads than query heads: enable_gqa=True where
        the signature names it, none for targets documented to take them as they are, None if it cannot."""
        if "enable_gqa" in self.keywords():
            return {"enable_gqa": True}
        name = f"{getattr(self.function, '__module__', '')}:{getattr(self.function, '__qualname__', '')}"
        return {} if name in IMPLICIT_GROUPS else None

    def mask_keyword(self) -> str | None:
        return next((name for name in MASK_KEYWORDS if name in self.keywords()), None)

    def accepts(self, *keywords: str) -> bool:
        """Whether the target can honour these keywords: the book's (mask, causal, bias) through their row
        convention counterparts, positional never (the laws then add positions to X themselves), or its own."""
        taken = self.keywords()
        book = {
            "mask": self.mask_keyword() is not None,
            "causal": "is_causal" in taken,
            "bias": "bias" in taken or "attn_mask" in taken,
            "positional": False,
            "positional_mode": False,
        }
        return all(book.get(k, k in taken) for k in keywords)

    def require(self, *keywords: str) -> None:
        if not self.accepts(*keywords):
            pytest.skip(f"the row-convention target takes no keyword(s) for {', '.join(keywords)}")

    def target_keywords(
        self, N: int, *, mask: Any = None, causal: bool = False, bias: Any = None, **others: Any
    ) -> dict[str, Any]:
        """The book's keywords (N x N, mask[m, n]: key m visible to query n) as the target's, (1, 1, L, S)."""
        if others:
            raise TypeError(f"the row convention has no counterpart of the keyword(s) {', '.join(others)}")
        taken, result = self.keywords(), dict[str, Any]()
        if "dropout_p" in taken:
            result["dropout_p"] = 0.0
        if self.kind == "unscaled":
            result["scale"] = 1.0
        if causal:
            result["is_causal"] = True
        visible = None if mask is None else np.asarray(mask, dtype=bool).T.reshape(1, 1, N, N)
        added = None if bias is None else np.asarray(bias, dtype=np.float64).T.reshape(1, 1, N, N)
        if added is not None and "bias" in taken:
            result["bias"] = added
        elif added is not None:  # torch: a float attn_mask is added to the logits; hidden keys get -inf
            result["attn_mask"] = added if visible is None else np.where(visible, added, -np.inf)
            visible = None
        if visible is not None:
            result[self.mask_keyword() or "mask"] = visible
        return result

    def buckets(self) -> bool:
        """Whether calls are padded to bucketed shapes (`padded_to_buckets`): for jax targets, which compile once
        a shape, when they take a scale (for padded widths) and a boolean mask (to hide padded keys)."""
        return self.convention.array == "jax" and "scale" in self.keywords() and self.mask_keyword() is not None

    def run(self, query: Array, key: Array, value: Array, **keywords: Any) -> Batched:
        """Call the target on (B, H, L, E) float64 q, k, v (masks (B|1, H|1, L, S)), cast and laid out by the
        convention; return its output (and weights) in the same canonical layout. A jax target is called on the
        problem padded to bucketed shapes (`padded_to_buckets`), and the padding cut off its results."""
        padded = padded_to_buckets(query, key, value, keywords, self.mask_keyword()) if self.buckets() else None
        if padded is None:
            return self.run_exact(query, key, value, **keywords)
        L, S, E_v = query.shape[-2], key.shape[-2], value.shape[-1]
        result = self.run_exact(*padded.arrays, **padded.keywords)
        weights = None if result.weights is None else result.weights[..., :L, :S]
        return Batched(result.out[..., :L, :E_v], weights, result.eps, result.modified)

    def run_exact(self, query: Array, key: Array, value: Array, **keywords: Any) -> Batched:
        """`run` on these very shapes."""
        given = [self.convention.to_target(a) for a in (query, key, value)]
        names = ("query", "key", "value")
        before = [self.convention.from_target(a, name)[0] for a, name in zip(given, names, strict=True)]
        target_keywords = {
            name: self.convention.to_target(v, cast=False, laid_out=False) if isinstance(v, np.ndarray) else v
            for name, v in keywords.items()
        }
        for name in ("bias", "attn_mask"):  # a float mask or bias is added to the logits: give it the dtype
            mask = keywords.get(name)
            if isinstance(mask, np.ndarray) and mask.dtype != np.bool_:
                target_keywords[name] = self.convention.to_target(mask, laid_out=False)
        returned = call_target(self.name, self.function, self.convention.array, *given, **target_keywords)
        modified = tuple(
            name
            for name, a, b in zip(names, given, before, strict=True)
            if not np.array_equal(self.convention.from_target(a, name)[0], b, equal_nan=True)
        )
        weights = None
        if isinstance(returned, tuple | list):
            if len(returned) != 2:
                raise ImplementationFailed(
                    f"{self.name} returned {len(returned)} values; expected out or (out, weights)"
                )
            returned, raw = returned
            weights, _ = self.convention.from_target(raw, "the returned attention weights", laid_out=False)
            shape = (*query.shape[:-1], key.shape[-2])
            if weights.shape != shape:
                raise ImplementationFailed(
                    f"the returned attention weights have shape {weights.shape}; expected {shape}"
                )
        out, eps = self.convention.from_target(returned, "the output")
        shape = (*query.shape[:-1], value.shape[-1])
        if out.shape != shape:
            raise ImplementationFailed(f"the output has shape {out.shape}; expected {shape} (in layout BHLE)")
        return Batched(out, weights, max(eps, self.convention.eps), modified)

    def run_padded(self, query: Array, key: Array, value: Array, **keywords: Any) -> Batched:
        """`run` for targets that need values as wide as the keys (jax): q, k and v padded with zero columns to a
        common width W = max(E, E_v), the scale of width E passed explicitly (zero columns change no logit), and
        the output cut back to E_v columns. Needs the `scale` keyword."""
        E, E_v = key.shape[-1], value.shape[-1]
        W = max(E, E_v)

        def padded(a: Array) -> Array:
            return np.concatenate([a, np.zeros((*a.shape[:-1], W - a.shape[-1]))], axis=-1)

        keywords = {"scale": 1.0 / np.sqrt(E), **keywords}
        result = self.run(padded(query), padded(key), padded(value), **keywords)
        return Batched(result.out[..., :E_v], result.weights, result.eps, result.modified)

    def run_any_width(self, query: Array, key: Array, value: Array, **keywords: Any) -> Batched:
        """`run`, and when the target rejects values narrower or wider than the keys, `run_padded` if it can."""
        try:
            return self.run(query, key, value, **keywords)
        except ImplementationFailed:
            if value.shape[-1] == key.shape[-1] or "scale" not in self.keywords():
                raise
        return self.run_padded(query, key, value, **keywords)

    def recover_weights(self, query: Array, key: Array, **keywords: Any) -> tuple[Array | None, str]:
        """The attention weights (B, H, L, S) from a second call with value = I_S (then out = weights); None and
        the reason when the target rejects that call."""
        S = key.shape[-2]
        identity = np.broadcast_to(np.eye(S), (*key.shape[:-2], S, S))
        try:
            return self.run_any_width(query, key, identity, **keywords).out, ""
        except ImplementationFailed as error:
            return None, f"the attention matrix cannot be recovered: the target rejects identity values ({error})"

    def require_in_range(self, problem: AttentionProblem) -> None:
        """Reject (hypothesis) a problem whose q, k, v or logits exceed the dtype's range: no law is judged there."""
        if not fits_in_range(problem, self.convention.dtype):
            if currently_in_test_context():
                reject()
            raise ValueError(f"the problem's q, k, v or logits exceed the range of {self.convention.dtype}")

    def __call__(self, problem: AttentionProblem, **keywords: Any) -> Result:
        """One batch element and one head: q, k, v of `problem` as (1, 1, N, .) rows; X' and attentions back."""
        self.require_in_range(problem)
        target_keywords = self.target_keywords(problem.N, **keywords)
        q, k, v = (a.reshape(1, 1, *a.shape) for a in rows(problem))
        main = self.run_any_width(q, k, v, **target_keywords)
        X_prime = main.out[0, 0].T
        missing = ""
        if main.weights is not None:
            weights: Array | None = main.weights
        else:
            weights, missing = self.recover_weights(q, k, **target_keywords)
        return ConventionResult(
            X_prime,
            None if weights is None else np.asarray(weights[0, 0].T),
            main.modified,
            dtype_eps=main.eps,
            missing=missing or ConventionResult.missing,
        )


def sdpa_implementation(
    function: Callable[..., Any], name: str, convention: Convention, kind: str = "scaled"
) -> SdpaImplementation:
    """A row-convention target behind the wrapper (ValueError when its array library or dtype is missing)."""
    convention.check_available()
    return SdpaImplementation(function, kind, name, convention)  # type: ignore[arg-type]


# ------------------------------------------------------- the kernel in the row contract of a backward pass


def row_keywords(kernel: SdpaImplementation) -> tuple[str, ...]:
    """The row contract's keywords the kernel can honour: attn_mask through its mask keyword, is_causal and
    scale by name, enable_gqa through its grouped heads (a keyword, or none for jax)."""
    taken = kernel.keywords()
    can = {
        "attn_mask": kernel.mask_keyword() is not None,
        "is_causal": "is_causal" in taken,
        "scale": "scale" in taken,
        "enable_gqa": kernel.grouped_heads() is not None,
    }
    return tuple(name for name in ROW_KEYWORDS if can[name])


def pad_last(array: Any, width: int, library: str) -> Any:
    """`array` with zero columns appended to its last axis up to `width`, in its own library."""
    missing = width - array.shape[-1]
    if missing == 0:
        return array
    if library == "torch":
        import torch

        return torch.nn.functional.pad(array, (0, missing))
    if library == "jax":
        import jax.numpy as jnp

        return jnp.pad(array, [(0, 0)] * (array.ndim - 1) + [(0, missing)])
    return np.pad(array, [(0, 0)] * (array.ndim - 1) + [(0, missing)])


def with_signature(function: Callable[..., Any], names: tuple[str, ...], extra: tuple[str, ...] = ()) -> None:
    """Give `function` the signature (*extra, query, key, value, [d_out], **only `names`) so that the wrappers
    see which keywords it takes."""
    positional = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ("query", "key", "value",
                                                                                          *extra)]  # fmt: skip
    defaults = {"attn_mask": None, "is_causal": False, "scale": None, "enable_gqa": False}
    keywords = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=defaults[n]) for n in names]
    function.__signature__ = inspect.Signature(positional + keywords)  # type: ignore[attr-defined]


def row_forward(kernel: SdpaImplementation) -> Callable[..., Any]:
    """forward(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False) -> out: the
    kernel on its library's arrays (laid out and cast by its convention), with the row contract's keywords."""
    names = row_keywords(kernel)
    library = kernel.convention.array

    def forward(query: Any, key: Any, value: Any, **keywords: Any) -> Any:
        given: dict[str, Any] = {}
        if "dropout_p" in kernel.keywords():
            given["dropout_p"] = 0.0
        scale = keywords.get("scale")
        if scale is None and kernel.kind == "unscaled":
            scale = 1.0
        if keywords.get("attn_mask") is not None:
            mask = keywords["attn_mask"]
            given[kernel.mask_keyword() or "attn_mask"] = mask.reshape(1, 1, *mask.shape[-2:])
        if keywords.get("is_causal"):
            given["is_causal"] = True
        if keywords.get("enable_gqa"):
            given.update(kernel.grouped_heads() or {})
        scaled = {} if scale is None else {"scale": scale}

        def call(q: Any, k: Any, v: Any, **more: Any) -> Any:
            returned = kernel.function(q, k, v, **given, **more)
            return returned[0] if isinstance(returned, tuple | list) else returned

        E, E_v = key.shape[-1], value.shape[-1]
        if E_v == E or "scale" not in kernel.keywords():
            return call(query, key, value, **scaled)
        try:  # a target that takes values of another width
            return call(query, key, value, **scaled)
        except Exception:  # jax: values as wide as the keys; zero columns change no logit
            W = max(E, E_v)
            s = 1.0 / float(np.sqrt(E)) if scale is None else scale
            return call(*(pad_last(a, W, library) for a in (query, key, value)), scale=s)[..., :E_v]

    with_signature(forward, names)
    forward.__name__ = forward.__qualname__ = f"rows_of_{getattr(kernel.function, '__name__', 'kernel')}"
    return forward
