"""Benchmark hooks (pytest-benchmark): the BLAS in the run's header and in the JSON's machine info, the
table of ratios to the floor, the limit and the FLOP floor after the run (with the measured rates), and
--blas-threads."""

from __future__ import annotations

from typing import Any

import pytest

from regression.benchmarking import FLOP_FLOORS, MEDIANS, RATES, blas_info, blas_line, rate_lines, ratio_lines, ratios

LIMITER = pytest.StashKey[Any]()  # threadpoolctl's limiter under --blas-threads, restored at the end


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("attention", "attention-properties").addoption(
        "--blas-threads",
        type=int,
        default=None,
        metavar="N",
        help="limit numpy's BLAS to N threads for the run (needs threadpoolctl; else set OPENBLAS_NUM_THREADS)",
    )


def _benchmarks_run(config: pytest.Config) -> bool:
    return bool(config.getoption("benchmark_only", False) or not config.getoption("benchmark_skip", False))


def pytest_configure(config: pytest.Config) -> None:
    threads = config.getoption("--blas-threads", None)
    if threads is None:
        return
    try:
        from threadpoolctl import threadpool_limits  # optional, not a dependency
    except ImportError:
        raise pytest.UsageError(
            "--blas-threads needs threadpoolctl (pip install threadpoolctl); without it, set the BLAS's "
            "variable before Python starts, e.g. OPENBLAS_NUM_THREADS=1 pytest regression --benchmark-only"
        ) from None
    config.stash[LIMITER] = threadpool_limits(limits=threads, user_api="blas")


def pytest_unconfigure(config: pytest.Config) -> None:
    limiter = config.stash.get(LIMITER, None)
    if limiter is not None:
        limiter.restore_original_limits()


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [blas_line(blas_info())] if _benchmarks_run(config) else []


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    machine_info["blas"] = blas_info()


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list[Any], output_json: dict[str, Any]) -> None:
    output_json["attention_ratios"] = ratios(config.stash.get(MEDIANS, {}), config.stash.get(FLOP_FLOORS, {}))
    output_json["attention_rates"] = {dtype: r.as_info() for dtype, r in config.stash.get(RATES, {}).items()}


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = ratio_lines(config.stash.get(MEDIANS, {}), config.stash.get(FLOP_FLOORS, {}))
    if lines:
        lines += rate_lines(config.stash.get(RATES, {}))
        terminalreporter.section("attention benchmarks")
        for line in lines:
            terminalreporter.write_line(line)
