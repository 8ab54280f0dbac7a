"""The problems the laws draw: one self-attention problem (the notebook's seven arrays by name) and one
multi-head problem (notebook 12.2), each immutable and printable as code that rebuilds it."""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]
ARGUMENT_ORDER = ("X", "omega_v", "omega_q", "omega_k", "beta_v", "beta_q", "beta_k")


# Arrays with more entries are written as their bytes: a nested list of a million floats takes a second to
# print (hypothesis prints every explicit example as it runs it) and is no more readable than hex.
LITERAL_ENTRIES = 1 << 14


def code_for(array: NDArray[Any]) -> str:
    """Python source that rebuilds `array` exactly: a nested list (float repr round-trips), or for more than
    LITERAL_ENTRIES entries the hex of its bytes with their dtype and shape."""
    if not array.size:
        return f"np.zeros({array.shape!r})"
    if array.size <= LITERAL_ENTRIES:  # inf and nan print bare: as numpy's names they evaluate
        return "np.array(" + re.sub(r"\b(inf|nan)\b", r"np.\1", repr(array.tolist())) + ")"
    data = np.ascontiguousarray(array)
    return f"np.frombuffer(bytes.fromhex({data.tobytes().hex()!r}), {data.dtype.str!r}).reshape({data.shape!r}).copy()"


@dataclass(frozen=True, repr=False, eq=False)
class AttentionProblem:
    """X (D x N, inputs as columns) and the six parameters; every beta is a (rows, 1) column.

    The arrays are made read-only, so a law cannot change a drawn problem by accident.
    """

    X: Array
    omega_v: Array
    omega_q: Array
    omega_k: Array
    beta_v: Array
    beta_q: Array
    beta_k: Array

    def __post_init__(self) -> None:
        for name in ARGUMENT_ORDER:
            array = np.array(getattr(self, name), dtype=np.float64)
            if name.startswith("beta") and array.ndim == 1:
                array = array.reshape(-1, 1)
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    @property
    def D(self) -> int:
        return int(self.X.shape[0])

    @property
    def N(self) -> int:
        return int(self.X.shape[1])

    @property
    def D_q(self) -> int:
        return int(self.omega_q.shape[0])

    @property
    def D_v(self) -> int:
        return int(self.omega_v.shape[0])

    @staticmethod
    def shapes(D: int, D_q: int, D_v: int, N: int) -> tuple[tuple[int, int], ...]:
        """The shapes of the seven arrays, in the notebook's argument order (ARGUMENT_ORDER)."""
        return ((D, N), (D_v, D), (D_q, D), (D_q, D), (D_v, 1), (D_q, 1), (D_q, 1))

    def arrays(self) -> tuple[Array, ...]:
        """The seven arrays in the notebook's argument order."""
        return tuple(getattr(self, name) for name in ARGUMENT_ORDER)

    def replace(self, **changes: Any) -> AttentionProblem:
        """A copy with some arrays replaced."""
        return dataclasses.replace(self, **changes)

    def values(self) -> Array:
        """V = omega_v X + beta_v 1^T (eq. 12.2), computed in float64 on the law's side."""
        return self.omega_v @ self.X + self.beta_v

    def magnitudes(self) -> tuple[Array, Array, Array]:
        """(Qhat, Khat, Vhat) = |omega| |X| + |beta| 1^T for queries, keys and values: entrywise bounds on
        |Q|, |K|, |V| that every summation order obeys (the magnitudes of properties/helpers/tolerances.py)."""
        absX = np.abs(self.X)
        return (
            np.abs(self.omega_q) @ absX + np.abs(self.beta_q),
            np.abs(self.omega_k) @ absX + np.abs(self.beta_k),
            np.abs(self.omega_v) @ absX + np.abs(self.beta_v),
        )

    def logit_bounds(self, scale: float = 1.0) -> Array:
        """l_n = scale max_m (Khat^T Qhat)_mn, shape (N,): a bound on every logit of column n."""
        return np.asarray(scale * self._unscaled_logit_bounds)

    @functools.cached_property
    def _unscaled_logit_bounds(self) -> Array:
        """max_m (Khat^T Qhat)_mn, computed once per problem (an N x N product: the false-alarm test replays one
        problem on every correct variant). A problem's arrays are never modified (the hygiene laws), so it stays
        true; a copy is returned by logit_bounds."""
        if self.N == 0:
            return np.zeros(0)
        Qhat, Khat, _ = self.magnitudes()
        return np.asarray((Khat.T @ Qhat).max(axis=0))

    def logits(self, scale: float) -> Array:
        """scale K^T Q with Q = omega_q X + beta_q 1^T, K = omega_k X + beta_k 1^T (eqs. 12.7-12.9), in float64."""
        queries = self.omega_q @ self.X + self.beta_q
        keys = self.omega_k @ self.X + self.beta_k
        return np.asarray(scale * (keys.T @ queries))

    def with_columns(self, columns: NDArray[np.intp]) -> AttentionProblem:
        """The same parameters applied to X[:, columns] (a permutation, or a repetition, of the inputs)."""
        return self.replace(X=self.X[:, columns])

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Hypothesis prints falsifying examples with this (the IPython protocol): as runnable code."""
        printer.text(repr(self))

    def __repr__(self) -> str:
        shapes = f"D={self.D}, D_q={self.D_q}, D_v={self.D_v}, N={self.N}"
        body = ",\n".join(f"    {name}={code_for(getattr(self, name))}" for name in ARGUMENT_ORDER)
        return f"AttentionProblem(  # {shapes}\n{body},\n)"


Head = tuple[Array, Array, Array, Array, Array, Array]


@dataclass(frozen=True, repr=False)
class MultiheadProblem:
    """X, the heads (each (omega_v, omega_q, omega_k, beta_v, beta_q, beta_k)) and omega_c (eq. 12.12)."""

    X: Array
    heads: tuple[Head, ...]
    omega_c: Array

    def head_problem(self, h: int) -> AttentionProblem:
        """Head h as a single-head problem on the shared X."""
        return AttentionProblem(self.X, *self.heads[h])

    def replace(self, **changes: Any) -> MultiheadProblem:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        heads = ", ".join("(" + ", ".join(code_for(a) for a in head) + ")" for head in self.heads)
        return f"MultiheadProblem(X={code_for(self.X)}, heads=({heads},), omega_c={code_for(self.omega_c)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


@dataclass(frozen=True, repr=False, eq=False)
class AttentionOptions:
    """The keyword options of one call: positions Pi (D x N) and their mode, a mask (N x N, mask[m, n] True when
    key m is visible to query n), causal, and a bias (N x N, added to the scaled logits). None: not given."""

    positional: Array | None = None
    positional_mode: str = "input"
    mask: NDArray[np.bool_] | None = None
    causal: bool = False
    bias: Array | None = None

    def __post_init__(self) -> None:
        for name in ("positional", "mask", "bias"):
            value = getattr(self, name)
            if value is not None:
                array = np.array(value, dtype=bool if name == "mask" else np.float64)
                array.setflags(write=False)
                object.__setattr__(self, name, array)

    def keywords(self) -> dict[str, Any]:
        """The keyword arguments to pass: only the options given (fresh copies of the arrays)."""
        given: dict[str, Any] = {}
        if self.positional is not None:
            given.update(positional=self.positional.copy(), positional_mode=self.positional_mode)
        if self.mask is not None:
            given["mask"] = self.mask.copy()
        if self.causal:
            given["causal"] = True
        if self.bias is not None:
            given["bias"] = self.bias.copy()
        return given

    def replace(self, **changes: Any) -> AttentionOptions:
        """A copy with some options replaced."""
        return dataclasses.replace(self, **changes)

    def visible(self, N: int) -> NDArray[np.bool_]:
        """visible[m, n]: key m is visible to query n under the mask and causal (a key must be visible under both)."""
        seen = np.ones((N, N), dtype=bool) if self.mask is None else self.mask.copy()
        if self.causal:
            seen &= np.tri(N, dtype=bool).T
        return seen

    def sees_a_key(self, N: int) -> NDArray[np.bool_]:
        """Which queries see at least one key (the others follow a convention: see properties/test_conventions.py)."""
        return np.asarray(self.visible(N).any(axis=0))

    def with_columns(self, columns: NDArray[np.intp]) -> AttentionOptions:
        """The options of the inputs X[:, columns] (for an increasing selection, causal keeps its meaning)."""
        index = np.ix_(columns, columns)
        return self.replace(
            positional=None if self.positional is None else self.positional[:, columns],
            mask=None if self.mask is None else self.mask[index],
            bias=None if self.bias is None else self.bias[index],
        )

    def without_positions(self, problem: AttentionProblem) -> AttentionProblem:
        """A problem that gives, without positions, what `problem` gives with them: X + Pi for mode "input";
        for mode "query_key" the inputs [X; Pi] with weights [omega_q, omega_q], [omega_k, omega_k] and
        [omega_v, 0], so that Pi reaches the queries and keys and not the values (eqs. 12.16-12.17)."""
        Pi = self.positional
        if Pi is None:
            return problem
        if self.positional_mode == "input":
            return problem.replace(X=problem.X + Pi)
        return problem.replace(
            X=np.vstack([problem.X, Pi]),
            omega_v=np.hstack([problem.omega_v, np.zeros_like(problem.omega_v)]),
            omega_q=np.hstack([problem.omega_q, problem.omega_q]),
            omega_k=np.hstack([problem.omega_k, problem.omega_k]),
        )

    def magnitudes(self, problem: AttentionProblem) -> AttentionProblem:
        """A problem whose magnitudes (AttentionProblem.magnitudes) bound those of every way of computing the
        projections with these positions: |X| + |Pi| for mode "input" (omega X + omega Pi may be formed
        separately), the stacked problem of `without_positions` for mode "query_key"."""
        if self.positional is None:
            return problem
        if self.positional_mode == "input":
            return problem.replace(X=np.abs(problem.X) + np.abs(self.positional))
        return self.without_positions(problem)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def __repr__(self) -> str:
        parts = []
        if self.positional is not None:
            parts += [f"positional={code_for(self.positional)}", f"positional_mode={self.positional_mode!r}"]
        if self.mask is not None:
            parts.append(f"mask={code_for(self.mask)}")
        if self.causal:
            parts.append("causal=True")
        if self.bias is not None:
            parts.append(f"bias={code_for(self.bias)}")
        return "AttentionOptions(" + ", ".join(parts) + ")"


# --- The row convention: a batch of multi-head problems (properties/test_sdpa.py) ---


@dataclass(frozen=True, repr=False)
class BatchedProblem:
    """B batch elements, each an input X_b with H heads of its own parameters: slot (b, h) is the single-head
    problem AttentionProblem(X_b, *heads[b][h]). Every slot has the same N, D_q and D_v, so their rows stack
    into query (B, H, N, D_q), key (B, H, N, D_q) and value (B, H, N, D_v), as a row-convention kernel takes them.
    """

    slots: tuple[tuple[AttentionProblem, ...], ...]

    @property
    def B(self) -> int:
        return len(self.slots)

    @property
    def H(self) -> int:
        return len(self.slots[0])

    def stacked(self) -> tuple[Array, Array, Array]:
        """(query, key, value) in (B, H, N, .) layout: slot (b, h) holds Q^T, K^T, V^T, computed in float64."""
        rows = [[(p.omega_q @ p.X + p.beta_q, p.omega_k @ p.X + p.beta_k, p.values()) for p in heads]
                for heads in self.slots]  # fmt: skip
        return tuple(  # type: ignore[return-value]
            np.array([[slot[i].T for slot in heads] for heads in rows]) for i in range(3)
        )

    def replace_slot(self, b: int, h: int, problem: AttentionProblem) -> BatchedProblem:
        """A copy with slot (b, h) replaced."""
        slots = [list(heads) for heads in self.slots]
        slots[b][h] = problem
        return BatchedProblem(tuple(tuple(heads) for heads in slots))

    def with_batch_order(self, p: NDArray[np.intp]) -> BatchedProblem:
        """The batch elements in the order p (element i of the result is element p[i])."""
        return BatchedProblem(tuple(self.slots[int(i)] for i in p))

    def __repr__(self) -> str:
        body = ",\n".join("    (" + ", ".join(repr(p) for p in heads) + ",)" for heads in self.slots)
        return f"BatchedProblem((  # B={self.B}, H={self.H}\n{body},\n))"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))
