"""One self-attention problem: the notebook's seven arrays by name, immutable, printable as code."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]
ARGUMENT_ORDER = ("X", "omega_v", "omega_q", "omega_k", "beta_v", "beta_q", "beta_k")


def code_for(array: NDArray[Any]) -> str:
    """Python source that rebuilds `array` exactly (float repr round-trips)."""
    return f"np.array({array.tolist()!r})" if array.size else f"np.zeros({array.shape!r})"


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

    def arrays(self) -> tuple[Array, ...]:
        """The seven arrays in the notebook's argument order."""
        return tuple(getattr(self, name) for name in ARGUMENT_ORDER)

    def replace(self, **changes: Any) -> AttentionProblem:
        """A copy with some arrays replaced."""
        return dataclasses.replace(self, **changes)

    def values(self) -> Array:
        """V = omega_v X + beta_v 1^T (eq. 12.2), computed in float64 on the law's side."""
        return self.omega_v @ self.X + self.beta_v

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
