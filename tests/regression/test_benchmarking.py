"""The benchmarks' support (regression/benchmarking.py): the FLOP floor from the measured rates and the ratio table."""

from __future__ import annotations

import numpy as np
import pytest

from regression.benchmarking import Rates, flop_floor, measured_rates, product_flops, ratio_lines, ratios


def test_product_flops_counts_the_projections_and_the_two_n2d_products() -> None:
    N, D = 1000, 64
    projections = 3 * (2 * D * D * N)  # omega_q X, omega_k X, omega_v X
    logits_and_weighted_sum = 2 * (2 * N * N * D)  # K^T Q and V A
    assert product_flops(N, D) == projections + logits_and_weighted_sum


def test_flop_floor_is_the_products_at_the_gemm_rate_plus_one_exp_per_logit_at_the_exp_rate() -> None:
    rates = Rates(gemm_flops_per_second=50e9, exp_elements_per_second=2e9)
    N, D = 4096, 64
    expected = (6 * D * D * N + 4 * N * N * D) / 50e9 + N * N / 2e9
    assert flop_floor(N, D, rates) == pytest.approx(expected, rel=1e-15)
    # twice the rates, half the floor; the exp term alone scales with the exp rate
    faster = Rates(100e9, 4e9)
    assert flop_floor(N, D, faster) == pytest.approx(expected / 2, rel=1e-15)
    only_exp_faster = Rates(50e9, 4e9)
    assert flop_floor(N, D, rates) - flop_floor(N, D, only_exp_faster) == pytest.approx(N * N / 4e9, rel=1e-12)


def test_ratios_and_lines_divide_each_median_by_the_floor_the_limit_and_the_flop_floor() -> None:
    medians = {"g": {"floor": 2.0, "exp": 0.5, "full": 3.0}, "backward g": {"floor": 1.0, "exp": 1.0, "reference": 4.0}}
    table = ratios(medians, {"g": 1.5})
    assert table["g"]["full"] == {"floor": 1.5, "limit": 3.0 / 2.5, "flop_floor": 2.0}
    assert table["backward g"]["reference"] == {"floor": 4.0, "limit": 2.0}  # no FLOP floor for that group
    lines = ratio_lines(medians, {"g": 1.5})
    assert "FLOP floor  1500.00 ms" in lines[1] and "full 1.50/1.20/2.00" in lines[1]
    assert "FLOP floor" not in lines[2] and "reference 4.00/2.00" in lines[2]


def test_measured_rates_are_positive_and_finite() -> None:
    rates = measured_rates(np.float32, gemm_size=64, exp_elements=1 << 12, repeats=1)
    assert 0 < rates.gemm_flops_per_second < np.inf and 0 < rates.exp_elements_per_second < np.inf
