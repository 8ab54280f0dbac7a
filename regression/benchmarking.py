"""Support of the benchmarks (regression/test_benchmarks.py): the BLAS numpy uses and its threads, and the
table of each timing group's ratios to the floor and to the limit, printed after a benchmark run.

The limit of a group is floor + exp: the five matrix products plus one in-place exp over the N^2 logits,
which no numpy implementation of softmax attention avoids.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

# group -> implementation name -> median seconds, filled by the benchmarks of this run.
MEDIANS = pytest.StashKey[dict[str, dict[str, float]]]()
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


def ratios(medians: dict[str, dict[str, float]]) -> dict[str, dict[str, dict[str, float]]]:
    """group -> implementation -> {"floor": median / floor, "limit": median / (floor + exp)}, for the groups
    that have both a floor and an exp."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for group, row in medians.items():
        if "floor" in row and "exp" in row:
            limit = row["floor"] + row["exp"]
            table[group] = {
                name: {"floor": median / row["floor"], "limit": median / limit}
                for name, median in row.items()
                if name not in ("floor", "exp")
            }
    return table


def ratio_lines(medians: dict[str, dict[str, float]]) -> list[str]:
    """The ratio table as text: per group the floor and the limit in ms, then each implementation's
    median / floor and median / limit."""
    table = ratios(medians)
    lines = []
    for group, row in table.items():
        floor, exp = medians[group]["floor"], medians[group]["exp"]
        cells = "  ".join(f"{name} {r['floor']:.2f}/{r['limit']:.2f}" for name, r in row.items())
        lines.append(f"{group:<20} floor {floor * 1e3:8.2f} ms  limit {(floor + exp) * 1e3:8.2f} ms  {cells}".rstrip())
    if lines:
        lines.insert(0, "ratios of medians, this run: implementation median/floor / median/limit (limit = floor + exp)")
    return lines
