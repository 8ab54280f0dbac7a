"""The implementation under test: a user's function behind one calling convention.

Laws never call an implementation directly: they call an `Implementation`, which copies the inputs,
passes them exactly as the notebook does (float64, each beta a (rows, 1) column), and normalises what
comes back to a `Result` of X' and the attention matrix (None when only X' is returned).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pytest
from numpy.typing import NDArray

from properties.problem import ARGUMENT_ORDER, AttentionProblem
from properties.tolerances import ErrorBounds, epsilon_of, error_bounds

Kind = Literal["scaled", "unscaled"]
KINDS: tuple[Kind, ...] = ("scaled", "unscaled")


class ImplementationFailed(AssertionError):
    """The implementation raised, or returned something that is not (X', attentions) or X'."""


@dataclass(frozen=True)
class Result:
    """What one call returned: X' (D_v x N) and the attention matrix (N x N), or None if not returned."""

    X_prime: NDArray[np.floating]
    attentions_or_none: NDArray[np.floating] | None
    modified: tuple[str, ...] = ()  # names of the arguments the call changed in place

    @property
    def attentions(self) -> NDArray[np.floating]:
        """The attention matrix; skips the calling test when the implementation returns X' only."""
        if self.attentions_or_none is None:
            pytest.skip("the implementation returns X' only; this law needs the attention matrix")
        return self.attentions_or_none

    @property
    def eps(self) -> float:
        """Machine epsilon to judge this result by (see tolerances.epsilon_of)."""
        dtypes = [self.X_prime.dtype]
        if self.attentions_or_none is not None:
            dtypes.append(self.attentions_or_none.dtype)
        return epsilon_of(*dtypes)

    def bitwise_equal(self, other: Result) -> bool:
        """Same dtypes, shapes and bits (NaNs in the same places count as equal)."""
        pairs = [(self.X_prime, other.X_prime), (self.attentions_or_none, other.attentions_or_none)]
        return all(
            (a is None and b is None)
            or (
                a is not None
                and b is not None
                and a.dtype == b.dtype
                and a.shape == b.shape
                and a.tobytes() == b.tobytes()
            )
            for a, b in pairs
        )


def _as_real_array(value: Any, what: str, shape: tuple[int, int]) -> NDArray[np.floating]:
    try:
        array = np.array(value, copy=True)
    except Exception as error:  # a tensor on a device, a ragged list, ...
        raise ImplementationFailed(f"{what} could not be converted to a numpy array: {error!r}") from error
    if array.dtype.kind not in "fiu":
        raise ImplementationFailed(f"{what} has dtype {array.dtype}; expected a real float array")
    if array.shape != shape:
        raise ImplementationFailed(f"{what} has shape {array.shape}; expected {shape}")
    return array if array.dtype.kind == "f" else array.astype(np.float64)


@dataclass(frozen=True)
class Implementation:
    """A self-attention function with the notebook's signature, and which of the notebook's two it is."""

    function: Callable[..., Any]
    kind: Kind = "scaled"
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {self.kind!r}")
        if not self.name:
            module = getattr(self.function, "__module__", "?")
            object.__setattr__(self, "name", f"{module}:{getattr(self.function, '__qualname__', self.function)}")

    def __repr__(self) -> str:
        """Code that rebuilds this implementation from its TARGET (used in reproduction snippets)."""
        return f"Implementation(load_function({self.name!r}), {self.kind!r}, {self.name!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def accepts(self, *keywords: str) -> bool:
        """Whether the function takes these keyword arguments (positional=, mask=, causal=, bias=, ...)."""
        try:
            parameters = inspect.signature(self.function).parameters
        except (TypeError, ValueError):
            return False
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return True
        return all(k in parameters for k in keywords)

    def require(self, *keywords: str) -> None:
        """Skip the calling test unless the function takes these keyword arguments."""
        if not self.accepts(*keywords):
            pytest.skip(f"the implementation takes no keyword argument(s) {', '.join(keywords)}")

    def scale(self, D_q: int) -> float:
        """The factor applied to K^T Q: 1/sqrt(D_q) for scaled attention (eq. 12.9), 1 for eq. 12.8."""
        return 1.0 / float(np.sqrt(D_q)) if self.kind == "scaled" else 1.0

    def bounds(self, problem: AttentionProblem, eps: float) -> ErrorBounds:
        """The forward-error bounds of one evaluation of this implementation on `problem`."""
        return error_bounds(problem, self.scale(problem.D_q), eps)

    def __call__(self, problem: AttentionProblem, **keywords: Any) -> Result:
        """Call the function on fresh writable copies of the problem's arrays; check and normalise the result."""
        arguments = [np.array(array, dtype=np.float64, copy=True) for array in problem.arrays()]
        try:
            # A warning from the implementation is reported by pytest, not turned into an error: the laws
            # judge what it returns (the project's own warnings-as-errors filter is for its own code).
            with warnings.catch_warnings():
                warnings.simplefilter("default")
                returned = self.function(*arguments, **keywords)
        except Exception as error:
            if isinstance(error, NotImplementedError):
                said = str(error) or f"{self.name} raised NotImplementedError"
                raise ImplementationFailed(f"not implemented: {said}") from error
            raise ImplementationFailed(f"{self.name} raised {type(error).__name__}: {error}") from error
        modified = tuple(
            name
            for name, given, original in zip(ARGUMENT_ORDER, arguments, problem.arrays(), strict=True)
            if given.shape != original.shape or given.tobytes() != original.tobytes()
        )
        x_shape, a_shape = (problem.D_v, problem.N), (problem.N, problem.N)
        if isinstance(returned, tuple | list):
            if len(returned) != 2:
                raise ImplementationFailed(
                    f"{self.name} returned a sequence of length {len(returned)}; expected (X_prime, attentions)"
                )
            return Result(
                _as_real_array(returned[0], "X_prime", x_shape),
                _as_real_array(returned[1], "attentions", a_shape),
                modified,
            )
        return Result(_as_real_array(returned, "X_prime", x_shape), None, modified)
