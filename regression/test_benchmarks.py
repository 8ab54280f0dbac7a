"""Benchmarks (pytest-benchmark), skipped by the default run: `pytest regression --benchmark-only`.

Each group (dtype, N) compares, side by side at D = 64: the reference (full, returns the attention matrix),
the blockwise reference (X' only), a naive notebook-style implementation, and the BLAS floor (the five
matrix products alone: three projections, K^T Q and V A). Compare runs with --benchmark-autosave and
--benchmark-compare.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from attention import blockwise_scaled_dot_product_self_attention, scaled_dot_product_self_attention
from properties.implementation import REFERENCE

pytestmark = pytest.mark.benchmark  # measurements, not laws: attention-check leaves them out
D = 64
SIZES = (256, 1024, 4096)
DTYPES = (np.float32, np.float64)


def blas_floor(X: Any, omega_v: Any, omega_q: Any, omega_k: Any, beta_v: Any, beta_q: Any, beta_k: Any) -> Any:
    """The five matrix products and nothing else: no bias, scale, softmax or checks."""
    Q, K, V = omega_q @ X, omega_k @ X, omega_v @ X
    return V @ (K.T @ Q)


def notebook_style(X: Any, omega_v: Any, omega_q: Any, omega_k: Any, beta_v: Any, beta_q: Any, beta_k: Any) -> Any:
    """As a student writes it from the notebook: softmax_cols with the denominator replicated by a matmul."""
    queries, keys, values = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
    dot_products = keys.T @ queries / np.sqrt(omega_q.shape[0])
    exp_values = np.exp(dot_products)
    denom = np.sum(exp_values, axis=0)
    denom = np.matmul(np.ones((dot_products.shape[0], 1), dtype=X.dtype), denom[np.newaxis, :])
    return values @ (exp_values / denom)


IMPLEMENTATIONS: dict[str, Callable[..., Any]] = {
    "floor": blas_floor,
    "full": scaled_dot_product_self_attention,
    "blockwise": blockwise_scaled_dot_product_self_attention,
    "naive": notebook_style,
}


def problem_arrays(N: int, dtype: Any, seed: int = 0) -> list[Any]:
    """Inputs of unit size and weights scaled by 1/sqrt(D): logits of order one, as in a trained model."""
    rng = np.random.default_rng(seed)
    shapes = [(D, N), (D, D), (D, D), (D, D), (D, 1), (D, 1), (D, 1)]
    return [
        (rng.standard_normal(shape) / (1 if i == 0 else np.sqrt(D))).astype(dtype) for i, shape in enumerate(shapes)
    ]


@pytest.mark.parametrize("name", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("N", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_benchmark_attention(benchmark: Any, name: str, N: int, dtype: Any) -> None:
    benchmark.group = f"{np.dtype(dtype).name} N={N} D={D}"
    benchmark.extra_info.update(implementation=name, N=N, D=D, dtype=np.dtype(dtype).name)
    benchmark(IMPLEMENTATIONS[name], *problem_arrays(N, dtype))


def test_benchmark_blockwise_memory_at_32768(benchmark: Any) -> None:
    """Blockwise at N = 32768, D = 64, float64: peak memory beyond the inputs (the full matrix would need 8 GiB)."""
    arrays = problem_arrays(32768, np.float64)

    def run() -> int:
        tracemalloc.start()
        blockwise_scaled_dot_product_self_attention(*arrays)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    benchmark.group = "blockwise memory N=32768 D=64"
    peak = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["peak_MiB_beyond_inputs"] = peak / 2**20
    assert peak < 256 * 2**20, f"blockwise used {peak / 2**20:.1f} MiB beyond its inputs"


def test_benchmark_battery_examples_per_second(benchmark: Any) -> None:
    """Examples the dev profile checks per second, for one law (equivariance) on the reference."""
    from hypothesis import settings

    from properties import test_equivariance

    law = test_equivariance.test_output_is_equivariant_under_column_permutations
    examples = settings.get_profile("dev").max_examples
    benchmark.group = "battery"
    benchmark(law, implementation=REFERENCE["scaled"])
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["examples_per_second"] = examples / benchmark.stats.stats.mean
