"""Support of the benchmarks (regression/test_benchmarks.py): the BLAS numpy uses and its threads, the machine's
measured rates, and the table of each timing group's ratios to the floor, the limit and the FLOP floor, printed
after a benchmark run.

The limit of a group is floor + exp: the five matrix products plus one in-place exp over the N^2 logits, each
timed as numpy runs them. A cache-blocked implementation can beat it (its exp runs in cache, its products in
slabs), so beside it the FLOP floor is computed from rates measured in the same run: the products' FLOPs at the
rate of a large GEMM in the group's dtype, and one exp per logit at numpy's rate for np.exp(a, out=b).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

# group -> implementation name -> median seconds, filled by the benchmarks of this run.
MEDIANS = pytest.StashKey[dict[str, dict[str, float]]]()
# group -> the FLOP floor of that group in seconds (flop_floor), filled by the benchmarks of this run.
FLOP_FLOORS = pytest.StashKey[dict[str, float]]()
# dtype name -> the machine's measured rates, measured once a run (measured_rates).
RATES = pytest.StashKey[dict[str, "Rates"]]()
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def blas_info() -> dict[str, Any]:
    """numpy's BLAS: name and version (numpy's build configuration) and the threads it runs.

    The threads come from threadpoolctl when it is importable (not a dependency), else from the first of
    OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS, BLIS_NUM_THREADS that is set; with none set, the
    BLAS picks its own number (OpenBLAS and MKL: one per core), recorded as None.
    """
    build = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    info: dict[str, Any] = {"name": build.get("name"), "version": build.get("version"), "cores": os.cpu_count()}
    try:
        from threadpoolctl import threadpool_info  # optional: only when the user has it
    except ImportError:
        pinned = next(((name, os.environ[name]) for name in THREAD_VARIABLES if os.environ.get(name)), None)
        info["threads"] = int(pinned[1]) if pinned and pinned[1].isdigit() else None
        info["threads_from"] = f"{pinned[0]}={pinned[1]}" if pinned else "not pinned"
        return info
    pools = [pool for pool in threadpool_info() if pool.get("user_api") == "blas"]
    info["threads"] = pools[0]["num_threads"] if pools else None
    info["threads_from"] = "threadpoolctl"
    return info


def blas_line(info: dict[str, Any]) -> str:
    """One line for the run's header."""
    threads = "the BLAS's default" if info["threads"] is None else info["threads"]
    return (
        f"BLAS: {info['name']} {info['version']}, threads: {threads} ({info['threads_from']}), "
        f"cores: {info['cores']}; compare ratios, not times, across machines"
    )


def record_median(config: pytest.Config, group: str, name: str, benchmark: Any) -> None:
    """Keep the median of a finished benchmark for the ratio table (nothing under --benchmark-disable)."""
    if benchmark.stats is not None:
        config.stash.setdefault(MEDIANS, {}).setdefault(group, {})[name] = benchmark.stats.stats.median


@dataclass(frozen=True)
class Rates:
    """The machine's measured rates in one dtype: a large GEMM's FLOP/s and np.exp's elements/s."""

    gemm_flops_per_second: float
    exp_elements_per_second: float

    def as_info(self) -> dict[str, float]:
        """For extra_info and the JSON: GFLOP/s and exp elements per ns."""
        return {"gemm_GFLOP_per_s": self.gemm_flops_per_second / 1e9, "exp_per_ns": self.exp_elements_per_second / 1e9}


def product_flops(N: int, D: int) -> int:
    """FLOPs of the products of self-attention at D_q = D_v = D: the three projections (2 D^2 N each) and the
    two N^2 D products K^T Q and V A (2 N^2 D each); additions of biases and the softmax's own arithmetic
    beyond its exp are left out, so that the floor stays a lower bound."""
    return 3 * 2 * D * D * N + 2 * 2 * N * N * D


def flop_floor(N: int, D: int, rates: Rates) -> float:
    """Seconds that no implementation on this machine beats: the products' FLOPs at the GEMM rate plus one exp
    per logit (N^2) at numpy's exp rate."""
    return product_flops(N, D) / rates.gemm_flops_per_second + N * N / rates.exp_elements_per_second


def best_seconds(run: Any, repeats: int) -> float:
    """The shortest of `repeats` timings of run() after one untimed call (the fastest is the machine's rate)."""
    run()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        timings.append(time.perf_counter() - started)
    return min(timings)


def measured_rates(dtype: Any, gemm_size: int = 1024, exp_elements: int = 1 << 20, repeats: int = 5) -> Rates:
    """The rates of this machine in `dtype`, as numpy runs them here (BLAS threads as set for the run): a square
    GEMM of gemm_size (2 n^3 FLOPs, into a preallocated output) and np.exp(a, out=b) over exp_elements
    (2^20: 8 MiB of float64, in the last-level cache as the reference's slabs are, and far beyond the call's
    fixed cost); the best of `repeats` timings each."""
    rng = np.random.default_rng(3)
    a, b = (rng.standard_normal((gemm_size, gemm_size)).astype(dtype) for _ in range(2))
    product = np.empty_like(a)
    gemm = best_seconds(lambda: np.matmul(a, b, out=product), repeats)
    logits = rng.standard_normal(exp_elements).astype(dtype)  # of order one, as the benchmarks' logits
    weights = np.empty_like(logits)
    exp = best_seconds(lambda: np.exp(logits, out=weights), repeats)
    return Rates(2 * gemm_size**3 / gemm, exp_elements / exp)


def ratios(
    medians: dict[str, dict[str, float]], flop_floors: dict[str, float] | None = None
) -> dict[str, dict[str, dict[str, float]]]:
    """group -> implementation -> {"floor": median / floor, "limit": median / (floor + exp)} and, when the
    group has one, "flop_floor": median / FLOP floor, for the groups that have both a floor and an exp."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for group, row in medians.items():
        if "floor" in row and "exp" in row:
            limit = row["floor"] + row["exp"]
            flop = (flop_floors or {}).get(group)
            table[group] = {
                name: {"floor": median / row["floor"], "limit": median / limit}
                | ({} if flop is None else {"flop_floor": median / flop})
                for name, median in row.items()
                if name not in ("floor", "exp")
            }
    return table


def ratio_lines(medians: dict[str, dict[str, float]], flop_floors: dict[str, float] | None = None) -> list[str]:
    """The ratio table as text: per group the floor, the limit and the FLOP floor in ms, then each
    implementation's median / floor, median / limit and median / FLOP floor."""
    table = ratios(medians, flop_floors)
    lines = []
    for group, row in table.items():
        floor, exp = medians[group]["floor"], medians[group]["exp"]
        flop = (flop_floors or {}).get(group)
        flop_cell = "" if flop is None else f"  FLOP floor {flop * 1e3:8.2f} ms"
        cells = "  ".join(
            f"{name} " + "/".join(f"{r[key]:.2f}" for key in ("floor", "limit", "flop_floor") if key in r)
            for name, r in row.items()
        )
        lines.append(
            f"{group:<20} floor {floor * 1e3:8.2f} ms  limit {(floor + exp) * 1e3:8.2f} ms{flop_cell}  {cells}".rstrip()
        )
    if lines:
        lines.insert(
            0,
            "ratios of medians, this run: implementation median/floor / median/limit / median/FLOP floor "
            "(limit = floor + exp; FLOP floor = products at the GEMM rate + N^2 exps at the exp rate)",
        )
    return lines


def rate_lines(rates: dict[str, Rates]) -> list[str]:
    """The measured rates, one line per dtype."""
    return [
        f"{dtype}: GEMM {r.gemm_flops_per_second / 1e9:.1f} GFLOP/s, np.exp {r.exp_elements_per_second / 1e9:.3f} "
        "elements/ns (best of 5, this run)"
        for dtype, r in rates.items()
    ]


def run_rates(config: pytest.Config, dtype: Any) -> Rates:
    """The rates of this run in `dtype`, measured on first use and kept for the rest of the run."""
    rates = config.stash.setdefault(RATES, {})
    name = np.dtype(dtype).name
    if name not in rates:
        rates[name] = measured_rates(dtype)
    return rates[name]


def record_flop_floor(config: pytest.Config, group: str, N: int, D: int, dtype: Any, benchmark: Any) -> None:
    """The group's FLOP floor (this run's rates in `dtype`) into the ratio table and the benchmark's extra_info."""
    rates = run_rates(config, dtype)
    floor = flop_floor(N, D, rates)
    config.stash.setdefault(FLOP_FLOORS, {})[group] = floor
    benchmark.extra_info.update(flop_floor_ms=floor * 1e3, rates=rates.as_info())
