"""The backward pass under test: its problems, its wrappers (one per calling convention) and its error model.

A backward pass is checked in the row convention whatever it is written in, so that every gradient law keeps one
meaning: dq, dk, dv of <d_out, out> with out = attention(query, key, value) on (B, H, N, E) rows.

Contracts (docs/backward.md):
- rows (`RowBackward`): backward(query, key, value, d_out, attn_mask=None, dropout_p=0.0, is_causal=False,
  scale=None, enable_gqa=False) -> (d_query, d_key, d_value), each of its input's shape; the keywords are the
  forward's (attention.rows_backward.scaled_dot_product_attention_backward is the reference).
- the notebook (`NotebookBackward`): backward(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, d_X_prime,
  **keywords) -> the cotangents of X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, as a NamedTuple or an
  object with those attributes, a mapping with those keys, or a sequence in that order (more items are
  ignored); the keywords are the forward's mask= and causal= (attention.scaled_dot_product_self_attention_vjp is
  the reference). It is read in rows by one exact change of variables: with X = I_N, omega_q = q^T,
  omega_k = k^T, omega_v = v^T and zero biases, Q = q^T, K = k^T, V = v^T, so d omega_q = dQ X^T = dq^T (likewise
  k, v), one batch element and head at a time.

The wrapper calls the function on fresh writable copies, reports which inputs it changed, turns exceptions into
ImplementationFailed and checks the shapes of what comes back. It also calls the forward the backward
differentiates (the implementation or kernel under test), for the law on directional derivatives.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pytest
from numpy.typing import NDArray

from properties.helpers.implementations import (
    FunctionUnderTest,
    ImplementationFailed,
    as_result_array,
    call_function,
)
from properties.helpers.options import Kind
from properties.helpers.problems import code_for
from properties.helpers.row_convention import ROW_KEYWORDS, Convention, row_forward, row_keywords, sdpa_implementation
from properties.helpers.tolerances import FLOAT64_EPS, epsilon_of

Array = NDArray[np.float64]
Mask = NDArray[np.bool_]
COTANGENT_NAMES = ("X", "omega_v", "omega_q", "omega_k", "beta_v", "beta_q", "beta_k")


@dataclass(frozen=True, repr=False, eq=False)
class GradientProblem:
    """query (B, H, N, E), key (B, H_kv, N, E), value (B, H_kv, N, E_v), the output cotangent d_out (B, H, N, E_v)
    and the forward's keywords: a boolean attn_mask (N, N) ([l, s] True: query l sees key s), is_causal, scale
    (None: the kind's default) and enable_gqa (H_kv < H: query head h reads key/value head h // (H / H_kv)).
    d_weights (B, H, N, N), when given, is the cotangent of the weights P[l, s] (the notebook's attentions[s, l]):
    the gradients are then those of <d_out, out> + <d_weights, P>, which only the notebook contract can take
    (its d_attentions keyword); bias (N, N), when given, is added to every slot's logits ([l, s], the notebook's
    bias[s, l]), which also only the notebook contract takes. Queries and keys are the same N tokens
    (self-attention), so every convention can be checked."""

    query: Array
    key: Array
    value: Array
    d_out: Array
    attn_mask: Mask | None = None
    is_causal: bool = False
    scale: float | None = None
    enable_gqa: bool = False
    d_weights: Array | None = None
    bias: Array | None = None

    def __post_init__(self) -> None:
        for name in ("query", "key", "value", "d_out", "d_weights", "bias"):
            if getattr(self, name) is None:
                continue
            array = np.array(getattr(self, name), dtype=np.float64)
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        if self.attn_mask is not None:
            mask = np.array(self.attn_mask, dtype=bool)
            mask.setflags(write=False)
            object.__setattr__(self, "attn_mask", mask)

    @property
    def N(self) -> int:
        return int(self.query.shape[-2])

    @property
    def E(self) -> int:
        return int(self.query.shape[-1])

    @property
    def group(self) -> int:
        """Query heads per key/value head."""
        return int(self.query.shape[1] // self.key.shape[1])

    def keywords(self) -> dict[str, Any]:
        """The forward's keywords that differ from their defaults."""
        given: dict[str, Any] = {}
        if self.attn_mask is not None:
            given["attn_mask"] = self.attn_mask.copy()
        if self.is_causal:
            given["is_causal"] = True
        if self.scale is not None:
            given["scale"] = self.scale
        if self.enable_gqa:
            given["enable_gqa"] = True
        return given

    def visible(self) -> Mask:
        """[l, s]: whether query l sees key s."""
        seen = np.ones((self.N, self.N), dtype=bool) if self.attn_mask is None else self.attn_mask.copy()
        return seen & np.tri(self.N, dtype=bool) if self.is_causal else seen

    def replace(self, **changes: Any) -> GradientProblem:
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        fields = [f"{name}={code_for(getattr(self, name))}" for name in ("query", "key", "value", "d_out")]
        if self.attn_mask is not None:
            fields.append(f"attn_mask={code_for(self.attn_mask)}")
        fields += [f"is_causal={self.is_causal!r}", f"scale={self.scale!r}", f"enable_gqa={self.enable_gqa!r}"]
        for name in ("d_weights", "bias"):
            if getattr(self, name) is not None:
                fields.append(f"{name}={code_for(getattr(self, name))}")
        shape = "x".join(map(str, self.query.shape))
        return "GradientProblem(  # query " + shape + "\n    " + ",\n    ".join(fields) + ",\n)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


class Gradients(NamedTuple):
    """What one backward call returned, in float (its own dtype), and the inputs it changed in place."""

    d_query: NDArray[np.floating]
    d_key: NDArray[np.floating]
    d_value: NDArray[np.floating]
    modified: tuple[str, ...] = ()
    dtype_eps: float = FLOAT64_EPS  # the epsilon of the dtype they were computed in (a convention's dtype)

    @property
    def eps(self) -> float:
        return max(self.dtype_eps, epsilon_of(self.d_query.dtype, self.d_key.dtype, self.d_value.dtype))

    def as_float64(self) -> tuple[Array, Array, Array]:
        return tuple(np.asarray(g, dtype=np.float64) for g in self[:3])  # type: ignore[return-value]


class Output(NamedTuple):
    """What one forward call returned, as float64 rows (B, H, N, E_v), the epsilon of its dtype, and its weights
    P (B, H, N, N) when it returns them (the notebook's attentions, transposed), else None."""

    out: Array
    eps: float
    weights: Array | None = None


@dataclass(frozen=True, repr=False)
class Backward(FunctionUnderTest):
    """A backward pass and the forward it differentiates (TARGETs both), of the given kind of attention."""

    forward: Callable[..., Any]
    forward_target: str
    kind: Kind = "scaled"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(load_function({self.target!r}), {self.target!r}, "
            f"load_function({self.forward_target!r}), {self.forward_target!r}, {self.kind!r})"
        )

    def scale(self, E: int, scale: float | None = None) -> float:
        """The logit scale of a problem of width E: `scale` if given, else 1/sqrt(E) (scaled) or 1 (unscaled)."""
        if scale is not None:
            return float(scale)
        return 1.0 / float(np.sqrt(E)) if self.kind == "scaled" else 1.0

    def bounds(self, problem: GradientProblem, eps: float) -> GradientBounds:
        """The error bounds of one evaluation of this backward on `problem` in a dtype of epsilon `eps`."""
        return gradient_bounds(problem, self.scale(problem.E, problem.scale), eps)

    def keywords(self) -> frozenset[str]:
        """The row keywords this backward (and its forward) can be given."""
        raise NotImplementedError

    def require(self, *names: str) -> None:
        """Skip the calling law unless the backward (and its forward) take these keywords."""
        missing = sorted(set(names) - self.keywords())
        if missing:
            pytest.skip(f"the backward takes no keyword argument(s) {', '.join(missing)}")

    def require_notebook(self, *names: str) -> None:
        """Skip the calling law unless this is a backward of the notebook's contract taking these keywords
        (d_attentions, positional, positional_mode, bias): the cotangents of the attentions, of X, the biases
        and the positional encoding exist only there."""
        pytest.skip("the row contract has no cotangents of the attentions, of X, of the biases or of positions")

    def adapt(self, problem: GradientProblem) -> GradientProblem:
        """The problem without the keywords this backward does not take: no attn_mask, is_causal False, scale None,
        and grouped key/value heads repeated over their query heads (the laws that need one of them skip)."""
        taken = self.keywords()
        changes: dict[str, Any] = {}
        if problem.attn_mask is not None and "attn_mask" not in taken:
            changes["attn_mask"] = None
        if problem.is_causal and "is_causal" not in taken:
            changes["is_causal"] = False
        if problem.scale is not None and "scale" not in taken:
            changes["scale"] = None
        if problem.enable_gqa and "enable_gqa" not in taken:
            G = problem.group
            changes.update(enable_gqa=False, key=np.repeat(problem.key, G, axis=1),
                           value=np.repeat(problem.value, G, axis=1))  # fmt: skip
        return problem.replace(**changes) if changes else problem

    def __call__(self, problem: GradientProblem, **changes: Any) -> Gradients:
        raise NotImplementedError

    def out(self, problem: GradientProblem) -> Output:
        raise NotImplementedError


_TAKEN: dict[tuple[int, tuple[str, ...]], tuple[Callable[..., Any], frozenset[str]]] = {}


def _takes(function: Callable[..., Any], names: tuple[str, ...]) -> frozenset[str]:
    """Which of `names` the function takes as keywords (all of them with **kwargs); remembered per function (a
    signature is read once: the laws ask before every call)."""
    key = (id(function), names)
    if key in _TAKEN and _TAKEN[key][0] is function:
        return _TAKEN[key][1]
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return frozenset()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        taken = frozenset(names)
    else:
        taken = frozenset(name for name in names if name in parameters)
    _TAKEN[key] = (function, taken)
    return taken


def _modified(given: list[Array], original: list[Array], names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(
        name
        for name, a, b in zip(names, given, original, strict=True)
        if a.shape != b.shape or a.tobytes() != b.tobytes()
    )


@dataclass(frozen=True, repr=False)
class RowBackward(Backward):
    """A backward in the row convention: backward(query, key, value, d_out, **keywords) -> (dq, dk, dv), called on
    the arrays of its convention (library, layout, dtype; numpy float64 BHLE by default), as is its forward. In a
    dtype coarser than float64 the laws take the problem rounded to it (`adapt`): the backward, the forward and
    the law's float64 derivative then see the same inputs."""

    convention: Convention = field(default_factory=Convention)

    def __repr__(self) -> str:
        if self.convention == Convention():
            return super().__repr__()
        return (
            f"{type(self).__name__}(load_function({self.target!r}), {self.target!r}, "
            f"load_function({self.forward_target!r}), {self.forward_target!r}, {self.kind!r}, {self.convention!r})"
        )

    def keywords(self) -> frozenset[str]:
        if self.convention == Convention():
            return _takes(self.function, ROW_KEYWORDS) & _takes(self.forward, ROW_KEYWORDS)
        return _takes(self.function, ROW_KEYWORDS) & frozenset(row_keywords(self.kernel()))

    def kernel(self) -> Any:
        """The forward as a row-convention kernel in this convention (an SdpaImplementation)."""
        return sdpa_implementation(self.forward, self.forward_target, self.convention, self.kind)

    def adapt(self, problem: GradientProblem) -> GradientProblem:
        """Backward.adapt, and query, key, value and d_out rounded to the convention's dtype."""
        problem = super().adapt(problem)
        if self.convention.dtype == "float64":
            return problem
        names = ("query", "key", "value", "d_out")
        return problem.replace(**{name: self.convention.rounded(getattr(problem, name)) for name in names})

    def _keywords(self, problem: GradientProblem) -> dict[str, Any]:
        """The problem's keywords, a mask as an array of the convention's library (its (L, S) axes kept)."""
        return {
            name: self.convention.to_target(value, cast=False, laid_out=False) if isinstance(value, np.ndarray)
            else value for name, value in problem.keywords().items()
        }  # fmt: skip

    def __call__(self, problem: GradientProblem, **changes: Any) -> Gradients:
        """The gradients at `problem` (with some of query, key, value, d_out replaced by `changes`)."""
        self.require(*problem.keywords())
        if problem.d_weights is not None or problem.bias is not None:
            self.require_notebook("d_attentions", "bias")
        names = ("query", "key", "value", "d_out")
        original = [np.asarray(changes.get(name, getattr(problem, name)), dtype=np.float64) for name in names]
        if self.convention == Convention():
            given = [array.copy() for array in original]
            returned = call_function(self.target, self.function, *given, **problem.keywords())
            shaped = self._shaped(returned, original)
            return Gradients(shaped[0], shaped[1], shaped[2], _modified(given, original, names))
        arrays = [self.convention.to_target(array) for array in original]
        before = [self.convention.from_target(a, name)[0] for a, name in zip(arrays, names, strict=True)]
        returned = call_function(self.target, self.function, *arrays, **self._keywords(problem))
        eps = self.convention.eps
        converted = []
        if isinstance(returned, tuple | list) and len(returned) == 3:
            for value, what in zip(returned, ("d_query", "d_key", "d_value"), strict=True):
                array, returned_eps = self.convention.from_target(value, what)
                converted.append(array)
                eps = max(eps, returned_eps)
        shaped = self._shaped(converted or returned, original)
        after = [self.convention.from_target(a, name)[0] for a, name in zip(arrays, names, strict=True)]
        return Gradients(shaped[0], shaped[1], shaped[2], _modified(after, before, names), eps)

    def _shaped(self, returned: Any, original: list[Array]) -> list[NDArray[np.floating]]:
        if not isinstance(returned, tuple | list) or len(returned) != 3:
            raise ImplementationFailed(f"{self.target} returned {type(returned).__name__}; expected (dq, dk, dv)")
        return [
            as_result_array(value, what, array.shape)
            for value, what, array in zip(returned, ("d_query", "d_key", "d_value"), original, strict=False)
        ]

    def out(self, problem: GradientProblem, **changes: Any) -> Output:
        """The forward's output at `problem` (some inputs replaced), as float64 rows, and the epsilon it is judged
        by (its dtype's, or the convention's if coarser)."""
        arrays = [np.array(changes.get(n, getattr(problem, n)), dtype=np.float64) for n in ("query", "key", "value")]
        if self.convention == Convention():
            returned = call_function(self.forward_target, self.forward, *arrays, **problem.keywords())
            if isinstance(returned, tuple | list):
                returned = returned[0]
            out = as_result_array(returned, "out", problem.d_out.shape)
            return Output(np.asarray(out, dtype=np.float64), epsilon_of(out.dtype))
        given = [self.convention.to_target(array) for array in arrays]
        forward = row_forward(self.kernel())  # the kernel's own keywords from the row contract's
        returned = call_function(self.forward_target, forward, *given, **self._keywords(problem))
        if isinstance(returned, tuple | list):
            returned = returned[0]
        converted, eps = self.convention.from_target(returned, "out")
        out = as_result_array(converted, "out", problem.d_out.shape)
        return Output(np.asarray(out, dtype=np.float64), max(eps, self.convention.eps))


def _slot_arguments(q: Array, k: Array, v: Array) -> list[Array]:
    """The notebook's arguments whose Q, K, V are q^T, k^T, v^T: X = I_N, omegas q^T, k^T, v^T, zero biases."""
    N, E, E_v = q.shape[0], q.shape[1], v.shape[1]
    return [np.eye(N), v.T.copy(), q.T.copy(), k.T.copy(), np.zeros((E_v, 1)), np.zeros((E, 1)), np.zeros((E, 1))]


def _cotangent(returned: Any, name: str, index: int) -> Any:
    """The cotangent `name` of what a notebook backward returned: a key, an attribute or the item at `index`."""
    if isinstance(returned, Mapping) and name in returned:
        return returned[name]
    if hasattr(returned, name):
        return getattr(returned, name)
    if isinstance(returned, tuple | list) and len(returned) >= max(len(COTANGENT_NAMES), index + 1):
        return returned[index]
    if index >= len(COTANGENT_NAMES):
        raise ImplementationFailed(f"the backward returned no cotangent of {name} (item {index}), which was given")
    raise ImplementationFailed(
        f"the backward returned {type(returned).__name__}; expected the cotangents of {', '.join(COTANGENT_NAMES)}"
    )


@dataclass(frozen=True, repr=False)
class NotebookBackward(Backward):
    """A backward in the notebook's convention, read in rows one batch element and head at a time."""

    def keywords(self) -> frozenset[str]:
        taken = _takes(self.function, ("mask", "causal")) & _takes(self.forward, ("mask", "causal"))
        return frozenset({"mask": "attn_mask", "causal": "is_causal"}[name] for name in taken)

    def require_notebook(self, *names: str) -> None:
        """Skip the calling law unless the backward takes these keywords (d_attentions, positional,
        positional_mode, bias), and its forward those of them that are the forward's (all but d_attentions)."""
        backward_takes = _takes(self.function, names)
        forward_takes = _takes(self.forward, tuple(name for name in names if name != "d_attentions"))
        missing = sorted(name for name in names if name not in backward_takes
                         or (name != "d_attentions" and name not in forward_takes))  # fmt: skip
        if missing:
            pytest.skip(f"the backward takes no keyword argument(s) {', '.join(missing)}")

    def adapt(self, problem: GradientProblem) -> GradientProblem:
        """Backward.adapt, and no bias unless the backward and its forward take one."""
        problem = super().adapt(problem)
        if problem.bias is not None and not ("bias" in _takes(self.function, ("bias",))
                                             and "bias" in _takes(self.forward, ("bias",))):  # fmt: skip
            problem = problem.replace(bias=None)
        return problem

    def _notebook_keywords(self, problem: GradientProblem) -> dict[str, Any]:
        given: dict[str, Any] = {}
        if problem.attn_mask is not None:
            given["mask"] = problem.attn_mask.T.copy()  # mask[m, n]: key m visible to query n
        if problem.is_causal:
            given["causal"] = True
        if problem.bias is not None:
            self.require_notebook("bias")
            given["bias"] = problem.bias.T.copy()  # bias[m, n]: added to the logit of key m for query n
        return given

    def cotangents(
        self, problem: GradientProblem, positional: Array | None = None, positional_mode: str | None = None
    ) -> list[list[dict[str, NDArray[np.floating]]]]:
        """Every cotangent the backward returns ([b][h]: X, the omegas, the betas, and positional and bias when
        given) at the notebook arguments of each slot: X = I_N - positional (N x N, positional drawn by the law;
        0 when None), omega_q = q^T, omega_k = k^T, omega_v = v^T, zero betas, d_X_prime = d_out^T, so that
        X + positional = I_N and, with positional_mode "input" (or no positional), Q = q^T, K = k^T, V = v^T."""
        N = problem.N
        read = list(enumerate(COTANGENT_NAMES))  # (index in a returned sequence, name)
        read += [(7, "positional")] if positional is not None else []
        read += [(8, "bias")] if problem.bias is not None else []
        keywords = self._notebook_keywords(problem)
        if positional is not None:
            keywords["positional"] = positional.copy()
        if positional_mode is not None:
            keywords["positional_mode"] = positional_mode
        if problem.d_weights is not None:
            self.require_notebook("d_attentions")
        slots: list[list[dict[str, NDArray[np.floating]]]] = []
        for b in range(problem.query.shape[0]):
            slots.append([])
            for h in range(problem.query.shape[1]):
                arguments = _slot_arguments(problem.query[b, h], problem.key[b, h], problem.value[b, h])
                if positional is not None:
                    arguments[0] = arguments[0] - positional
                if problem.d_weights is not None:
                    keywords["d_attentions"] = problem.d_weights[b, h].T.copy()
                given = [a.copy() for a in arguments] + [problem.d_out[b, h].T.copy()]
                returned = call_function(self.target, self.function, *given, **keywords)
                shapes = [a.shape for a in arguments] + [(N, N), (N, N)]
                slots[-1].append({
                    name: as_result_array(_cotangent(returned, name, index), f"d {name}", shapes[index])
                    for index, name in read
                })  # fmt: skip
        return slots

    def __call__(self, problem: GradientProblem, **changes: Any) -> Gradients:
        self.require(*problem.keywords())
        names = ("query", "key", "value", "d_out")
        q, k, v, dO = (np.asarray(changes.get(n, getattr(problem, n)), dtype=np.float64) for n in names)
        dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
        modified: set[str] = set()
        dtypes: list[np.dtype[Any]] = []
        keywords = self._notebook_keywords(problem)
        if problem.d_weights is not None:
            self.require_notebook("d_attentions")
        for b in range(q.shape[0]):
            for h in range(q.shape[1]):
                arguments = _slot_arguments(q[b, h], k[b, h], v[b, h])
                given = [a.copy() for a in arguments] + [dO[b, h].T.copy()]
                if problem.d_weights is not None:
                    keywords["d_attentions"] = problem.d_weights[b, h].T.copy()
                returned = call_function(self.target, self.function, *given, **keywords)
                for name, index, target in (("omega_q", 2, dq), ("omega_k", 3, dk), ("omega_v", 1, dv)):
                    value = as_result_array(_cotangent(returned, name, index), f"d {name}", arguments[index].shape)
                    dtypes.append(value.dtype)
                    target[b, h] = value.T
                modified.update(_modified(given, [*arguments, dO[b, h].T], (*COTANGENT_NAMES, "d_X_prime")))
        dtype = np.result_type(*dtypes) if dtypes else np.dtype(np.float64)
        return Gradients(dq.astype(dtype), dk.astype(dtype), dv.astype(dtype), modified=tuple(sorted(modified)))

    def out(self, problem: GradientProblem, **changes: Any) -> Output:
        q, k, v = (np.asarray(changes.get(n, getattr(problem, n)), dtype=np.float64) for n in ("query", "key", "value"))
        out = np.zeros(problem.d_out.shape)
        N = q.shape[-2]
        weights: Array | None = np.zeros((*q.shape[:2], N, N))
        eps = epsilon_of(np.dtype(np.float64))
        for b in range(q.shape[0]):
            for h in range(q.shape[1]):
                arguments = _slot_arguments(q[b, h], k[b, h], v[b, h])
                returned = call_function(
                    self.forward_target, self.forward, *arguments, **self._notebook_keywords(problem)
                )
                attentions = None
                if isinstance(returned, tuple | list):
                    returned, attentions = returned[0], (returned[1] if len(returned) > 1 else None)
                X_prime = as_result_array(returned, "X_prime", (v.shape[-1], N))
                eps = max(eps, epsilon_of(X_prime.dtype))
                out[b, h] = X_prime.T
                if attentions is None or weights is None:
                    weights = None
                else:
                    A = as_result_array(attentions, "attentions", (N, N))
                    eps = max(eps, epsilon_of(A.dtype))
                    weights[b, h] = np.asarray(A, dtype=np.float64).T
        return Output(out, eps, weights)


# ----------------------------------------------------------------------------------------- the error model


@dataclass(frozen=True)
class GradientBounds:
    """Bounds on the rounding error of every entry of dq (B, H, 1, 1), dk and dv (B, H_kv, 1, 1) in one
    evaluation, and of every entry of the forward's output (B, H, 1, 1); see `gradient_bounds`."""

    d_query: Array
    d_key: Array
    d_value: Array
    out: Array

    def __add__(self, other: GradientBounds) -> GradientBounds:
        return GradientBounds(*(a + b for a, b in zip(self, other, strict=True)))

    def __iter__(self) -> Any:
        return iter((self.d_query, self.d_key, self.d_value, self.out))

    def scaled(self, factor: float) -> GradientBounds:
        return GradientBounds(*(factor * a for a in self))


def _slot_max(array: Array) -> Array:
    """max |entry| over the last two axes, kept as (B, H, 1, 1)."""
    return np.asarray(np.max(np.abs(array), axis=(-2, -1), keepdims=True, initial=0.0))


def gradient_bounds(problem: GradientProblem, scale: float, eps: float) -> GradientBounds:
    """Forward-error bounds of one backward evaluation in a dtype of epsilon `eps` (inputs rounded to it included).

    Per batch element and query head, with a, b, c, g the largest |q|, |k|, |v|, |d_out| of the slot, s = |scale|,
    N keys and queries, widths E and E_v, and lambda = s E a b the largest logit:
    - each weight P[l, s] has relative error rho_P = eps (2 (E + 2) lambda + N + 4): the logit's error is at
      most (E + 2) eps lambda (E products and sums, the scale, the rounding of q and k), the shift by the row
      maximum cancels in exact arithmetic, exp turns an absolute error d into a relative one of d (1 + d), and
      the normalisation adds N + 2 roundings and the difference of two logit errors (2x);
    - dV = P^T dO sums at most N products of weights and cotangents over queries (sum_l P[l, s] <= N):
      |error| <= N g (rho_P + (N + 1) eps);
    - dP = dO V^T (+ d_weights, w its largest |entry| in the slot, 0 without) has |dP| <= pi = E_v g c + w and
      error (E_v + 2) eps pi; D = rowsum(P o dP) has |D| <= pi and error pi (rho_P + (N + E_v + 3) eps);
      dS = P o (dP - D) is then |dS[l, s]| <= 2 pi P[l, s] with error P[l, s] pi sigma,
      sigma = 3 rho_P + (N + 2 E_v + 8) eps;
    - dQ = s dS K sums N keys with sum_s P = 1: |error| <= s b pi (sigma + 2 (N + 3) eps);
      dK = s dS^T Q sums N queries with sum_l P <= N: |error| <= s a pi N (sigma + 2 (N + 3) eps);
    - a key/value head shared by G query heads (enable_gqa) has the sum of its G copies' bounds (plus G eps of
      the sum, counted in the +3).
    - the forward's output O = P V: |error| <= c (rho_P + (N + 2) eps); its weights P: |error| <= rho_P.
    A bias adds at most beta = max |bias| to each logit (one more rounding): lambda = s E a b + beta.
    First-order terms: the products n eps with n <= 100 and eps <= 2^-10 leave the second-order ones below
    1/10 of them, absorbed by the rounded-up constants (2 for 1, 3 for 2). A masked weight is exactly zero and
    only lowers the sums. Float32 computation with float64 accumulation has eps of float32 (its result's dtype).
    """
    N, E, E_v = problem.N, problem.E, problem.value.shape[-1]
    s = abs(scale)
    G = problem.group
    a = _slot_max(problem.query)
    b = np.repeat(_slot_max(problem.key), G, axis=1)
    c = np.repeat(_slot_max(problem.value), G, axis=1)
    g = _slot_max(problem.d_out)
    logit = s * E * a * b + (0.0 if problem.bias is None else float(np.max(np.abs(problem.bias), initial=0.0)))
    rho_P = eps * (2.0 * (E + 2) * logit + N + 4)
    w = 0.0 if problem.d_weights is None else _slot_max(problem.d_weights)
    pi = E_v * g * c + w
    sigma = 3.0 * rho_P + (N + 2 * E_v + 8) * eps
    d_query = s * b * pi * (sigma + 2.0 * (N + 3) * eps)
    d_key = s * a * pi * N * (sigma + 2.0 * (N + 3) * eps)
    d_value = N * g * (rho_P + (N + 1) * eps)
    out = c * (rho_P + (N + 2) * eps)

    def per_kv_head(bound: Array) -> Array:
        B, H = bound.shape[:2]
        return np.asarray(bound.reshape(B, H // G, G, 1, 1).sum(axis=2))

    return GradientBounds(d_query, per_kv_head(d_key), per_kv_head(d_value), out)


def inner(a: Array, b: Array) -> tuple[float, float]:
    """<a, b> in float64 and a bound on its rounding error (n eps sum |a b|, n entries)."""
    products = np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64)
    n = products.size
    return float(products.sum()), float((n + 1) * np.finfo(np.float64).eps * np.abs(products).sum())


class Step(NamedTuple):
    """The central-difference step h and the error bound of (phi(h) - phi(-h)) / 2h, without its rounding."""

    h: float
    truncation: float  # h^2 M / r^3
    rounding_per_unit: float  # eps_phi: the bound on the error of one evaluation of phi; rounding is eps_phi / h


SMALLEST_STEP = 2.0**-40  # inputs on a grid of 2^-8 within |x| <= 4 stay exact at q + h dq for h >= 2^-40


def central_difference_step(
    problem: GradientProblem, directions: tuple[Array, Array, Array], scale: float, eps_forward: float
) -> Step:
    """The step h and error bound of the central difference of phi(t) = <d_out, f(q + t dq, k + t dk, v + t dv)>.

    Truncation: |(phi(h) - phi(-h)) / 2h - phi'(0)| <= (h^2 / 6) max_{|t| <= h} |phi'''(t)|. phi is analytic:
    for complex t = t0 + w, t0 real in [-h, h], |w| <= r, the logits z(t) = scale (q + t dq)(k + t dk)^T have
    |Im z| <= s E (r (|dq| b + a |dk|) + 4 r^2 |dq| |dk|) (Im t^2 = 2 Re t Im t, |Re t| <= h <= r; a bias is
    real and fixed). Choose r so
    that this is pi / 6: then the phases of the softmax's terms differ by at most pi / 3, the real part of its
    denominator is at least half the sum of the moduli, and sum_s |p_ls(t)| <= 2. Hence
    |phi(t)| <= M = 2 sum |d_out| (c + 2 r |dv|) on the disc, and Cauchy's estimate gives |phi'''(t0)| <= 6 M / r^3:
    the truncation error is at most h^2 M / r^3. With a cotangent d_weights of the weights, phi gains
    <d_weights, P(t)>, at most 2 W = 2 sum |d_weights| on the disc (sum_s |p_ls(t)| <= 2): M gains 2 W.
    Rounding: each phi(+-h) is evaluated with error at most eps_phi = sum |d_out| c_h (rho_P + (N + 2) eps_f)
    (the forward's bound, at magnitudes a + h |dq|, ...) + (n + 1) eps64 sum |d_out o out| (the inner product,
    n entries; bounded with |out| <= c_h), and W (rho_P + (N + 2) eps_f) + (n_w + 1) eps64 W for the weights
    (|P| <= 1); q + h dq is exact on the strategies' dyadic grid. The difference quotient
    errs by at most eps_phi / h. h = (eps_phi r^3 / 2M)^(1/3), the minimiser of h^2 M / r^3 + eps_phi / h,
    rounded down to a power of two (so that 2h divides exactly) within [2^-40, r / 2].
    """
    dq, dk, dv = (float(np.max(np.abs(d), initial=0.0)) for d in directions)
    a = float(np.max(np.abs(problem.query), initial=0.0))
    b = float(np.max(np.abs(problem.key), initial=0.0))
    c = float(np.max(np.abs(problem.value), initial=0.0))
    s, E, N = abs(scale), problem.E, problem.N
    A = 4.0 * s * E * dq * dk
    B = s * E * (dq * b + a * dk)
    target = np.pi / 6
    if A > 0:
        r = (-B + np.sqrt(B * B + 4.0 * A * target)) / (2.0 * A)
    elif B > 0:
        r = target / B
    else:
        r = 1.0  # the logits do not move: phi is linear in t
    G1 = float(np.abs(problem.d_out).sum())
    W = 0.0 if problem.d_weights is None else float(np.abs(problem.d_weights).sum())
    M = 2.0 * G1 * (c + 2.0 * r * dv) + 2.0 * W
    # The forward's rounding at magnitudes up to the step's largest (h <= r / 2 <= r).
    a_h, b_h, c_h = a + r * dq, b + r * dk, c + r * dv
    beta = 0.0 if problem.bias is None else float(np.max(np.abs(problem.bias), initial=0.0))
    rho_P = eps_forward * (2.0 * (E + 2) * (s * E * a_h * b_h + beta) + N + 4)
    n = problem.d_out.size
    eps64 = float(np.finfo(np.float64).eps)
    eps_phi = G1 * c_h * (rho_P + (N + 2) * eps_forward) + (n + 1) * eps64 * G1 * c_h
    if problem.d_weights is not None:
        eps_phi += W * (rho_P + (N + 2) * eps_forward) + (problem.d_weights.size + 1) * eps64 * W
    if M == 0.0 or eps_phi == 0.0:
        h = 2.0 ** np.floor(np.log2(r / 2))
    else:
        h = float((eps_phi * r**3 / (2.0 * M)) ** (1.0 / 3.0))
        h = 2.0 ** np.floor(np.log2(min(h, r / 2)))
    h = float(max(h, SMALLEST_STEP))
    return Step(h, h * h * M / r**3, eps_phi)
