"""The reference's ratio to the limit measured round-robin, for a host whose speed drifts between benchmarks:

    python tools/interleaved_ratios.py                 # N = 1024 and 4096, float32 and float64
    python tools/interleaved_ratios.py --rounds 51 --sizes 1024

pytest-benchmark times each benchmark's rounds one after the other, so a host that slows down between the floor's
rounds and the reference's (a shared machine: its GEMM and exp rates moved by 2x within half an hour on
2026-12-02) moves a ratio of medians by as much. Here each round times the floor, the exp, full and blockwise once,
on the inputs and functions of regression/test_benchmarks.py, and a round's ratio is full / (floor + exp) of that
round: drift slower than a round cancels. Printed: the median ratio over the rounds and its interquartile range.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from attention import blockwise_scaled_dot_product_self_attention, scaled_dot_product_self_attention
from regression.test_benchmarks import blas_floor, problem_arrays


def seconds(function: Callable[[], Any]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def ratios(N: int, dtype: Any, rounds: int) -> dict[str, list[float]]:
    """Per round, full / limit and blockwise / limit (limit = floor + one in-place exp over N^2 logits)."""
    arrays = problem_arrays(N, dtype)
    logits = np.random.default_rng(1).standard_normal((N, N)).astype(dtype)
    out = np.empty_like(logits)
    timed: dict[str, Callable[[], Any]] = {
        "floor": lambda: blas_floor(*arrays),
        "exp": lambda: np.exp(logits, out=out),
        "full": lambda: scaled_dot_product_self_attention(*arrays),
        "blockwise": lambda: blockwise_scaled_dot_product_self_attention(*arrays),
    }
    for function in timed.values():  # warm up: allocations, BLAS threads, caches
        function()
    found: dict[str, list[float]] = {"full": [], "blockwise": []}
    for _ in range(rounds):
        took = {name: seconds(function) for name, function in timed.items()}
        limit = took["floor"] + took["exp"]
        for name in found:
            found[name].append(took[name] / limit)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--rounds", type=int, default=0, help="rounds a size (default: 31 at N <= 1024, 9 above)")
    arguments = parser.parse_args()
    for dtype in (np.float32, np.float64):
        for N in arguments.sizes:
            rounds = arguments.rounds or (31 if N <= 1024 else 9)
            found = ratios(N, dtype, rounds)
            cells = [
                f"{name} / limit {np.median(r):.2f} (IQR {np.percentile(r, 25):.2f}-{np.percentile(r, 75):.2f})"
                for name, r in found.items()
            ]
            print(f"{np.dtype(dtype).name} N={N} ({rounds} rounds): " + ", ".join(cells))


if __name__ == "__main__":
    main()
