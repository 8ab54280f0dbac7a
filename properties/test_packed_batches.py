"""Laws of packed variable-length batches (flash_attn_varlen_func: cu_seqlens_q, cu_seqlens_k, max_seqlen_*):
sequence b is q[cu_q[b]:cu_q[b+1]] against k, v[cu_k[b]:cu_k[b+1]], alone, with causal aligned by its own lengths.
The strategy packs 2 to 4 sequences of lengths 0 (empty), small and at block sizes (15, 16, 17, 33).

They run on the `varlen` fixture: --varlen TARGET, else the bundled attention.flash:flash_attn_varlen_func (numpy,
float64; the alignment is the flash fixture's, bottom-right by default).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from properties.catalogues.mistakes import kernels as m
from properties.helpers.checks import assert_close
from properties.helpers.flash_convention import VarlenImplementation, exact_attention, row_bounds, visibility
from properties.helpers.flash_strategies import (
    Packed,
    PackedChange,
    packed_batches,
    packed_batches_with_a_changed_sequence,
    varlen_keywords,
)
from properties.helpers.meta import assert_law_fails
from properties.helpers.tolerances import FLOAT64_EPS

pytestmark = pytest.mark.semantics
FEW = settings(max_examples=10)


@FEW
@given(packed=packed_batches())
def test_packing_equals_running_each_sequence_alone(varlen: VarlenImplementation, packed: Packed) -> None:
    """out[cu_q[b]:cu_q[b+1]] is attention of sequence b's queries over its own keys alone (causal bottom-right by
    its own lengths L_b, S_b), for every b, empty sequences included (they give no rows; a query of a sequence
    with no keys gets 0)."""
    out = varlen.call(packed.q, packed.k, packed.v, **varlen_keywords(packed))
    for b in range(packed.batch):
        problem = packed.sequence(b)
        scale = 1 / np.sqrt(problem.D)
        seen = visibility(problem.L, problem.S, causal=packed.causal)
        expected, _ = exact_attention(problem, scale, visible=seen)
        bound = row_bounds(problem, scale, FLOAT64_EPS) * 2
        q0, q1 = int(packed.cu_seqlens_q[b]), int(packed.cu_seqlens_q[b + 1])
        assert_close(out[q0:q1], expected[0], bound.out[0],
                     what=f"sequence {b} (L_b={problem.L}, S_b={problem.S}, causal={packed.causal})")  # fmt: skip


@pytest.mark.meta
def test_packing_catches_a_sequence_seeing_the_previous_last_block() -> None:
    law = test_packing_equals_running_each_sequence_alone
    assert_law_fails(law, varlen=m.broken_varlen(m.varlen_sees_the_previous_last_block))


@FEW
@given(case=packed_batches_with_a_changed_sequence())
def test_changing_one_sequence_changes_only_its_own_outputs(varlen: VarlenImplementation, case: PackedChange) -> None:
    """Replacing the q, k, v of sequence b leaves the output rows of every other sequence unchanged."""
    packed, b, changed = case
    before = varlen.call(packed.q, packed.k, packed.v, **varlen_keywords(packed))
    after = varlen.call(changed.q, changed.k, changed.v, **varlen_keywords(changed))
    for j in range(packed.batch):
        if j == b:
            continue
        problem = packed.sequence(j)
        bound = row_bounds(problem, 1 / np.sqrt(problem.D), FLOAT64_EPS) * 2
        q0, q1 = int(packed.cu_seqlens_q[j]), int(packed.cu_seqlens_q[j + 1])
        assert_close(after[q0:q1], before[q0:q1], bound.out[0], what=f"sequence {j} after changing sequence {b}")


@pytest.mark.meta
def test_changing_one_sequence_catches_a_sequence_seeing_the_previous_last_block() -> None:
    law = test_changing_one_sequence_changes_only_its_own_outputs
    assert_law_fails(law, varlen=m.broken_varlen(m.varlen_sees_the_previous_last_block))
