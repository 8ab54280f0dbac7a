"""Laws of the row convention (--convention sdpa): batch elements and heads are independent attentions, the
scale keyword sets the logit scale, key-padding masks hide the padding, grouped key/value heads serve their
query heads, and half precision rounds no worse than a plain computation.

They run on the `kernel` fixture: --impl TARGET under --convention sdpa, else the bundled numpy kernel
(attention/rows.py). Expected values are computed here, in float64, from the book's equations in rows:
out[b, h] = softmax_rows(s q_bh k_bh^T) v_bh = (V A)^T with A = softmax_cols(s K^T Q) (eqs. 12.5-12.9). The rest
of the battery checks the same kernels through the adapter, one batch element and one head at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from numpy.typing import NDArray

from attention.rows import scaled_dot_product_attention
from properties.catalogues import mistakes as b
from properties.helpers.checks import LawViolation, assert_close
from properties.helpers.exact import exact_attention
from properties.helpers.implementations import LAST_RETURNED
from properties.helpers.meta import assert_law_fails
from properties.helpers.options import SDPA_REFERENCE_TARGET
from properties.helpers.problems import AttentionProblem, BatchedProblem
from properties.helpers.row_convention import Batched, Convention, SdpaImplementation
from properties.helpers.strategies import (
    batched_problems,
    batched_problems_with_a_changed_slot,
    batched_problems_with_batch_orders,
    batched_problems_with_key_padding,
    batched_problems_with_scales,
    grouped_query_problems,
)
from properties.helpers.tolerances import PRECISIONS, ErrorBounds, error_bounds, plain_computation_floor

pytestmark = pytest.mark.semantics
Array = NDArray[np.float64]


def default_scale(kernel: SdpaImplementation, problem: BatchedProblem) -> float:
    return kernel.scale(problem.slots[0][0].D_q)


def exact_rows(problem: AttentionProblem, scale: float, visible_keys: int | None = None) -> Array:
    """(V A)^T with A = softmax_cols(scale K^T Q) over the first `visible_keys` keys (all by default), in float64."""
    n = problem.N if visible_keys is None else visible_keys
    visible = np.arange(problem.N)[:, None] < n
    X_prime, _ = exact_attention(problem, scale, visible=np.broadcast_to(visible, (problem.N, problem.N)))
    return np.asarray(X_prime.T)


def row_bounds(kernel: SdpaImplementation, problem: AttentionProblem, scale: float, eps: float) -> Array:
    """The forward-error bound of one kernel evaluation plus that of the float64 expected values, as rows (N, D_v)."""
    bounds: ErrorBounds = kernel.bounds(problem, eps, scale) + error_bounds(problem, scale)
    return np.asarray(bounds.x_prime.T)


def run_kernel(kernel: SdpaImplementation, problem: BatchedProblem, **keywords: Any) -> Batched:
    """The kernel on the stacked q, k, v of `problem` (after the dtype's range precondition), with `keywords`."""
    for slots in problem.slots:
        for slot in slots:
            kernel.require_in_range(slot)
    query, key, value = problem.stacked()
    base = kernel.target_keywords(query.shape[-2])
    return kernel.run_any_width(query, key, value, **{**base, **keywords})


def assert_slots_close(kernel: SdpaImplementation, problem: BatchedProblem, result: Batched, scale: float) -> None:
    for i, slots in enumerate(problem.slots):
        for h, slot in enumerate(slots):
            assert_close(result.out[i, h], exact_rows(slot, scale), row_bounds(kernel, slot, scale, result.eps),
                         what=f"out[{i}, {h}] against its own q, k, v (batch element {i}, head {h})")  # fmt: skip


@given(problem=batched_problems())
def test_every_batch_element_and_head_is_attention_over_its_own_rows(
    kernel: SdpaImplementation, problem: BatchedProblem
) -> None:
    """out[b, h] = softmax(s q_bh k_bh^T) v_bh for every batch element b and head h, s = 1/sqrt(E) by default:
    (B, H, L, E) rows are B x H independent attentions (eq. 12.9 in rows)."""
    assert_slots_close(kernel, problem, run_kernel(kernel, problem), default_scale(kernel, problem))


@pytest.mark.meta
@pytest.mark.parametrize(
    "bug",
    [
        b.kernel_heads_merged_into_length,
        b.kernel_keys_of_first_batch_element,
        b.kernel_softmax_over_queries,
        b.kernel_scaled_by_value_width,
    ],
)
def test_every_batch_element_and_head_catches(bug: Any) -> None:
    assert_law_fails(test_every_batch_element_and_head_is_attention_over_its_own_rows, kernel=b.broken_kernel(bug))


@given(case=batched_problems_with_a_changed_slot())
def test_changing_one_head_of_one_batch_element_changes_only_its_own_output(
    kernel: SdpaImplementation, case: tuple[BatchedProblem, int, int, AttentionProblem]
) -> None:
    """Replacing the q, k, v of slot (b, h) leaves out[b', h'] unchanged for every other slot (b', h')."""
    problem, i, h, head = case
    before, after = run_kernel(kernel, problem), run_kernel(kernel, problem.replace_slot(i, h, head))
    scale, eps = default_scale(kernel, problem), max(before.eps, after.eps)
    for j, slots in enumerate(problem.slots):
        for g, slot in enumerate(slots):
            if (j, g) != (i, h):
                bound = 2 * np.asarray(kernel.bounds(slot, eps, scale).x_prime.T)
                assert_close(after.out[j, g], before.out[j, g], bound,
                             what=f"out[{j}, {g}] after changing batch element {i}, head {h}")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.kernel_heads_merged_into_length, b.kernel_keys_of_first_batch_element])
def test_changing_one_head_catches(bug: Any) -> None:
    law = test_changing_one_head_of_one_batch_element_changes_only_its_own_output
    assert_law_fails(law, kernel=b.broken_kernel(bug))


@given(case=batched_problems_with_batch_orders())
def test_permuting_the_batch_permutes_the_outputs(
    kernel: SdpaImplementation, case: tuple[BatchedProblem, NDArray[np.intp]]
) -> None:
    """f(q[p], k[p], v[p]) = f(q, k, v)[p] for every order p of the batch elements."""
    problem, p = case
    before, after = run_kernel(kernel, problem), run_kernel(kernel, problem.with_batch_order(p))
    scale, eps = default_scale(kernel, problem), max(before.eps, after.eps)
    for i, source in enumerate(p):
        for h, slot in enumerate(problem.slots[source]):
            bound = 2 * np.asarray(kernel.bounds(slot, eps, scale).x_prime.T)
            assert_close(after.out[i, h], before.out[source, h], bound,
                         what=f"out[{i}, {h}] of the batch in the order {p.tolist()}")  # fmt: skip


@pytest.mark.meta
def test_permuting_the_batch_catches_keys_of_the_first_element() -> None:
    law = test_permuting_the_batch_permutes_the_outputs
    assert_law_fails(law, kernel=b.broken_kernel(b.kernel_keys_of_first_batch_element))


@given(problem=batched_problems())
def test_the_output_has_the_dtype_of_the_inputs(kernel: SdpaImplementation, problem: BatchedProblem) -> None:
    """out has the dtype of query, key and value (torch's contract for SDPA), at every --dtype: a kernel that
    promotes float32 inputs to a float64 output returns another dtype than its caller computes in."""
    run_kernel(kernel, problem)
    returned = LAST_RETURNED[0]
    out = returned[0] if isinstance(returned, tuple | list) else returned
    dtype = str(getattr(out, "dtype", type(out).__name__)).removeprefix("torch.")
    if dtype != kernel.convention.dtype:
        raise LawViolation(f"the output has dtype {dtype}; query, key and value were {kernel.convention.dtype}")


@pytest.mark.meta
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_the_output_has_the_dtype_of_the_inputs_catches_a_promotion(dtype: str) -> None:
    kernel = b.broken_kernel(b.kernel_promotes_to_float64, Convention(dtype=dtype))
    assert_law_fails(test_the_output_has_the_dtype_of_the_inputs, kernel=kernel)


@given(case=batched_problems_with_scales())
def test_the_scale_keyword_sets_the_logit_scale(kernel: SdpaImplementation, case: tuple[BatchedProblem, float]) -> None:
    """f(q, k, v, scale=c) = softmax(c q k^T) v for every c: the keyword replaces 1/sqrt(E) (eqs. 12.8-12.9)."""
    kernel.require("scale")
    problem, c = case
    assert_slots_close(kernel, problem, run_kernel(kernel, problem, scale=c), c)


@pytest.mark.meta
def test_the_scale_keyword_catches_an_ignored_scale() -> None:
    assert_law_fails(test_the_scale_keyword_sets_the_logit_scale, kernel=b.broken_kernel(b.kernel_ignores_scale))


@given(case=batched_problems_with_key_padding())
def test_key_padding_masks_hide_the_padded_keys(
    kernel: SdpaImplementation, case: tuple[BatchedProblem, NDArray[np.intp], float]
) -> None:
    """With a mask of shape (B, 1, 1, S), True for the first n_b keys of batch element b, out[b, h] is attention
    over those keys alone, whatever the padded keys and values hold (here: multiplied by up to 1e3)."""
    kernel.require("mask")
    problem, lengths, factor = case
    query, key, value = problem.stacked()
    S = key.shape[-2]
    padding = np.arange(S)[None, :] >= lengths[:, None]  # (B, S)
    grown = np.where(padding[:, None, :, None], factor, 1.0)
    key, value = key * grown, value * grown
    E = query.shape[-1]
    largest = PRECISIONS[kernel.convention.dtype][1] / 2
    assume(float(np.abs(query).max() * np.abs(key).max()) * E <= largest and float(np.abs(value).max()) <= largest)
    mask = ~padding[:, None, None, :]
    keywords = {**kernel.target_keywords(S), kernel.mask_keyword() or "mask": mask}
    result = kernel.run_any_width(query, key, value, **keywords)
    scale = default_scale(kernel, problem)
    for i, slots in enumerate(problem.slots):
        for h, slot in enumerate(slots):
            assert_close(result.out[i, h], exact_rows(slot, scale, int(lengths[i])),
                         row_bounds(kernel, slot, scale, result.eps),
                         what=f"out[{i}, {h}] with the keys after the first {lengths[i]} padded")  # fmt: skip


@pytest.mark.meta
@pytest.mark.parametrize("bug", [b.kernel_mask_polarity_inverted, b.kernel_keywords_ignored])
def test_key_padding_masks_catch(bug: Any) -> None:
    assert_law_fails(test_key_padding_masks_hide_the_padded_keys, kernel=b.broken_kernel(bug))


@given(case=grouped_query_problems())
def test_grouped_query_heads_share_their_key_and_value_heads(
    kernel: SdpaImplementation, case: tuple[BatchedProblem, int]
) -> None:
    """With H_kv key/value heads and H = G H_kv query heads (enable_gqa=True where the target names it), query
    head h attends with key and value head h // G (grouped-query attention; H_kv = 1 is multi-query attention)."""
    grouped = kernel.grouped_heads()
    if grouped is None:
        pytest.skip("the target takes no grouped key/value heads (no enable_gqa keyword, none documented)")
    problem, G = case
    query, key, value = problem.stacked()
    for slots in problem.slots:
        for slot in slots:
            kernel.require_in_range(slot)
    keywords = {**kernel.target_keywords(query.shape[-2]), **grouped}
    result = kernel.run_any_width(query, key[:, ::G], value[:, ::G], **keywords)
    assert_slots_close(kernel, problem, result, default_scale(kernel, problem))


@pytest.mark.meta
def test_grouped_query_heads_catch_tiled_groups() -> None:
    law = test_grouped_query_heads_share_their_key_and_value_heads
    assert_law_fails(law, kernel=b.broken_kernel(b.kernel_groups_tiled))


def plain_rows(problem: AttentionProblem, scale: float, convention: Convention) -> Array:
    """The textbook computation in the convention's dtype: q, k, v, the logits, their shift, exp, sum, the
    weights and the output each rounded to the dtype (products and sums accumulated in float64, then rounded)."""
    r = convention.rounded
    q, k, v = (r(a.T) for a in (problem.omega_q @ problem.X + problem.beta_q,
                                problem.omega_k @ problem.X + problem.beta_k, problem.values()))  # fmt: skip
    logits = r(r(q @ k.T) * r(np.asarray(scale)))
    exps = r(np.exp(r(logits - logits.max(axis=1, keepdims=True))))
    weights = r(exps / r(exps.sum(axis=1, keepdims=True)))
    return r(weights @ v)


@given(problem=batched_problems(heads=(1, 2)))
def test_error_is_at_most_twice_that_of_a_plain_computation_in_the_same_dtype(
    kernel: SdpaImplementation, problem: BatchedProblem
) -> None:
    """max |out - exact| <= 2 max |plain - exact| + floor over each (b, h), with plain the textbook computation in
    the kernel's dtype: the cross-check of FlashAttention's tests, for dtypes coarser than float64
    (tolerances.plain_computation_floor)."""
    if kernel.convention.dtype == "float64":
        pytest.skip("float64 is judged by the forward-error bounds and regression/test_differential's 50 digits")
    result = run_kernel(kernel, problem)
    scale = default_scale(kernel, problem)
    for i, slots in enumerate(problem.slots):
        for h, slot in enumerate(slots):
            exact = exact_rows(slot, scale)
            error = float(np.abs(result.out[i, h] - exact).max())
            plain = float(np.abs(plain_rows(slot, scale, kernel.convention) - exact).max())
            allowed = 2 * plain + plain_computation_floor(slot, scale, kernel.convention.dtype)
            if not error <= allowed:
                raise LawViolation(
                    f"out[{i}, {h}] is off the exact result by {error:.3g}; a plain {kernel.convention.dtype} "
                    f"computation is off by {plain:.3g}; allowed: twice that plus {allowed - 2 * plain:.3g}"
                )


@pytest.mark.meta
def test_error_of_twice_a_plain_computation_catches_softmax_over_queries_in_float32() -> None:
    law = test_error_is_at_most_twice_that_of_a_plain_computation_in_the_same_dtype
    kernel = b.broken_kernel(b.kernel_softmax_over_queries, Convention(dtype="float32"))
    assert_law_fails(law, kernel=kernel)


@pytest.mark.meta
def test_error_of_twice_a_plain_computation_holds_for_the_numpy_kernel_in_float32() -> None:
    """The cross-check admits a correct kernel that computes in float32 (no false alarm from the floor)."""
    law = test_error_is_at_most_twice_that_of_a_plain_computation_in_the_same_dtype
    law(
        kernel=SdpaImplementation(
            scaled_dot_product_attention, "scaled", SDPA_REFERENCE_TARGET, Convention(dtype="float32")
        )
    )


# The notebook-convention laws catch the row-convention mistakes through the adapter, one batch element and
# one head at a time: the same laws, the same meaning.
