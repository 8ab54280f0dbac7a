"""The blockwise (online-softmax) reference against the full computation, for every block size."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attention import blockwise_scaled_dot_product_self_attention, scaled_dot_product_self_attention
from properties.catalogues import mistakes as b
from properties.helpers.checks import assert_close
from properties.helpers.implementations import Implementation
from properties.helpers.meta import assert_law_fails
from properties.helpers.problems import AttentionProblem
from properties.helpers.strategies import (
    attention_problems,
    large_logit_problems,
    long_examples,
    long_sequence_problems,
)

FULL = Implementation(scaled_dot_product_self_attention, "scaled", "attention:scaled_dot_product_self_attention")


def blockwise(function: Any, block_size: int) -> Implementation:
    def call(*arrays: Any) -> Any:
        return function(*arrays, block_size=block_size)

    return Implementation(call, "scaled", f"blockwise(block_size={block_size})")


@st.composite
def problems_with_block_sizes(draw: st.DrawFn) -> tuple[AttentionProblem, int]:
    problem = draw(st.one_of(attention_problems(), large_logit_problems()), label="problem")
    return problem, draw(st.integers(1, problem.N + 2), label="block_size")


@pytest.fixture(scope="session")
def blockwise_function() -> Any:
    """The blockwise implementation under test: the reference's."""
    return blockwise_scaled_dot_product_self_attention


@given(case=problems_with_block_sizes())
def test_blockwise_equals_the_full_computation(blockwise_function: Any, case: tuple[AttentionProblem, int]) -> None:
    """The online softmax over blocks gives the full X' for every block size (1, sizes that do not divide N,
    sizes above N), with ordinary and large logits: each rescaling by exp(m_old - m_new) is inside the
    forward-error bound of tolerances.ErrorBounds (its section 2)."""
    problem, block_size = case
    full, blocked = FULL(problem), blockwise(blockwise_function, block_size)(problem)
    bounds = FULL.bounds(problem, max(full.eps, blocked.eps))
    assert_close(
        blocked.X_prime, full.X_prime, (bounds + bounds).x_prime, what=f"blockwise X', block_size={block_size}"
    )


@settings(max_examples=long_examples())
@given(problem=long_sequence_problems(), block_size=st.sampled_from([16, 64, 512]))
def test_blockwise_equals_the_full_computation_on_long_sequences(
    blockwise_function: Any, problem: AttentionProblem, block_size: int
) -> None:
    """As above for N from 15 to 700 (partial last blocks, several query blocks; the full computation in two
    slabs beyond N = 512), with the block sizes of real kernels."""
    full, blocked = FULL(problem), blockwise(blockwise_function, block_size)(problem)
    bounds = FULL.bounds(problem, max(full.eps, blocked.eps))
    assert_close(
        blocked.X_prime, full.X_prime, (bounds + bounds).x_prime, what=f"blockwise X', block_size={block_size}"
    )


def no_rescaling(X: Any, omega_v: Any, omega_q: Any, omega_k: Any, beta_v: Any, beta_q: Any, beta_k: Any,
                 *, block_size: int) -> Any:  # fmt: skip
    """An online softmax that forgets to rescale the running sums when the running maximum grows."""
    scale = 1 / np.sqrt(omega_q.shape[0])
    Q, K, V = (omega_q @ X + beta_q) * scale, omega_k @ X + beta_k, omega_v @ X + beta_v
    N = X.shape[1]
    out = np.empty((V.shape[0], N))
    for q0 in range(0, N, block_size):
        q = Q[:, q0 : q0 + block_size]
        running_max = np.full(q.shape[1], -np.inf)
        total, acc = np.zeros(q.shape[1]), np.zeros((V.shape[0], q.shape[1]))
        for k0 in range(0, N, block_size):
            scores = K[:, k0 : k0 + block_size].T @ q
            running_max = np.maximum(running_max, scores.max(axis=0))
            weights = np.exp(scores - running_max)
            total += weights.sum(axis=0)
            acc += V[:, k0 : k0 + block_size] @ weights
        out[:, q0 : q0 + block_size] = acc / total
    return out


@pytest.mark.meta
def test_blockwise_equals_the_full_computation_catches_missing_rescaling() -> None:
    assert_law_fails(test_blockwise_equals_the_full_computation, blockwise_function=no_rescaling)


def dropped_tail(*arrays: Any, block_size: int) -> Any:
    """Skips the last partial block of keys (via properties.catalogues.mistakes's blocked kernel of tiles of 16)."""
    return b.blocked_dropping_the_tail_block(*arrays)


@pytest.mark.meta
@pytest.mark.filterwarnings("ignore:Generating overly large repr")  # a long example prints as ~35 kB of code
def test_blockwise_on_long_sequences_catches_a_dropped_tail_block() -> None:
    assert_law_fails(test_blockwise_equals_the_full_computation_on_long_sequences, blockwise_function=dropped_tail)


@pytest.mark.parametrize(("block_size", "error"), [(0, ValueError), (-3, ValueError), (2.5, TypeError)])
def test_blockwise_validates_block_size(block_size: Any, error: type[Exception]) -> None:
    arrays = [np.ones((2, 3)), np.ones((2, 2)), np.ones((1, 2)), np.ones((1, 2)), np.ones((2, 1)), np.ones((1, 1)),
              np.ones((1, 1))]  # fmt: skip
    with pytest.raises(error, match=r"^block_size must be"):
        blockwise_scaled_dot_product_self_attention(*arrays, block_size=block_size)


def test_blockwise_handles_no_inputs() -> None:
    arrays = [np.ones((2, 0)), np.ones((3, 2)), np.ones((1, 2)), np.ones((1, 2)), np.ones((3, 1)), np.ones((1, 1)),
              np.ones((1, 1))]  # fmt: skip
    assert blockwise_scaled_dot_product_self_attention(*arrays).shape == (3, 0)
