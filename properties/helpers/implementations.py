"""The functions under test, each behind one wrapper: self-attention (`Implementation`), the column softmax
(`Softmax`) and multi-head attention (`Multihead`).

Laws never call a user's function directly: they call its wrapper, which passes fresh writable copies of the
inputs (float64, each beta a (rows, 1) column, exactly as the notebooks do), shows the function's warnings
without turning them into errors, turns an exception into an `ImplementationFailed`, and checks the shape and
dtype of what comes back. All three share `call_function` for that; an `Implementation` also normalises its
result to a `Result` of X' and the attention matrix (None when only X' is returned).
"""

from __future__ import annotations

import inspect
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import currently_in_test_context, reject
from numpy.typing import NDArray

from attention import multihead_scaled_self_attention, scaled_dot_product_self_attention, self_attention, softmax_cols
from properties.helpers.options import (
    KINDS,
    MULTIHEAD_REFERENCE_TARGET,
    REFERENCE_TARGETS,
    SOFTMAX_REFERENCE_TARGET,
    Kind,
)
from properties.helpers.problems import ARGUMENT_ORDER, AttentionProblem
from properties.helpers.tolerances import ErrorBounds, epsilon_of, error_bounds, fits_in_range

# Problems a law drew but did not judge, by reason (a problem beyond the range of the dtype the function
# returns): the plugin clears it before each law and turns "every example set aside" into a skip; attention-check
# reports the counts.
SET_ASIDE: Counter[str] = Counter()


class BeyondRange(ValueError):
    """A problem whose values the dtype a function returns cannot represent: not judged for that function."""


def require_returned_range(problem: AttentionProblem, result: Result) -> None:
    """Set the problem aside (reject it inside a law, else raise BeyondRange) when the dtype of `result` is narrower
    than float64 and the problem's q, k, v or logits exceed its range (tolerances.fits_in_range), as the row
    convention's --dtype does: no function returning that dtype could represent them."""
    names = {str(array.dtype) for array in (result.X_prime, result.attentions) if array is not None}
    narrow = [name for name in ("float16", "float32") if name in names]
    if not narrow or fits_in_range(problem, narrow[0]):
        return
    reason = f"q, k, v or logits beyond the range of {narrow[0]}, the dtype returned"
    SET_ASIDE[reason] += 1
    if currently_in_test_context():
        reject()
    raise BeyondRange(reason)


class ImplementationFailed(AssertionError):
    """The implementation raised, or returned something that is not (X', attentions) or X'."""


class TargetRaised(ImplementationFailed):
    """The function under test itself raised (its exception is the __cause__)."""


@dataclass(frozen=True)
class Result:
    """What one call returned: X' (D_v x N) and the attention matrix (N x N), or None if not returned."""

    X_prime: NDArray[np.floating]
    attentions: NDArray[np.floating] | None
    modified: tuple[str, ...] = ()  # names of the arguments the call changed in place

    def require_attentions(self) -> NDArray[np.floating]:
        """The attention matrix; skips the calling test when the implementation returns X' only."""
        if self.attentions is None:
            pytest.skip("the implementation returns X' only; this law needs the attention matrix")
        return self.attentions

    @property
    def eps(self) -> float:
        """Machine epsilon to judge this result by (see tolerances.epsilon_of)."""
        dtypes = [self.X_prime.dtype]
        if self.attentions is not None:
            dtypes.append(self.attentions.dtype)
        return epsilon_of(*dtypes)

    def bitwise_equal(self, other: Result) -> bool:
        """Same dtypes, shapes and bits (NaNs in the same places count as equal)."""
        pairs = [(self.X_prime, other.X_prime), (self.attentions, other.attentions)]
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


def as_result_array(value: Any, what: str, shape: tuple[int, ...]) -> NDArray[np.floating]:
    """A copy of what the function returned as a real float array of the expected shape, else ImplementationFailed."""
    try:
        array = np.array(value, copy=True)
    except Exception as error:  # a tensor on a device, a ragged list, ...
        raise ImplementationFailed(f"{what} could not be converted to a numpy array: {error!r}") from error
    if array.dtype.kind not in "fiu":
        raise ImplementationFailed(f"{what} has dtype {array.dtype}; expected a real float array")
    if array.shape != shape:
        raise ImplementationFailed(f"{what} has shape {array.shape}; expected {shape}")
    return array if array.dtype.kind == "f" else array.astype(np.float64)


def copied(value: Any) -> Any:
    """A fresh writable float64 copy of an array, or of every array in a (nested) sequence of them."""
    if isinstance(value, tuple | list):
        return type(value)(copied(item) for item in value)
    return np.array(value, dtype=np.float64, copy=True)


# What the last call of a function under test returned, uncopied (the wrappers hand laws copies): the hygiene laws
# check that a result the caller holds is not changed by later calls.
LAST_RETURNED: list[Any] = [None]


def returned_arrays(value: Any) -> list[NDArray[Any]]:
    """Copies of the arrays in a returned value (an array, a tensor or a tuple of them), as numpy arrays."""
    if isinstance(value, tuple | list):
        return [array for item in value for array in returned_arrays(item)]
    detach = getattr(value, "detach", None)  # a torch tensor
    value = detach().cpu() if callable(detach) else value
    try:
        return [np.array(value, copy=True)]
    except Exception:  # not an array: nothing to keep
        return []


def call_function(name: str, function: Callable[..., Any], *arguments: Any, **keywords: Any) -> Any:
    """function(*arguments, **keywords), with its warnings shown rather than raised and its exceptions
    reported as ImplementationFailed (NotImplementedError as "not implemented"); what it returned, uncopied,
    stays in LAST_RETURNED."""
    try:
        # A warning from the function under test is reported by pytest, not turned into an error: the laws
        # judge what it returns (the project's own warnings-as-errors filter is for its own code), and one
        # hygiene law, test_ordinary_inputs_raise_no_runtime_warning, judges its warnings.
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            LAST_RETURNED[0] = function(*arguments, **keywords)
            return LAST_RETURNED[0]
    except Exception as error:
        if isinstance(error, NotImplementedError):
            said = str(error) or f"{name} raised NotImplementedError"
            raise TargetRaised(f"not implemented: {said}") from error
        raise TargetRaised(f"{name} raised {type(error).__name__}: {error}") from error


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
        arguments = copied(list(problem.arrays()))
        returned = call_function(self.name, self.function, *arguments, **keywords)
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
            result = Result(
                as_result_array(returned[0], "X_prime", x_shape),
                as_result_array(returned[1], "attentions", a_shape),
                modified,
            )
        else:
            result = Result(as_result_array(returned, "X_prime", x_shape), None, modified)
        require_returned_range(problem, result)
        return result


@dataclass(frozen=True)
class FunctionUnderTest:
    """A loaded function and the TARGET it came from; prints as the code that loads it again."""

    function: Callable[..., Any]
    target: str

    def __repr__(self) -> str:
        return f"{type(self).__name__}(load_function({self.target!r}), {self.target!r})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


class Softmax(FunctionUnderTest):
    """The column softmax under test, f(data) -> weights of data's shape, called on a copy of its input."""

    def __call__(self, data: Any) -> NDArray[np.floating]:
        array = copied(data)
        return as_result_array(call_function(self.target, self.function, array), "the softmax", array.shape)


class Multihead(FunctionUnderTest):
    """The multi-head attention under test, f(X, heads, omega_c) -> X', called on copies of its inputs."""

    def __call__(self, X: Any, heads: Any, omega_c: Any) -> NDArray[np.floating]:
        X, heads, omega_c = copied(X), copied(list(heads)), copied(omega_c)
        returned = call_function(self.target, self.function, X, heads, omega_c)
        return as_result_array(returned, "multi-head X'", (omega_c.shape[0], X.shape[1]))


# The bundled reference behind the same wrappers: what the battery checks when no TARGET is given.
REFERENCE: dict[Kind, Implementation] = {
    "scaled": Implementation(scaled_dot_product_self_attention, "scaled", REFERENCE_TARGETS["scaled"]),
    "unscaled": Implementation(self_attention, "unscaled", REFERENCE_TARGETS["unscaled"]),
}
REFERENCE_SOFTMAX = Softmax(softmax_cols, SOFTMAX_REFERENCE_TARGET)
REFERENCE_MULTIHEAD = Multihead(multihead_scaled_self_attention, MULTIHEAD_REFERENCE_TARGET)
