"""Benchmarks (pytest-benchmark), skipped by the default run: `pytest regression --benchmark-only`.

Each group (dtype, N) times side by side, at D = 64: `floor`, the five matrix products alone (three
projections, K^T Q and V A); `exp`, one in-place exp over the N^2 logits (floor + exp is the group's limit,
what no numpy implementation avoids); the reference (`full`, which returns the attention matrix), the
blockwise reference (`blockwise`, X' only), a notebook-style implementation (`naive`) and, with
`--impl TARGET`, the implementation under test (`impl`). After the run each group's ratios to the floor, to
the limit and to the FLOP floor (the products' FLOPs and N^2 exps at rates measured in the run,
regression/benchmarking.py) are printed (regression/conftest.py). Then the checker itself: the wall time of
`attention-check`, and the examples per second of each law on the reference.
"""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _pytest.outcomes import Skipped
from hypothesis import settings

from attention import (
    blockwise_scaled_dot_product_self_attention,
    scaled_dot_product_attention_backward,
    scaled_dot_product_self_attention,
    sinusoidal_positional_encoding,
)
from attention.rows import scaled_dot_product_attention
from properties.catalogues import registry
from properties.helpers.backward import RowBackward
from properties.helpers.hypothesis_internals import is_hypothesis_test, wrapped_body
from properties.helpers.implementations import Implementation
from properties.helpers.loading import load_function
from properties.helpers.options import ROW_BACKWARD_TARGET, SDPA_REFERENCE_TARGET
from regression.benchmarking import blas_info, record_flop_floor, record_median

pytestmark = pytest.mark.benchmark  # measurements, not laws: attention-check leaves them out
D = 64
SIZES = (256, 1024, 4096)
DTYPES = (np.float32, np.float64)
REFERENCE_TARGET = "attention:scaled_dot_product_self_attention"


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


def group_of(dtype: Any, N: int) -> str:
    return f"{np.dtype(dtype).name} N={N} D={D}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every timing group gets the implementation under test too when --impl TARGET is given."""
    if metafunc.function is test_benchmark_attention:
        names = [*IMPLEMENTATIONS, *(["impl"] if metafunc.config.getoption("--impl") else [])]
        metafunc.parametrize("name", names)


@pytest.fixture(scope="module")
def under_test(pytestconfig: pytest.Config) -> Callable[..., Any] | None:
    """The --impl TARGET function (notebook signature), or None."""
    target = pytestconfig.getoption("--impl")
    return load_function(target) if target else None


@pytest.mark.parametrize("N", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_benchmark_attention(
    benchmark: Any,
    pytestconfig: pytest.Config,
    under_test: Callable[..., Any] | None,
    name: str,
    N: int,
    dtype: Any,
) -> None:
    function = under_test if name == "impl" else IMPLEMENTATIONS[name]
    assert function is not None
    benchmark.group = group_of(dtype, N)
    target = pytestconfig.getoption("--impl") if name == "impl" else None
    benchmark.extra_info.update(implementation=target or name, N=N, D=D, dtype=np.dtype(dtype).name, blas=blas_info())
    record_flop_floor(pytestconfig, benchmark.group, N, D, dtype, benchmark)
    benchmark(function, *problem_arrays(N, dtype))
    record_median(pytestconfig, benchmark.group, name, benchmark)


@pytest.mark.parametrize("N", SIZES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_benchmark_exp(benchmark: Any, pytestconfig: pytest.Config, N: int, dtype: Any) -> None:
    """One in-place exp over N^2 logits of order one (each round on a fresh copy, made outside the timing)."""
    logits = np.random.default_rng(1).standard_normal((N, N)).astype(dtype)

    def fresh_copy() -> tuple[tuple[Any, ...], dict[str, Any]]:
        copy = logits.copy()
        return (copy,), {"out": copy}

    benchmark.group = group_of(dtype, N)
    benchmark.extra_info.update(implementation="exp", N=N, D=D, dtype=np.dtype(dtype).name, blas=blas_info())
    record_flop_floor(pytestconfig, benchmark.group, N, D, dtype, benchmark)
    # pedantic: a fresh copy each round; more rounds for the smaller sizes, whose timings are shorter.
    rounds = pytestconfig.getoption("benchmark_min_rounds") * max(1, (SIZES[-1] // N) ** 2 // 4)
    benchmark.pedantic(np.exp, setup=fresh_copy, rounds=rounds)
    record_median(pytestconfig, benchmark.group, "exp", benchmark)


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


def hypothesis_laws() -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """(id, law, parameters) for every hypothesis law of properties/ and each of its parametrisations, through the
    registry: the forward laws, the row-convention and rectangular kernels' laws, the gradient laws."""
    for law in registry.laws():
        if law.module.startswith("properties.") and is_hypothesis_test(law.function):
            for parameters in registry.parametrizations(law.function):
                suffix = "".join(f"[{getattr(v, '__name__', v)}]" for v in parameters.values())
                yield law.name.removeprefix("test_") + suffix, law.function, parameters


LAWS = list(hypothesis_laws())
# The bundled functions a law checks, by fixture: the scaled reference and its own backward pass; the kernels
# (kernel, flash, varlen, merge, softmax, multihead) come from the plugin's fixtures, the bundled ones here.
REFERENCE = Implementation(load_function(REFERENCE_TARGET), "scaled", REFERENCE_TARGET)
REFERENCE_BACKWARD = RowBackward(scaled_dot_product_attention_backward, ROW_BACKWARD_TARGET,
                                 scaled_dot_product_attention, SDPA_REFERENCE_TARGET, "scaled")  # fmt: skip


@pytest.fixture
def dev_profile() -> Iterator[None]:
    """The dev profile (20 examples a law) for the duration of a test, whatever profile the run uses."""
    previous = settings.get_current_profile_name()
    settings.load_profile("dev")
    yield
    settings.load_profile(previous)


@pytest.mark.usefixtures("dev_profile")
@pytest.mark.parametrize(("law", "parameters"), [(law, parameters) for _, law, parameters in LAWS],
                         ids=[name for name, _, _ in LAWS])  # fmt: skip
def test_benchmark_law_examples_per_second(
    benchmark: Any, request: pytest.FixtureRequest, law: Any, parameters: dict[str, Any]
) -> None:
    """Examples per second of one law on the bundled reference (dev profile): the battery's own speed."""
    own = {"implementation": REFERENCE, "backward": REFERENCE_BACKWARD, "encoding": sinusoidal_positional_encoding}
    needed = registry.fixtures_of(law, parameters)
    fixtures = {name: own[name] if name in own else request.getfixturevalue(name) for name in needed}
    examples, skipped = 0, ""

    def counting(inner: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal examples
            examples += 1
            return inner(*args, **kwargs)

        return counted

    def run() -> None:
        nonlocal skipped
        try:
            law(**fixtures, **parameters)
        except Skipped as skip:  # a round without data would break pytest-benchmark's report and --benchmark-save
            skipped = str(skip)

    with wrapped_body(law, counting):
        benchmark.group = "battery: one law, dev profile, on the reference"
        # One round a law keeps the run short; --benchmark-compare still sees each law's time.
        started = time.perf_counter()
        benchmark.pedantic(run, rounds=1, iterations=1)
        elapsed = time.perf_counter() - started
    benchmark.extra_info.update(examples=examples, examples_per_second=examples / elapsed)
    if skipped:
        pytest.skip(skipped)


def test_benchmark_attention_check(benchmark: Any, tmp_path: Path) -> None:
    """Wall time of `attention-check --only hygiene,golden` on the reference, in a subprocess as a user runs it."""
    command = [sys.executable, "-m", "properties.checker.cli", "--only", "hygiene,golden", "--profile", "dev"]

    def run() -> int:
        return subprocess.run(command, cwd=tmp_path, capture_output=True, check=False).returncode

    benchmark.group = "battery: attention-check --only hygiene,golden, on the reference"
    benchmark.extra_info["command"] = "attention-check --only hygiene,golden (dev profile)"
    returncode = benchmark.pedantic(run, rounds=1, iterations=1)
    assert returncode == 0, f"attention-check failed on the reference: exit {returncode}"
