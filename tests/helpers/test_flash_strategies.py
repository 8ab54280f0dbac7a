"""The flash strategies reach the edges the laws are for: block boundaries, queries that see no key, a window's
edges and FlashAttention 2's finite right side (L > S + 1), empty packed sequences, per-sequence ALiBi slopes."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings

from properties.helpers.flash_convention import window_readings
from properties.helpers.flash_strategies import (
    packed_batches,
    packed_batches_with_score_modifications,
    problems_with_empty_rows,
    problems_with_logit_shifts,
    problems_with_masks,
    problems_with_windows,
)


@functools.cache
def drawn(factory: Any, count: int = 80) -> list[Any]:
    """`count` derandomised draws of the strategy factory() (no shrinking, no database), drawn once a test run."""
    strategy = factory()
    seen: list[Any] = []

    @settings(max_examples=count, database=None, derandomize=True, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy)
    def collect(value: Any) -> None:
        seen.append(value)

    collect()
    return seen


def reaches(factory: Any, condition: Any) -> None:
    assert any(condition(value) for value in drawn(factory)), "no draw of 80 meets the condition"


def test_windows_reach_their_edges_and_flashattention_2s_other_reading() -> None:
    reaches(problems_with_windows, lambda c: c.window[0] == 0 and c.window[1] == 0)
    reaches(problems_with_windows, lambda c: c.window[1] == max(c.problem.L, c.problem.S) + 1)
    reaches(problems_with_windows, lambda c: len(window_readings(c.problem.L, c.problem.S, c.window)) == 2)


def test_every_empty_row_case_has_queries_without_keys_under_both_alignments() -> None:
    """No draw of problems_with_empty_rows (of 100) lacks a query that sees no key, bottom-right or top-left."""
    for alignment in ("bottom-right", "top-left"):

        def without_empty_rows(c: Any, alignment: str = alignment) -> bool:
            readings = window_readings(c.problem.L, c.problem.S, c.window, alignment=alignment)
            return not np.logical_and.reduce([~r.any(axis=1) for r in readings]).any()

        assert not any(without_empty_rows(case) for case in drawn(problems_with_empty_rows)), alignment


def test_lse_strategies_reach_masks_alibi_and_rows_without_keys() -> None:
    reaches(problems_with_logit_shifts, lambda c: c.masking.causal and c.masking.slopes is not None)
    reaches(problems_with_masks, lambda c: c.masking.window != (-1, -1) and c.softcap > 0)
    reaches(
        problems_with_masks,
        lambda c: (
            not np.logical_and.reduce(
                [
                    r.any(axis=1)
                    for r in window_readings(c.problem.L, c.problem.S, c.masking.window, causal=c.masking.causal)
                ]
            ).all()
        ),
    )


def test_packed_batches_reach_empty_sequences_block_sizes_and_per_sequence_slopes() -> None:
    reaches(packed_batches, lambda p: (np.diff(p.cu_seqlens_q) == 0).any() and (np.diff(p.cu_seqlens_k) == 17).any())
    reaches(packed_batches, lambda p: p.causal and p.window != (-1, -1))
    reaches(packed_batches_with_score_modifications, lambda p: p.slopes is not None and p.slopes.ndim == 2)
    reaches(packed_batches_with_score_modifications, lambda p: p.sinks is not None and p.softcap > 0)
