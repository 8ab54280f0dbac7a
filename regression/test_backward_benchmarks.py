"""Benchmarks of the reference backward (pytest-benchmark), skipped by the default run:
`pytest regression --benchmark-only -k backward`.

Each group (backward, dtype, N) times at D = 64: `floor`, the four N^2 D matrix products of a backward that is
given P (dV = dX' P^T, dP = V^T dX', dQ = K dS, dK = Q dS^T) and nothing else; `exp`, one in-place exp over the
N^2 logits (floor + exp is the group's limit); and `reference`, scaled_dot_product_self_attention_vjp, which also
recomputes the logits K^T Q (a fifth N^2 D product) and runs the softmax and dS passes over N^2 entries. The ratio
table after the run (regression/conftest.py) gives median / floor and median / limit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from attention import scaled_dot_product_self_attention_vjp
from regression.benchmarking import blas_info, record_median
from regression.test_benchmarks import D, problem_arrays

pytestmark = pytest.mark.benchmark
SIZES = (1024, 4096)
DTYPES = (np.float32, np.float64)


def group_of(dtype: Any, N: int) -> str:
    return f"backward {np.dtype(dtype).name} N={N} D={D}"


def backward_floor(P: Any, dX_prime: Any, Q: Any, K: Any, V: Any) -> Any:
    """The four N^2 D products of a backward given P, with dP standing in for dS (no softmax pass)."""
    dV = dX_prime @ P.T
    dP = V.T @ dX_prime
    return dV, K @ dP, Q @ dP.T


@pytest.mark.parametrize("N", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", ["floor", "exp", "reference"])
def test_benchmark_backward(benchmark: Any, pytestconfig: pytest.Config, name: str, N: int, dtype: Any) -> None:
    arrays = problem_arrays(N, dtype)
    rng = np.random.default_rng(2)
    dX_prime = rng.standard_normal((D, N)).astype(dtype)
    benchmark.group = group_of(dtype, N)
    benchmark.extra_info.update(implementation=name, N=N, D=D, dtype=np.dtype(dtype).name, blas=blas_info())
    if name == "reference":
        benchmark(scaled_dot_product_self_attention_vjp, *arrays, dX_prime)
    elif name == "floor":
        X, omega_v, omega_q, omega_k = arrays[:4]
        P = rng.random((N, N)).astype(dtype)
        benchmark(backward_floor, P, dX_prime, omega_q @ X, omega_k @ X, omega_v @ X)
    else:
        logits = rng.standard_normal((N, N)).astype(dtype)

        def fresh_copy() -> tuple[tuple[Any, ...], dict[str, Any]]:
            copy = logits.copy()
            return (copy,), {"out": copy}

        rounds = pytestconfig.getoption("benchmark_min_rounds") * max(1, (SIZES[-1] // N) ** 2 // 4)
        benchmark.pedantic(np.exp, setup=fresh_copy, rounds=rounds)
    record_median(pytestconfig, benchmark.group, name, benchmark)
