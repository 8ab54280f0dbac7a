"""Benchmarks of the reference backward (pytest-benchmark), skipped by the default run:
`pytest regression --benchmark-only -k backward`.

Each group (backward, dtype, N) times at D = 64: `floor`, the four N^2 D matrix products of a backward that is
given P (dV = dX' P^T, dP = V^T dX', dQ = K dS, dK = Q dS^T) and nothing else; `exp`, one in-place exp over the
N^2 logits (floor + exp is the group's limit); and `reference`, scaled_dot_product_self_attention_vjp, which also
recomputes the logits K^T Q (a fifth N^2 D product) and runs the softmax and dS passes over N^2 entries. The ratio
table after the run (regression/conftest.py) gives median / floor and median / limit. With `--backward TARGET`
(and the forward's --impl TARGET) every group also times `backward`, the backward under test, on the same problem:
in the notebook's convention backward(X, omega_v, ..., beta_k, d_X_prime), under --convention sdpa
backward(query, key, value, d_out) on (1, 1, N, D) rows (q = (omega_q X + beta_q)^T, likewise k, v).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from attention import scaled_dot_product_self_attention_vjp
from properties.helpers.loading import load_function
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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every backward group gets the backward under test too when --backward TARGET is given."""
    if metafunc.function.__name__ == "test_benchmark_backward":
        extra = ["backward"] if metafunc.config.getoption("--backward") else []
        metafunc.parametrize("name", ["floor", "exp", "reference", *extra])


def backward_under_test(pytestconfig: pytest.Config, arrays: list[Any], dX_prime: Any) -> tuple[Any, tuple[Any, ...]]:
    """The --backward TARGET and its arguments on the group's problem, in its convention."""
    function = load_function(pytestconfig.getoption("--backward"))
    if pytestconfig.getoption("--convention") != "sdpa":
        return function, (*arrays, dX_prime)
    X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k = arrays
    rows = [np.ascontiguousarray((w @ X + c).T)[None, None] for w, c in ((omega_q, beta_q), (omega_k, beta_k),
                                                                          (omega_v, beta_v))]  # fmt: skip
    return function, (*rows, np.ascontiguousarray(dX_prime.T)[None, None])


@pytest.mark.parametrize("N", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_benchmark_backward(benchmark: Any, pytestconfig: pytest.Config, name: str, N: int, dtype: Any) -> None:
    arrays = problem_arrays(N, dtype)
    rng = np.random.default_rng(2)
    dX_prime = rng.standard_normal((D, N)).astype(dtype)
    benchmark.group = group_of(dtype, N)
    target = pytestconfig.getoption("--backward") if name == "backward" else None
    benchmark.extra_info.update(implementation=target or name, N=N, D=D, dtype=np.dtype(dtype).name,
                                blas=blas_info())  # fmt: skip
    if name == "backward":
        function, arguments = backward_under_test(pytestconfig, arrays, dX_prime)
        benchmark(function, *arguments)
    elif name == "reference":
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
