"""FlashAttention's convention (--convention flash): kernels called as flash_attn_func(q, k, v, dropout_p,
softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic, return_attn_probs, *, sinks) with q
(batch, L, heads, D), k (batch, S, heads_k, D), v (batch, S, heads_k, D_v), and L != S allowed (cross-attention,
decoding with a cache).

An adapter, as row_convention.py is for torch's SDPA: `FlashImplementation` holds the target and calls it on a drawn
`FlashProblem` (q, k, v as float64 rows, cast to the convention's dtype), passing only the options it is asked
for; an option the target does not name in its signature is a SKIP of the law (`require`), never a FAIL. The same
class also wraps a row-convention (sdpa) kernel, whose `is_causal` and `scale` are FlashAttention's `causal` and
`softmax_scale`, so that the rectangular laws (L != S) check those kernels too.

Law-side, in float64: `visibility` (which keys each query sees under causal and windows, for a declared causal
alignment), `exact_attention` (the definition with an explicit bias, soft-capping and sinks, through exact.py's
softmax_with_lse, the one law-side softmax) and `row_bounds`
(the forward-error model of properties/helpers/tolerances.py in rows).

Causal alignment: query n (0 <= n < L) and key m (0 <= m < S) are at distance rel = n + offset - m with offset
S - L (bottom-right: the queries are the last L positions of the key sequence, FlashAttention >= 2.1 and decoding
with a cache) or 0 (top-left: torch's is_causal). Causal keeps rel >= 0; a window (left, right) keeps
-right <= rel <= left, -1 leaving a side unbounded; causal is the window (-1, 0).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from properties.helpers.exact import softmax_with_lse
from properties.helpers.implementations import ImplementationFailed, call_function
from properties.helpers.options import ALIGNMENTS
from properties.helpers.problems import code_for
from properties.helpers.row_convention import Convention, SdpaImplementation
from properties.helpers.tolerances import FLOAT64_EPS, PRECISIONS, normalisation_error, tiny_of

Array = NDArray[np.float64]
# flash_attn_func's options, by the names its signature gives them.
FLASH_OPTIONS = ("softmax_scale", "causal", "window_size", "softcap", "alibi_slopes", "sinks", "return_attn_probs")
# The sdpa keywords that stand for FlashAttention's options.
SDPA_NAMES = {"softmax_scale": "scale", "causal": "is_causal"}
# Each source's causal alignment when the user declares none.
DEFAULT_ALIGNMENT = {"flash": "bottom-right", "sdpa": "top-left"}


@dataclass(frozen=True, repr=False, eq=False)
class FlashProblem:
    """q (B, L, H, D), k (B, S, H_k, D), v (B, S, H_k, D_v) in float64, read-only; H is a multiple of H_k."""

    q: Array
    k: Array
    v: Array

    def __post_init__(self) -> None:
        for name in ("q", "k", "v"):
            array = np.array(getattr(self, name), dtype=np.float64)
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        B, _, H, D = self.q.shape
        if self.k.shape[0] != B or self.k.shape[3] != D or self.v.shape[:3] != self.k.shape[:3]:
            raise ValueError(f"q, k, v disagree: shapes {self.q.shape}, {self.k.shape}, {self.v.shape}")
        if H % self.k.shape[2]:
            raise ValueError(f"heads {H} is not a multiple of heads_k {self.k.shape[2]}")

    @property
    def B(self) -> int:
        return int(self.q.shape[0])

    @property
    def L(self) -> int:
        return int(self.q.shape[1])

    @property
    def S(self) -> int:
        return int(self.k.shape[1])

    @property
    def H(self) -> int:
        return int(self.q.shape[2])

    @property
    def D(self) -> int:
        return int(self.q.shape[3])

    @property
    def D_v(self) -> int:
        return int(self.v.shape[3])

    @property
    def group(self) -> int:
        return self.H // int(self.k.shape[2])

    def replace(self, **arrays: Array) -> FlashProblem:
        return FlashProblem(**{"q": self.q, "k": self.k, "v": self.v, **arrays})

    def with_key_order(self, p: NDArray[np.intp]) -> FlashProblem:
        """The same key/value set in the order p: rows k[:, p] and v[:, p] (one permutation for both)."""
        return self.replace(k=self.k[:, p], v=self.v[:, p])

    def with_query_order(self, p: NDArray[np.intp]) -> FlashProblem:
        return self.replace(q=self.q[:, p])

    def keys(self, start: int, stop: int) -> FlashProblem:
        """The problem restricted to keys start, ..., stop - 1."""
        return self.replace(k=self.k[:, start:stop], v=self.v[:, start:stop])

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def __repr__(self) -> str:
        shapes = f"B={self.B}, L={self.L}, S={self.S}, H={self.H}, H_k={self.H // self.group}, D={self.D}"
        body = ",\n".join(f"    {name}={code_for(getattr(self, name))}" for name in ("q", "k", "v"))
        return f"FlashProblem(  # {shapes}, D_v={self.D_v}\n{body},\n)"


def visibility(
    L: int, S: int, *, causal: bool = False, window: tuple[int, int] = (-1, -1), alignment: str = "bottom-right"
) -> NDArray[np.bool_]:
    """[n, m] True iff query n sees key m (module docstring): rel = n + offset - m within [-right, left]."""
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}; got {alignment!r}")
    offset = S - L if alignment == "bottom-right" else 0
    rel = np.arange(L)[:, None] + offset - np.arange(S)[None, :]
    left, right = window
    right = 0 if causal else right
    seen = np.ones((L, S), dtype=bool)
    if right >= 0:
        seen &= rel >= -right
    if left >= 0:
        seen &= rel <= left
    return seen


def flash_attention_2_window(left: int, right: int, causal: bool, limit: int) -> tuple[int, int, bool]:
    """The window FlashAttention 2's kernel applies for window_size=(left, right) and `causal`, from its host code
    (flash_api.cpp, mha_fwd and set_params_fprop): a side >= limit becomes -1; causal sets right = 0; then a left of
    -1 with right >= 0 becomes `limit` and a right of -1 with left >= 0 becomes `limit` (finite). `limit` is
    seqlen_k (max_seqlen_k for the packed API). Returns (left, right, causal_form): causal_form is the kernel's
    is_causal, the window (-1, 0) before those substitutions, under which ALiBi is added as +slope * j."""
    left, right = (-1 if side >= limit else side for side in (left, right))
    if causal:
        right = 0
    causal_form = left < 0 and right == 0
    if left < 0 <= right:
        left = limit
    if right < 0 <= left:
        right = limit
    return left, right, causal_form


def window_readings(
    L: int, S: int, window: tuple[int, int], *, causal: bool = False, alignment: str = "bottom-right",
    limit: int | None = None,
) -> list[NDArray[np.bool_]]:  # fmt: skip
    """The visibilities a correct kernel may give window_size=`window` (and `causal`): the definition (a side of -1
    unbounded) and, when it differs, FlashAttention 2's reading (flash_attention_2_window with `limit`, S by
    default), whose finite right side `limit` hides keys only when L > limit + 1 (FLASH-CONVENTIONS.md, (d))."""
    readings = [visibility(L, S, causal=causal, window=window, alignment=alignment)]
    left, right, _ = flash_attention_2_window(*window, causal, S if limit is None else limit)
    second = visibility(L, S, window=(left, right), alignment=alignment)
    if not np.array_equal(second, readings[0]):
        readings.append(second)
    return readings


def sees_a_key_under_every(visibilities: Sequence[NDArray[np.bool_]]) -> NDArray[np.bool_]:
    """[n] True iff query n sees a key under every one of the visibilities (L, S): the queries whose rows the laws
    judge (what a query that sees no key gets is a convention)."""
    return np.asarray(np.logical_and.reduce([seen.any(axis=-1) for seen in visibilities]))


def judged(actual: Array, expected: Array, *visibilities: NDArray[np.bool_]) -> Array:
    """`actual` (..., L, H, D_v) with the rows of the queries that see no key under some of the visibilities (L, S)
    taken from `expected`: what such a query gets is a convention (FlashAttention's 0, jax's mean of all values),
    judged by the conventions law test_a_query_that_sees_no_key_gets_a_zero_output, not by a law on outputs."""
    blind = ~sees_a_key_under_every(visibilities)
    return np.asarray(np.where(blind[:, None, None], expected, actual))


def closest(actual: Array, candidates: list[Array], bound: Array, *, axis: int | None = -1) -> Array:
    """Per row of `actual` (reduced over `axis`, None: entry by entry), the candidate nearest it measured by
    `bound`: the expected value of a law that accepts any of `candidates` row by row (a convention), to hand to
    assert_close, which then reports the worst row against its nearest reading."""
    if len(candidates) == 1:
        return candidates[0]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ratios = []
        for candidate in candidates:
            ratio = np.abs(np.nan_to_num(actual - candidate, nan=np.inf)) / np.maximum(bound, np.finfo(float).tiny)
            ratios.append(ratio if axis is None else ratio.max(axis=axis, initial=0.0))
    best = np.argmin(np.stack(ratios), axis=0)
    if axis is not None:
        best = np.expand_dims(best, axis)
    return np.asarray(np.choose(np.broadcast_to(best, actual.shape), candidates), dtype=np.float64)


def distances(L: int, S: int, alignment: str = "bottom-right") -> Array:
    """|rel(n, m)|, shape (L, S): the distance ALiBi charges."""
    offset = S - L if alignment == "bottom-right" else 0
    result: Array = np.abs(np.arange(L)[:, None] + offset - np.arange(S)[None, :]).astype(np.float64)
    return result


def heads_first(problem: FlashProblem) -> tuple[Array, Array, Array]:
    """q (B, H, L, D), k (B, H, S, D), v (B, H, S, D_v): grouped key/value heads repeated for their query heads."""
    q = np.swapaxes(problem.q, 1, 2)
    k = np.repeat(np.swapaxes(problem.k, 1, 2), problem.group, axis=1)
    v = np.repeat(np.swapaxes(problem.v, 1, 2), problem.group, axis=1)
    return q, k, v


def logits(problem: FlashProblem, scale: float, softcap: float = 0.0) -> Array:
    """scale q k^T, soft-capped to softcap tanh(. / softcap) when softcap > 0, shape (B, H, L, S), in float64."""
    q, k, _ = heads_first(problem)
    s = scale * (q @ np.swapaxes(k, -1, -2))
    capped: Array = np.asarray(softcap * np.tanh(s / softcap)) if softcap > 0 else np.asarray(s, dtype=np.float64)
    return capped


def exact_attention(
    problem: FlashProblem,
    scale: float,
    *,
    visible: NDArray[np.bool_] | None = None,
    bias: Array | None = None,
    softcap: float = 0.0,
    sinks: Array | None = None,
) -> tuple[Array, Array]:
    """The definition in float64: out (B, L, H, D_v) and lse (B, H, L) of softmax over the visible keys of
    logits(problem, scale, softcap) + bias (broadcast to (B, H, L, S)), with one extra logit sinks[h] per head in
    every denominator and no value. A query that sees nothing gets out = 0 and lse = -inf (or the sink)."""
    _, _, v = heads_first(problem)
    s = logits(problem, scale, softcap) + (0.0 if bias is None else bias)
    shown = np.ones((problem.L, problem.S), dtype=bool) if visible is None else visible
    sink = None if sinks is None else np.broadcast_to(np.asarray(sinks, dtype=np.float64)[None, :, None], s.shape[:3])
    probs, lse = softmax_with_lse(s, np.broadcast_to(shown, s.shape), axis=-1, sink=sink)
    return np.swapaxes(probs @ v, 1, 2), lse


def prefix_step(problem: FlashProblem, n: int, alignment: str) -> tuple[FlashProblem, int] | None:
    """Query n's causal view as a smaller problem and the row of query n in it: bottom-right, one query (a decoding
    step) against the p = n + S - L + 1 keys it sees; top-left, the first n + 1 queries against the first n + 1
    keys (L = S, where both alignments agree), query n last. None when query n sees no key."""
    if alignment == "bottom-right":
        p = min(n + problem.S - problem.L + 1, problem.S)
        if p < 1:
            return None
        return problem.replace(q=problem.q[:, n : n + 1], k=problem.k[:, :p], v=problem.v[:, :p]), 0
    if n + 1 > problem.S:
        return None
    return problem.replace(q=problem.q[:, : n + 1], k=problem.k[:, : n + 1], v=problem.v[:, : n + 1]), n


# ----------------------------------------------------------------------------------------------------------------
# The error model in rows (properties/helpers/tolerances.py, sections 1-5, with q, k, v given directly).


@dataclass(frozen=True)
class RowBounds:
    """Bounds on |out - exact| (B, L, H, D_v) and |lse - exact| (B, H, L) of one evaluation."""

    out: Array
    lse: Array

    def __add__(self, other: RowBounds) -> RowBounds:
        return RowBounds(self.out + other.out, self.lse + other.lse)

    def __mul__(self, factor: float) -> RowBounds:
        return RowBounds(self.out * factor, self.lse * factor)


def row_bounds(
    problem: FlashProblem, scale: float, eps: float, *, offset: float = 0.0, sinks: Array | None = None
) -> RowBounds:
    """The forward-error bounds of one evaluation of attention on `problem` in the dtype of epsilon `eps`.

    With l_n = |scale| max_m |q_n| . |k_m| + offset (a bias of magnitude at most `offset`: ALiBi's slope times the
    longest distance; |softcap tanh(s / softcap)| <= |s| keeps l_n a bound under soft-capping) and, with sinks,
    max(l_n, |sink|): every logit is off by at most k_L u l_n with k_L = D + 10 (2 conversions, D in the dot
    product, the scale, 3 for the cap's division, tanh and product, 2 for a bias's product and sum, 1 spare), the
    weights by r_n = 2 k u l_n + eta(S', l_n) + S' tiny (S' = S keys, plus one with a sink), the outputs by
    v_d (r_n + k u) + k tiny with k = k_L + S' + 3 and v_d = max_m |v_md| (sections 1-5), and lse = c + log(sum)
    by k u l_n + eta(S', l_n) + tiny (the logit error, the sum's relative error, the log's rounding)."""
    q, k, v = heads_first(problem)
    keys = problem.S + (0 if sinks is None else 1)
    if problem.S:
        bound_l = abs(scale) * (np.abs(q) @ np.swapaxes(np.abs(k), -1, -2)).max(axis=-1) + offset  # (B, H, L)
        v_d = np.abs(v).max(axis=-2)  # (B, H, D_v)
    else:
        bound_l = np.zeros((problem.B, problem.H, problem.L))
        v_d = np.zeros((problem.B, problem.H, problem.D_v))
    if sinks is not None:
        bound_l = np.maximum(bound_l, np.abs(np.asarray(sinks, dtype=np.float64))[None, :, None])
    steps = problem.D + 10 + keys + 3
    tiny = tiny_of(eps)
    eta = normalisation_error(keys, eps, bound_l)
    r = 2 * steps * eps * bound_l + eta + keys * tiny  # (B, H, L)
    out = v_d[:, :, None, :] * (r[..., None] + steps * eps) + steps * tiny  # (B, H, L, D_v)
    lse = steps * eps * bound_l + eta + tiny
    return RowBounds(np.swapaxes(out, 1, 2), lse)


# ----------------------------------------------------------------------------------------------------------------
# The target.


@dataclass(frozen=True)
class FlashResult:
    """What one call returned, in float64: out (B, L, H, D_v), softmax_lse (B, H, L) when asked for, attn_probs
    (B, H, L, S) when the target returned them (no law judges them: FlashAttention returns meaningless ones with
    dropout_p = 0), the epsilon to judge out by and the one to judge softmax_lse by (the coarser of out's and the
    lse's own dtype: FlashAttention's lse is float32 whatever the inputs)."""

    out: Array
    lse: Array | None
    probs: Array | None
    eps: float
    lse_eps: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "lse_eps", max(self.eps, self.lse_eps))


@dataclass(frozen=True, repr=False)
class FlashImplementation:
    """A kernel checked on rectangular problems: flash_attn_func's signature (source "flash") or a row-convention
    kernel f(query, key, value, ..., is_causal=, scale=) (source "sdpa", through its SdpaImplementation)."""

    function: Callable[..., Any]
    name: str
    convention: Convention = field(default_factory=lambda: Convention(layout="BLHE"))
    alignment: str = "bottom-right"
    source: str = "flash"
    sdpa: SdpaImplementation | None = None

    def __post_init__(self) -> None:
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}; got {self.alignment!r}")
        if self.source == "sdpa" and self.sdpa is None:
            object.__setattr__(self, "sdpa", SdpaImplementation(self.function, "scaled", self.name, self.convention))

    def __repr__(self) -> str:
        return (f"FlashImplementation(load_function({self.name!r}), {self.name!r}, {self.convention!r}, "
                f"{self.alignment!r}, {self.source!r})")  # fmt: skip

    @property
    def eps(self) -> float:
        return PRECISIONS[self.convention.dtype][0]

    def parameters(self) -> frozenset[str]:
        try:
            return frozenset(inspect.signature(self.function).parameters)
        except (TypeError, ValueError):
            return frozenset()

    def takes(self, *options: str) -> bool:
        """Whether the target names these options (FlashAttention's names) in its signature."""
        if self.source == "sdpa":
            assert self.sdpa is not None
            taken = self.sdpa.keywords()
            return all(option in SDPA_NAMES and SDPA_NAMES[option] in taken for option in options)
        names = self.parameters()
        return all(option in names for option in options)

    def require(self, *options: str) -> None:
        """Skip the law unless the target takes every option (a SKIP, never a FAIL)."""
        missing = [option for option in options if not self.takes(option)]
        if missing:
            pytest.skip(f"the target takes no {', '.join(missing)} (by its signature): the law does not apply")

    def default_scale(self, problem: FlashProblem) -> float:
        return 1.0 / float(np.sqrt(problem.D))

    def call(self, problem: FlashProblem, *, lse: bool = False, **options: Any) -> FlashResult:
        """The target on q, k, v of `problem` with `options` (FlashAttention's names); with lse=True it is asked
        for return_attn_probs=True and must return (out, softmax_lse, ...)."""
        self.require(*options, *(("return_attn_probs",) if lse else ()))
        if self.source == "sdpa":
            return self._call_sdpa(problem, **options)
        c = self.convention
        given = [c.to_target(np.swapaxes(a, 1, 2)) for a in (problem.q, problem.k, problem.v)]
        keywords = {
            name: c.to_target(value, cast=False, laid_out=False) if isinstance(value, np.ndarray) else value
            for name, value in options.items()
        }
        if lse:
            keywords["return_attn_probs"] = True
        returned = call_function(self.name, self.function, *given, **keywords)
        probs = lse_array = None
        lse_eps = 0.0
        if lse:
            if not isinstance(returned, tuple | list) or len(returned) < 2:
                raise ImplementationFailed(
                    f"{self.name} with return_attn_probs=True returned {type(returned).__name__}; expected "
                    f"(out, softmax_lse, ...)"
                )
            lse_array, lse_eps = c.from_target(returned[1], "softmax_lse", laid_out=False)
            if lse_array.shape != (problem.B, problem.H, problem.L):
                raise ImplementationFailed(
                    f"softmax_lse has shape {lse_array.shape}; expected (batch, nheads, L) = "
                    f"{(problem.B, problem.H, problem.L)}"
                )
            if len(returned) > 2:
                raw, _ = c.from_target(returned[2], "attn_probs", laid_out=False)
                probs = raw if raw.shape == (problem.B, problem.H, problem.L, problem.S) else None
            returned = returned[0]
        elif isinstance(returned, tuple | list):
            returned = returned[0]
        out, eps = c.from_target(returned, "the output")
        out = np.swapaxes(out, 1, 2)  # from_target undid the layout: back to (B, L, H, D_v)
        shape = (problem.B, problem.L, problem.H, problem.D_v)
        if out.shape != shape:
            raise ImplementationFailed(f"the output has shape {out.shape}; expected (batch, L, nheads, D_v) = {shape}")
        return FlashResult(out, lse_array, probs, max(eps, self.eps), lse_eps)

    def _call_sdpa(self, problem: FlashProblem, **options: Any) -> FlashResult:
        assert self.sdpa is not None
        keywords = {SDPA_NAMES[name]: value for name, value in options.items()}
        if "dropout_p" in self.sdpa.keywords():
            keywords["dropout_p"] = 0.0
        k, v = (np.swapaxes(a, 1, 2) for a in (problem.k, problem.v))
        if problem.group > 1:
            grouped = self.sdpa.grouped_heads()
            if grouped is None:
                pytest.skip("the target takes no grouped key/value heads (no enable_gqa keyword, none documented)")
            keywords.update(grouped)
        result = self.sdpa.run_any_width(np.swapaxes(problem.q, 1, 2), k, v, **keywords)
        return FlashResult(np.swapaxes(result.out, 1, 2), None, result.weights, result.eps)

    def bounds(self, problem: FlashProblem, scale: float, eps: float, **extra: Any) -> RowBounds:
        """One evaluation by the target (epsilon `eps`) plus the law's own float64 one."""
        return row_bounds(problem, scale, eps, **extra) + row_bounds(problem, scale, FLOAT64_EPS, **extra)


def flash_implementation(
    function: Callable[..., Any], name: str, convention: Convention, alignment: str | None = None, source: str = "flash"
) -> FlashImplementation:
    """A target of the rectangular laws (ValueError when its array library or dtype is missing)."""
    convention.check_available()
    return FlashImplementation(function, name, convention, alignment or DEFAULT_ALIGNMENT[source], source)


def sdpa_shim(flash: FlashImplementation) -> Callable[..., Any]:
    """The flash target as a row-convention kernel f(query, key, value, is_causal=False, scale=None,
    enable_gqa=False) on (B, L, H, E) rows (layout BLHE), so that every law of the battery reaches it through the
    sdpa adapter. With L = S (the only shape those laws draw) both causal alignments agree. Grouped heads are
    FlashAttention's own (nheads_k < nheads), so enable_gqa is accepted and changes nothing."""
    takes_causal, takes_scale = flash.takes("causal"), flash.takes("softmax_scale")

    def kernel(query: Any, key: Any, value: Any, is_causal: bool = False, scale: float | None = None,
               enable_gqa: bool = False) -> Any:  # fmt: skip
        keywords: dict[str, Any] = {}
        if is_causal:
            keywords["causal"] = True
        if scale is not None:
            keywords["softmax_scale"] = scale
        return flash.function(query, key, value, **keywords)

    names = ["query", "key", "value", *(["is_causal"] if takes_causal else []), *(["scale"] if takes_scale else []),
             "enable_gqa"]  # fmt: skip
    full = inspect.signature(kernel)
    kernel.__signature__ = full.replace(  # type: ignore[attr-defined]
        parameters=[full.parameters[name] for name in names]
    )
    kernel.__name__ = kernel.__qualname__ = getattr(flash.function, "__name__", "flash_kernel")
    return kernel


@dataclass(frozen=True, repr=False)
class VarlenImplementation:
    """A packed-batch kernel with flash_attn_varlen_func's signature: f(q, k, v, cu_seqlens_q, cu_seqlens_k,
    max_seqlen_q, max_seqlen_k, ...) on q (total_q, H, D), k (total_k, H_k, D), v (total_k, H_k, D_v), numpy
    float64 (the packing is what these laws check, not the dtype)."""

    function: Callable[..., Any]
    name: str

    def __repr__(self) -> str:
        return f"VarlenImplementation(load_function({self.name!r}), {self.name!r})"

    def takes(self, *options: str) -> bool:
        """Whether the target names these options (flash_attn_varlen_func's names) in its signature."""
        try:
            names = inspect.signature(self.function).parameters
        except (TypeError, ValueError):
            return False
        return all(option in names for option in options)

    def call(self, q: Array, k: Array, v: Array, **keywords: Any) -> Array:
        returned = call_function(self.name, self.function, q.copy(), k.copy(), v.copy(), **keywords)
        return self._output(returned[0] if isinstance(returned, tuple | list) else returned, q, v)

    @staticmethod
    def _output(returned: Any, q: Array, v: Array) -> Array:
        out = np.asarray(returned, dtype=np.float64)
        shape = (q.shape[0], q.shape[1], v.shape[-1])
        if out.shape != shape:
            raise ImplementationFailed(f"the output has shape {out.shape}; expected (total_q, nheads, D_v) = {shape}")
        return out

    def call_with_lse(self, q: Array, k: Array, v: Array, **keywords: Any) -> tuple[Array, list[Array], float]:
        """The target with return_attn_probs=True: out (total_q, H, D_v), each sequence b's softmax_lse (H, L_b) and
        the epsilon to judge it by (the coarser of float64's and the lse's own dtype: FlashAttention's is float32).
        softmax_lse may come as (nheads, total_q), FlashAttention 2's layout, or padded by sequence as (batch,
        nheads, max_seqlen_q), its earlier releases' (entries beyond L_b are not read): a layout, not a law."""
        returned = call_function(self.name, self.function, q.copy(), k.copy(), v.copy(), return_attn_probs=True,
                                 **keywords)  # fmt: skip
        if not isinstance(returned, tuple | list) or len(returned) < 2:
            raise ImplementationFailed(
                f"{self.name} returned {type(returned).__name__} with return_attn_probs=True; expected (out, "
                "softmax_lse, ...)"
            )
        out = self._output(returned[0], q, v)
        raw = np.asarray(returned[1])
        lse = raw.astype(np.float64)
        cu_q = np.asarray(keywords["cu_seqlens_q"], dtype=np.int64)
        batch, H, total_q, longest = len(cu_q) - 1, q.shape[1], q.shape[0], int(keywords["max_seqlen_q"])
        if lse.shape == (H, total_q):
            parts = [lse[:, cu_q[b] : cu_q[b + 1]] for b in range(batch)]
        elif lse.shape == (batch, H, longest):
            parts = [lse[b, :, : cu_q[b + 1] - cu_q[b]] for b in range(batch)]
        else:
            raise ImplementationFailed(
                f"softmax_lse has shape {lse.shape}; expected (nheads, total_q) = {(H, total_q)} or (batch, nheads, "
                f"max_seqlen_q) = {(batch, H, longest)}"
            )
        eps = float(np.finfo(raw.dtype).eps) if np.issubdtype(raw.dtype, np.floating) else FLOAT64_EPS
        return out, parts, max(eps, FLOAT64_EPS)


@dataclass(frozen=True, repr=False)
class MergeImplementation:
    """A log-sum-exp merge f(out_a, lse_a, out_b, lse_b) -> (out, lse) of attention over two disjoint key sets,
    out (B, L, H, D_v) and lse (B, H, L) as FlashAttention's, float64 numpy."""

    function: Callable[..., Any]
    name: str

    def __repr__(self) -> str:
        return f"MergeImplementation(load_function({self.name!r}), {self.name!r})"

    def call(self, out_a: Array, lse_a: Array, out_b: Array, lse_b: Array) -> tuple[Array, Array]:
        returned = call_function(self.name, self.function, out_a.copy(), lse_a.copy(), out_b.copy(), lse_b.copy())
        if not isinstance(returned, tuple | list) or len(returned) != 2:
            raise ImplementationFailed(f"{self.name} returned {type(returned).__name__}; expected (out, lse)")
        out, lse = (np.asarray(a, dtype=np.float64) for a in returned)
        if out.shape != out_a.shape or lse.shape != lse_a.shape:
            raise ImplementationFailed(
                f"the merge returned shapes {out.shape}, {lse.shape}; expected {out_a.shape}, {lse_a.shape}"
            )
        return out, lse
