"""The FlashAttention-signature reference (attention/flash.py) against an independent loop written here from the
definitions, and against its own options' limits and equivalents: bottom-right causal, windows, softcap, ALiBi,
sinks, GQA, packed batches, the log-sum-exp and the split-KV merge; plus its argument checking."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attention import flash_attn_func, flash_attn_varlen_func, merge_attention_states, split_kv_attention

Array = np.ndarray[Any, Any]
EPS64 = float(np.finfo(np.float64).eps)


# ---------------------------------------------------------------------------------------------------------------
# The independent reference: python floats, loops, math.fsum; the definitions and nothing else.


def visible(i: int, j: int, L: int, S: int, causal: bool, window: tuple[int, int]) -> bool:
    """Bottom-right alignment: query i sits at key position i + S - L; causal: j <= i + S - L; window (left, right):
    i + S - L - left <= j <= i + S - L + right, -1 meaning unbounded on that side; causal sets right to 0."""
    left, right = window
    if causal:
        right = 0
    position = i + S - L
    return (right < 0 or j <= position + right) and (left < 0 or j >= position - left)


def loop_reference(
    q: Array,
    k: Array,
    v: Array,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Array | None = None,
    sinks: Array | None = None,
) -> tuple[Array, Array, Array]:
    """(out, lse, probs) in float64: s = scale q.k, then softcap tanh(s / softcap), then - slope |i + S - L - j|; the
    softmax over the visible keys and the sink; a row with nothing visible has out 0 and lse -inf."""
    B, L, H, D = q.shape
    S, H_k, D_v = k.shape[1], k.shape[2], v.shape[3]
    group = H // H_k
    scale = 1.0 / math.sqrt(D) if softmax_scale is None else softmax_scale
    Q, K, V = (np.asarray(a, dtype=np.float64).tolist() for a in (q, k, v))
    slopes = None if alibi_slopes is None else np.broadcast_to(np.asarray(alibi_slopes, np.float64), (B, H))
    out, lse, probs = np.zeros((B, L, H, D_v)), np.full((B, H, L), -np.inf), np.zeros((B, H, L, S))
    for b in range(B):
        for h in range(H):
            for i in range(L):
                logits = {}
                for j in range(S):
                    if not visible(i, j, L, S, causal, window_size):
                        continue
                    s = scale * math.fsum(Q[b][i][h][d] * K[b][j][h // group][d] for d in range(D))
                    if softcap > 0:
                        s = softcap * math.tanh(s / softcap)
                    if slopes is not None:
                        s -= float(slopes[b, h]) * abs(i + S - L - j)
                    logits[j] = s
                terms = list(logits.values()) + ([float(sinks[h])] if sinks is not None else [])
                if not terms:
                    continue
                top = max(terms)
                lse[b, h, i] = top + math.log(math.fsum(math.exp(t - top) for t in terms))
                for j, s in logits.items():
                    probs[b, h, i, j] = math.exp(s - lse[b, h, i])
                for e in range(D_v):
                    out[b, i, h, e] = math.fsum(probs[b, h, i, j] * V[b][j][h // group][e] for j in logits)
    return out, lse, probs


class Bounds(NamedTuple):
    out: float
    lse: float
    probs: float


def bounds(q: Array, k: Array, v: Array, scale: float | None = None, slopes: Any = None, eps: float = EPS64) -> Bounds:
    """The forward-error bound of two computations (kernel and reference) of one problem, eps the working dtype's.

    A logit s = scale sum_d q_d k_d is off by at most (D + 2) eps A, A = |scale| D max|q| max|k| bounding every
    |scale q.k|; tanh (derivative <= 1, |capped| <= |s|) adds 2 eps A, ALiBi 2 eps |slope| (L + S). So
    delta = eps ((D + 4) A + 2 max|slope| (L + S) + 4) bounds one logit's error. The lse's sum of S + 1 terms adds
    (S + 4) eps: lse within delta + (S + 4) eps. A weight exp(s - lse) is then within 2 delta + (S + 4) eps
    relatively, and sum_j p_j v_j adds S eps max|v|: out within max|v| (2 delta + (2 S + 8) eps). Two
    computations, so twice each, and a factor 2 for the rounding of the bounds themselves. The weights (probs)
    are within 2 delta + (S + 4) eps absolutely (they are at most 1), with the same factor 4.
    """
    D, L, S = q.shape[-1], q.shape[1], k.shape[1]
    factor = 1.0 / math.sqrt(D) if scale is None else abs(scale)
    A = factor * D * float(np.max(np.abs(q), initial=0.0)) * float(np.max(np.abs(k), initial=0.0))
    alibi = 0.0 if slopes is None else float(np.max(np.abs(slopes), initial=0.0)) * (L + S)
    delta = eps * ((D + 4) * A + 2 * alibi + 4)
    v_max = float(np.max(np.abs(v), initial=0.0))
    weights = 2 * delta + (S + 4) * eps
    return Bounds(out=4 * v_max * (weights + S * eps), lse=4 * (delta + (S + 4) * eps), probs=4 * weights)


def assert_within(actual: Array, expected: Array, tolerance: float, what: str) -> None:
    """Entry by entry |actual - expected| <= tolerance, with -inf matching -inf exactly."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    infinite = np.isinf(expected)
    assert np.array_equal(actual[infinite], expected[infinite]), f"{what}: infinities differ"
    error = np.abs(actual[~infinite] - expected[~infinite])
    worst = float(error.max(initial=0.0))
    assert worst <= tolerance, f"{what}: worst error {worst:.3g} exceeds {tolerance:.3g}"


def qkv(
    B: int, L: int, S: int, H: int, H_k: int, D: int, D_v: int, seed: int = 0, dtype: Any = np.float64
) -> tuple[Array, Array, Array]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((B, L, H, D)).astype(dtype),
        rng.standard_normal((B, S, H_k, D)).astype(dtype),
        rng.standard_normal((B, S, H_k, D_v)).astype(dtype),
    )


def check_against_reference(q: Array, k: Array, v: Array, **options: Any) -> None:
    out, lse, probs = flash_attn_func(q, k, v, return_attn_probs=True, **options)
    ref_out, ref_lse, ref_probs = loop_reference(q, k, v, **options)
    tol = bounds(q, k, v, options.get("softmax_scale"), options.get("alibi_slopes"))
    assert_within(out, ref_out, tol.out, "out")
    assert_within(lse, ref_lse, tol.lse, "lse")
    assert_within(probs, ref_probs, tol.probs, "probs")


# ---------------------------------------------------------------------------------------------------------------
# Against the reference, drawn and at chosen points.


class Case(NamedTuple):
    q: Array
    k: Array
    v: Array
    options: dict[str, Any]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """Small problems with every option: L != S both ways, GQA, windows around the band's edges, caps, slopes, sinks."""
    B, L, S = draw(st.integers(1, 2)), draw(st.integers(0, 6)), draw(st.integers(0, 6))
    H_k = draw(st.sampled_from([1, 2]))
    H = H_k * draw(st.sampled_from([1, 2]))
    D, D_v = draw(st.integers(1, 4)), draw(st.integers(0, 3))
    q, k, v = qkv(B, L, S, H, H_k, D, D_v, seed=draw(st.integers(0, 2**16)))
    side = st.integers(-1, max(L, S) + 1)
    options: dict[str, Any] = {
        "causal": draw(st.booleans()),
        "window_size": (draw(side), draw(side)),
        "softmax_scale": draw(st.sampled_from([None, 0.5, 2.0, -1.0])),
        "softcap": draw(st.sampled_from([0.0, 0.5, 3.0])),
    }
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if draw(st.booleans()):
        options["alibi_slopes"] = rng.uniform(0, 1, size=draw(st.sampled_from([(H,), (B, H)])))
    if draw(st.booleans()):
        options["sinks"] = rng.normal(size=H)
    return Case(q, k, v, options)


@given(case=cases())
def test_the_kernel_equals_the_loop_reference_under_every_option(case: Case) -> None:
    """out, lse and probs equal the loop over the definitions, within the forward-error bound."""
    check_against_reference(case.q, case.k, case.v, **case.options)


@pytest.mark.parametrize(("L", "S"), [(3, 5), (5, 3), (4, 4), (1, 4), (6, 1)])
@pytest.mark.parametrize("causal", [False, True])
def test_every_window_at_its_edges_sees_exactly_the_defined_band(L: int, S: int, causal: bool) -> None:
    """For every (left, right) in {-1, ..., L + S}: the keys with a nonzero weight are exactly the band of the
    definition (an off-by-one on either side, or a top-left alignment, changes this set), and the values agree."""
    q, k, v = qkv(1, L, S, 2, 1, 3, 2, seed=L * 10 + S)
    for left in range(-1, L + S + 1):
        for right in range(-1, L + S + 1):
            window = (left, right)
            _, _, probs = flash_attn_func(q, k, v, causal=causal, window_size=window, return_attn_probs=True)
            band = np.array([[visible(i, j, L, S, causal, window) for j in range(S)] for i in range(L)])
            assert np.array_equal(probs[0, 0] > 0, band), f"window {window}, causal={causal}"
    check_against_reference(q, k, v, causal=causal, window_size=(1, 0))


def test_causal_is_bottom_right_aligned_both_ways() -> None:
    """L < S: query i sees keys j <= i + S - L (the last query sees every key); L > S: the first L - S queries see
    no key and get zero rows with lse = -inf."""
    q, k, v = qkv(2, 3, 7, 2, 2, 4, 3)
    _, _, probs = flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert np.array_equal(probs[0, 0] > 0, np.tril(np.ones((3, 7), bool), 4))
    check_against_reference(q, k, v, causal=True)
    q, k, v = qkv(2, 7, 3, 2, 2, 4, 3)
    out, lse, _ = flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert np.all(out[:, :4] == 0) and np.all(lse[:, :, :4] == -np.inf) and np.isfinite(lse[:, :, 4:]).all()
    check_against_reference(q, k, v, causal=True)


def test_decoding_one_query_against_a_long_cache() -> None:
    """L = 1, S = 1000: bottom-right causal lets the query see the whole cache (equal to no mask), and the result is
    the last row of the full causal run; a window keeps the last left + 1 keys."""
    q, k, v = qkv(1, 1, 1000, 2, 1, 8, 4, seed=3)
    check_against_reference(q, k, v, causal=True)
    tol = bounds(q, k, v).out
    assert_within(flash_attn_func(q, k, v, causal=True), flash_attn_func(q, k, v), tol, "causal decoding vs none")
    check_against_reference(q, k, v, causal=True, window_size=(15, 0), alibi_slopes=np.array([0.25, 0.5]))
    full_q = np.concatenate([qkv(1, 999, 1, 2, 1, 8, 4, seed=4)[0], q], axis=1)
    full = flash_attn_func(full_q, k, v, causal=True)
    assert_within(flash_attn_func(q, k, v, causal=True), full[:, -1:], tol, "decoding step vs last row")


@pytest.mark.parametrize("window", [(-1, -1), (2, 1), (0, 3), (-1, 0)])
def test_the_last_queries_alone_give_the_last_rows(window: tuple[int, int]) -> None:
    """Bottom-right alignment makes masks and ALiBi depend on i - L only: the last m queries alone (a prefill chunk
    or a decoding step) give the last m rows of the full run."""
    q, k, v = qkv(2, 9, 12, 4, 2, 3, 2, seed=5)
    options: dict[str, Any] = {"causal": True, "window_size": window, "alibi_slopes": np.array([0.1, 0.2, 0.3, 0.4])}
    full = flash_attn_func(q, k, v, **options)
    for m in range(10):
        assert_within(flash_attn_func(q[:, 9 - m :], k, v, **options), full[:, 9 - m :], bounds(q, k, v).out, f"{m=}")


def test_window_limits_equal_causal_and_no_mask() -> None:
    """(-1, 0) is causal and (-1, -1) no mask, for L < S, L = S and L > S."""
    for L, S in [(3, 8), (5, 5), (8, 3)]:
        q, k, v = qkv(2, L, S, 2, 1, 4, 3, seed=L + S)
        tol = bounds(q, k, v).out
        assert_within(flash_attn_func(q, k, v, window_size=(-1, 0)), flash_attn_func(q, k, v, causal=True), tol, "c")
        assert_within(flash_attn_func(q, k, v, window_size=(-1, -1)), loop_reference(q, k, v)[0], tol, "no mask")


def test_softcap_is_applied_after_the_scale_and_vanishes_in_its_limit() -> None:
    """A cap of 1e9 changes each logit by about |s|^3 / (3 c^2) < 1e-15: plain attention. A small cap bounds the
    weights' ratios by exp(2 c), and caps scale * q.k, not q.k (checked by the reference at scale 2)."""
    q, k, v = qkv(2, 4, 6, 2, 2, 5, 3, seed=6)
    tol = bounds(q, k, v).out
    assert_within(flash_attn_func(q, k, v, softcap=1e9), flash_attn_func(q, k, v), tol, "huge cap")
    _, _, probs = flash_attn_func(q * 10, k, v, softcap=0.5, return_attn_probs=True)
    assert np.all(probs.max(axis=-1) / probs.min(axis=-1) <= math.exp(2 * 0.5) * (1 + 1e-12))
    check_against_reference(q, k, v, softcap=0.7, softmax_scale=2.0)


def test_alibi_with_zero_slopes_is_plain_and_per_batch_slopes_broadcast() -> None:
    q, k, v = qkv(2, 5, 7, 3, 3, 4, 2, seed=7)
    tol = bounds(q, k, v).out
    for causal in (False, True):
        plain = flash_attn_func(q, k, v, causal=causal)
        assert_within(flash_attn_func(q, k, v, causal=causal, alibi_slopes=np.zeros(3)), plain, tol, "slope 0")
        slopes = np.array([0.5, 0.25, 0.125])
        per_head = flash_attn_func(q, k, v, causal=causal, alibi_slopes=slopes)
        per_batch = flash_attn_func(q, k, v, causal=causal, alibi_slopes=np.stack([slopes, slopes]))
        assert_within(per_batch, per_head, tol, "(batch, nheads) slopes")
        check_against_reference(q, k, v, causal=causal, alibi_slopes=np.stack([slopes, 2 * slopes]))


def test_a_sink_is_an_extra_key_with_a_zero_value_and_vanishes_in_its_limit() -> None:
    """A sink equals a key prepended at position 0 whose logit is the sink (an extra dimension: q' = [q, 1],
    k_sink = [0, sink / scale], k' = [k, 0]) and whose value is 0, under bottom-right causal (key 0 is visible to every
    query when L <= S + 1); a sink of -1e4 is plain attention."""
    q, k, v = qkv(2, 4, 6, 2, 2, 3, 3, seed=8)
    sinks, scale = np.array([0.7, -1.3]), 0.6
    B, L, H, _ = q.shape
    q_ext = np.concatenate([q, np.ones((B, L, H, 1))], axis=-1)
    k_ext = np.concatenate([k, np.zeros((B, 6, H, 1))], axis=-1)
    k_sink = np.zeros((B, 1, H, 4))
    k_sink[..., 3] = sinks / scale
    k_ext = np.concatenate([k_sink, k_ext], axis=1)
    v_ext = np.concatenate([np.zeros((B, 1, H, 3)), v], axis=1)
    tol = bounds(q_ext, k_ext, v_ext, scale)
    with_sink, lse, _ = flash_attn_func(q, k, v, softmax_scale=scale, causal=True, sinks=sinks, return_attn_probs=True)
    extra, extra_lse, _ = flash_attn_func(q_ext, k_ext, v_ext, softmax_scale=scale, causal=True, return_attn_probs=True)
    assert_within(with_sink, extra, tol.out, "sink vs extra key")
    assert_within(lse, extra_lse, tol.lse, "lse: sink vs extra key")
    plain = flash_attn_func(q, k, v, causal=True)
    assert_within(flash_attn_func(q, k, v, causal=True, sinks=np.full(2, -1e4)), plain, tol.out, "sink -1e4")


def test_a_row_without_keys_gets_zero_and_the_sink_as_lse() -> None:
    q, k, v = qkv(1, 5, 2, 2, 1, 3, 2, seed=9)
    sinks = np.array([0.5, -2.0])
    out, lse, probs = flash_attn_func(q, k, v, causal=True, sinks=sinks, return_attn_probs=True)
    assert np.all(out[:, :3] == 0) and np.all(probs[:, :, :3] == 0)
    assert np.array_equal(lse[0, :, :3], np.repeat(sinks[:, None], 3, axis=1))
    check_against_reference(q, k, v, causal=True, sinks=sinks)


def test_gqa_equals_repeated_heads() -> None:
    """Query head h reads key/value head h // (nheads / nheads_k)."""
    q, k, v = qkv(2, 5, 6, 6, 2, 3, 4, seed=10)
    repeated = flash_attn_func(q, np.repeat(k, 3, axis=2), np.repeat(v, 3, axis=2), causal=True, softcap=2.0)
    assert_within(flash_attn_func(q, k, v, causal=True, softcap=2.0), repeated, bounds(q, k, v).out, "GQA")


def test_the_lse_moves_with_a_constant_added_to_every_logit_and_the_output_does_not() -> None:
    """Adding c to every logit (an extra dimension: q' = [q, 1], k' = [k, c / scale]) adds c to the lse and changes
    no output; the lse is the natural log-sum-exp of the logits (the reference)."""
    q, k, v = qkv(2, 4, 7, 2, 1, 3, 2, seed=11)
    scale, c = 0.8, 37.5
    options: dict[str, Any] = {"softmax_scale": scale, "causal": True, "window_size": (3, -1)}
    out, lse, _ = flash_attn_func(q, k, v, return_attn_probs=True, **options)
    q2 = np.concatenate([q, np.ones((*q.shape[:3], 1))], axis=-1)
    k2 = np.concatenate([k, np.full((*k.shape[:3], 1), c / scale)], axis=-1)
    out2, lse2, _ = flash_attn_func(q2, k2, v, return_attn_probs=True, **options)
    tol = bounds(q2, k2, v, scale)
    assert_within(out2, out, tol.out, "out under a shift")
    assert_within(lse2 - c, lse, tol.lse, "lse under a shift")
    check_against_reference(q, k, v, **options)


def test_large_logits_neither_overflow_nor_warn() -> None:
    """Logits of size 1e4 (the pytest configuration turns RuntimeWarning into errors)."""
    q, k, v = qkv(1, 4, 5, 2, 2, 2, 3, seed=12)
    q = q * 1e4 / np.abs(q).max() * math.sqrt(2) / np.abs(k).max() / 2
    check_against_reference(q, k, v, causal=True)
    check_against_reference(q, k, v, softcap=20.0, sinks=np.array([1e4, -1e4]))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_out_keeps_q_dtype_and_lse_and_probs_are_in_the_working_dtype(dtype: Any) -> None:
    q, k, v = qkv(2, 3, 5, 2, 1, 4, 3, seed=13, dtype=dtype)
    out, lse, probs = flash_attn_func(q, k, v, causal=True, softcap=3.0, return_attn_probs=True)
    work = np.float64 if dtype == np.float64 else np.float32
    assert out.dtype == dtype and lse.dtype == work and probs.dtype == work
    ref_out, ref_lse, _ = loop_reference(q, k, v, causal=True, softcap=3.0)
    tol = bounds(q, k, v, eps=float(np.finfo(work).eps))
    rounding = float(np.finfo(dtype).eps) * float(np.abs(ref_out).max())  # out rounded to q's dtype
    assert_within(out, ref_out, tol.out + rounding, f"{np.dtype(dtype).name} out")
    assert_within(lse, ref_lse, tol.lse, f"{np.dtype(dtype).name} lse")


def test_empty_inputs_give_empty_outputs() -> None:
    for shape in [(0, 3, 2, 2), (2, 0, 2, 2)]:
        q = np.zeros(shape)
        out, lse, probs = flash_attn_func(q, np.ones((shape[0], 4, 2, 2)), np.ones((shape[0], 4, 2, 3)),
                                          return_attn_probs=True)  # fmt: skip
        assert out.shape == (*shape[:3], 3) and lse.shape == (shape[0], 2, shape[1]) and probs.size == 0
    out, lse, _ = flash_attn_func(np.ones((1, 3, 2, 2)), np.ones((1, 0, 1, 2)), np.ones((1, 0, 1, 5)),
                                  return_attn_probs=True)  # fmt: skip
    assert np.all(out == 0) and out.shape == (1, 3, 2, 5) and np.all(lse == -np.inf)


def test_inputs_are_not_modified() -> None:
    q, k, v = qkv(2, 4, 6, 2, 1, 3, 2, seed=14)
    slopes, sinks = np.array([0.3, 0.1]), np.array([0.2, -0.2])
    arrays = (q, k, v, slopes, sinks)
    copies = [a.copy() for a in arrays]
    for a in arrays:
        a.flags.writeable = False
    flash_attn_func(q, k, v, causal=True, softcap=1.0, alibi_slopes=slopes, sinks=sinks, return_attn_probs=True)
    split_kv_attention(q, k, v, 3, causal=True, alibi_slopes=slopes, sinks=sinks)
    assert all(np.array_equal(a, c) for a, c in zip(arrays, copies, strict=True))


# ---------------------------------------------------------------------------------------------------------------
# Packed variable-length batches.


def test_varlen_equals_each_sequence_alone() -> None:
    """Sequences with block-size boundaries (16, 32, 64), an empty query side, an empty key side, L != S both ways;
    every option on; lse (nheads, total_q); probs padded to (batch, nheads, max_seqlen_q, max_seqlen_k)."""
    lens_q, lens_k = [16, 0, 16, 32, 1, 3], [16, 16, 32, 0, 64, 2]
    H, H_k, D, D_v = 4, 2, 3, 2
    rng = np.random.default_rng(15)
    q = rng.standard_normal((sum(lens_q), H, D))
    k, v = rng.standard_normal((sum(lens_k), H_k, D)), rng.standard_normal((sum(lens_k), H_k, D_v))
    cu_q = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lens_k)]).astype(np.int32)
    slopes = rng.uniform(0, 0.5, (len(lens_q), H))
    options: dict[str, Any] = {"causal": True, "window_size": (20, -1), "softcap": 4.0, "sinks": rng.normal(size=H)}
    out, lse, probs = flash_attn_varlen_func(
        q, k, v, cu_q, cu_k, 40, 70, alibi_slopes=slopes, return_attn_probs=True, **options
    )
    assert out.shape == (sum(lens_q), H, D_v) and lse.shape == (H, sum(lens_q)) and probs.shape == (6, H, 40, 70)
    for b in range(len(lens_q)):
        qs, ks = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        alone, alone_lse, alone_probs = flash_attn_func(
            q[None, qs], k[None, ks], v[None, ks], alibi_slopes=slopes[b], return_attn_probs=True, **options
        )
        tol = bounds(q[None, qs], k[None, ks], v[None, ks], slopes=slopes[b])
        assert_within(out[qs], alone[0], tol.out, f"sequence {b}")
        assert_within(lse[:, qs], alone_lse[0], tol.lse, f"lse of sequence {b}")
        padded = np.zeros((H, 40, 70))
        padded[:, : lens_q[b], : lens_k[b]] = alone_probs[0]
        assert_within(probs[b], padded, 1e-15, f"probs of sequence {b}")
    check_against_reference(q[None, 16:32], k[None, 32:64], v[None, 32:64], alibi_slopes=slopes[2], **options)


def test_varlen_changing_one_sequence_changes_only_its_rows() -> None:
    rng = np.random.default_rng(16)
    q, k, v = rng.standard_normal((9, 2, 3)), rng.standard_normal((12, 2, 3)), rng.standard_normal((12, 2, 2))
    cu_q, cu_k = np.array([0, 4, 9], np.int32), np.array([0, 5, 12], np.int32)
    before = flash_attn_varlen_func(q, k, v, cu_q, cu_k, 5, 7, causal=True)
    k2, v2 = k.copy(), v.copy()
    k2[5:], v2[5:] = rng.standard_normal((7, 2, 3)), rng.standard_normal((7, 2, 2))
    after = flash_attn_varlen_func(q, k2, v2, cu_q, cu_k, 5, 7, causal=True)
    assert np.array_equal(before[:4], after[:4]) and not np.allclose(before[4:], after[4:])


# ---------------------------------------------------------------------------------------------------------------
# The log-sum-exp merge and split-KV attention.


@st.composite
def split_cases(draw: st.DrawFn) -> tuple[Case, list[int]]:
    case = draw(cases())
    S = case.k.shape[1]
    points = sorted(draw(st.lists(st.integers(0, S), max_size=3)))
    return case, points


@given(split=split_cases())
def test_split_kv_attention_equals_the_whole_for_any_split(split: tuple[Case, list[int]]) -> None:
    """Any boundaries (empty chunks included, so some parts see no key): out, lse and probs equal the whole."""
    case, points = split
    whole = flash_attn_func(case.q, case.k, case.v, return_attn_probs=True, **case.options)
    parts = split_kv_attention(case.q, case.k, case.v, points, return_attn_probs=True, **case.options)
    tol = bounds(case.q, case.k, case.v, case.options.get("softmax_scale"), case.options.get("alibi_slopes"))
    for name, a, b, t in zip(("out", "lse", "probs"), parts, whole, tol, strict=True):
        assert_within(a, b, 2 * t, f"{name} with splits {points}")


@pytest.mark.parametrize("splits", [1, 2, 7, 40])
def test_split_kv_attention_with_a_number_of_chunks(splits: int) -> None:
    q, k, v = qkv(1, 3, 30, 4, 2, 4, 3, seed=17)
    options: dict[str, Any] = {"causal": True, "window_size": (12, -1), "alibi_slopes": np.ones(4) / 8}
    tol = bounds(q, k, v, slopes=options["alibi_slopes"]).out
    assert_within(split_kv_attention(q, k, v, splits, **options), flash_attn_func(q, k, v, **options), 2 * tol, "")


def test_merge_of_a_part_without_keys_is_the_other_part() -> None:
    """lse = -inf marks a part with no key: weight 0, its out ignored even when NaN; both empty: out 0, lse -inf."""
    rng = np.random.default_rng(18)
    out_a, lse_a = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 4, 3))
    empty_out, empty_lse = np.full((2, 3, 4, 5), np.nan), np.full((2, 4, 3), -np.inf)
    out, lse = merge_attention_states(out_a, lse_a, empty_out, empty_lse)
    assert np.array_equal(out, out_a) and np.array_equal(lse, lse_a)
    out, lse = merge_attention_states(empty_out, empty_lse, empty_out, empty_lse)
    assert np.all(out == 0) and np.all(lse == -np.inf)


def test_merge_is_symmetric_and_stable_for_far_apart_lse() -> None:
    """lse 1e4 apart: the small part's weight underflows to 0 without a warning; swapping the parts changes nothing;
    varlen's layout (total, nheads, D_v) with (nheads, total) works too."""
    rng = np.random.default_rng(19)
    out_a, out_b = rng.standard_normal((6, 2, 3)), rng.standard_normal((6, 2, 3))
    lse_a, lse_b = rng.standard_normal((2, 6)), rng.standard_normal((2, 6)) + 1e4
    out, lse = merge_attention_states(out_a, lse_a, out_b, lse_b)
    assert_within(out, out_b, 0.0, "far apart")
    assert_within(lse, lse_b, 1e4 * EPS64, "far apart lse")
    swapped = merge_attention_states(out_b, lse_b, out_a, lse_a)
    assert np.array_equal(swapped[0], out) and np.array_equal(swapped[1], lse)
    lse_b = lse_a + math.log(3.0)
    out, lse = merge_attention_states(out_a, lse_a, out_b, lse_b)
    assert_within(out, 0.25 * out_a + 0.75 * out_b, 8 * EPS64 * 4, "weights 1/4, 3/4")
    assert_within(lse, lse_a + math.log(4.0), 8 * EPS64 * 4, "lse + log 4")


# ---------------------------------------------------------------------------------------------------------------
# Argument checking.

Q, K, V = qkv(2, 3, 4, 4, 2, 3, 5)
CU = np.array([0, 2, 3], np.int32)


def BAD(value: object) -> Any:
    """An argument of the wrong type, passed on purpose."""
    return value


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: flash_attn_func(Q[0], K, V), ValueError, r"q must have shape \(batch, seqlen_q"),
        (lambda: flash_attn_func(Q, K[:, :3], V), ValueError, r"k and v must agree.*\(2, 3, 2, 3\), \(2, 4, 2, 5\)"),
        (lambda: flash_attn_func(Q, K[..., :2], V), ValueError, "q and k must have one headdim"),
        (lambda: flash_attn_func(Q[:1], K, V), ValueError, "one batch size"),
        (lambda: flash_attn_func(Q[:, :, :3], K, V), ValueError, "nheads = 3, nheads_k = 2"),
        (lambda: flash_attn_func(Q[..., :0], K[..., :0], V), ValueError, "headdim must be >= 1"),
        (lambda: flash_attn_func(Q.astype(np.float32), K, V), TypeError, "one dtype"),
        (lambda: flash_attn_func(Q.astype(int), K.astype(int), V.astype(int)), TypeError, "q must be a floating"),
        (lambda: flash_attn_func(np.where(Q > 1, np.nan, Q), K, V), ValueError, "q must be finite"),
        (lambda: flash_attn_func(Q, K, V, dropout_p=0.1), ValueError, "dropout_p must be 0.0"),
        (lambda: flash_attn_func(Q, K, V, window_size=(-2, 0)), ValueError, r"window_size\[0\] must be >= -1"),
        (lambda: flash_attn_func(Q, K, V, window_size=(0, -5)), ValueError, r"window_size\[1\] must be >= -1"),
        (lambda: flash_attn_func(Q, K, V, window_size=BAD(3)), TypeError, "window_size must be a pair"),
        (
            lambda: flash_attn_func(Q, K, V, window_size=BAD((1.5, 0))),
            TypeError,
            r"window_size\[0\] must be an integer",
        ),
        (lambda: flash_attn_func(Q, K, V, softcap=-1.0), ValueError, "softcap must be >= 0"),
        (lambda: flash_attn_func(Q, K, V, softcap=math.inf), ValueError, "softcap must be finite"),
        (lambda: flash_attn_func(Q, K, V, softmax_scale=BAD("2")), TypeError, "softmax_scale must be a real"),
        (lambda: flash_attn_func(Q, K, V, causal=BAD(1)), TypeError, "causal must be a bool"),
        (
            lambda: flash_attn_func(Q, K, V, alibi_slopes=np.ones(2)),
            ValueError,
            r"alibi_slopes must have shape.*\(2,\)",
        ),
        (lambda: flash_attn_func(Q, K, V, alibi_slopes=np.ones((3, 4))), ValueError, r"\(batch, nheads\) = \(2, 4\)"),
        (lambda: flash_attn_func(Q, K, V, sinks=np.ones((1, 4))), ValueError, r"sinks must have shape \(nheads,\)"),
        (lambda: flash_attn_func(Q, K, V, sinks=np.full(4, -np.inf)), ValueError, "sinks must be finite"),
        (lambda: flash_attn_func(Q * 1e200, K * 1e200, V), ValueError, "logits overflow"),
        (lambda: split_kv_attention(Q, K, V, 0), ValueError, "splits must be >= 1"),
        (lambda: split_kv_attention(Q, K, V, [3, 1]), ValueError, "splits must be non-decreasing"),
        (lambda: split_kv_attention(Q, K, V, [5]), ValueError, "splits must be non-decreasing"),
        (lambda: split_kv_attention(Q, K, V, BAD("2")), TypeError, "splits must be a number"),
        (lambda: merge_attention_states(Q, Q[..., 0], Q, Q[..., 0]), ValueError, r"lse_a must have shape.*\(2, 4, 3\)"),
        (lambda: merge_attention_states(Q, np.full((2, 4, 3), np.inf), Q, np.zeros((2, 4, 3))), ValueError, r"\+inf"),
        (lambda: merge_attention_states(Q, np.zeros((2, 4, 3)), Q[:1], np.zeros((2, 4, 3))), ValueError, "one shape"),
        (
            lambda: flash_attn_varlen_func(Q[0], K[0, :3], V[0, :3], CU, CU, 1, 2),
            ValueError,
            "max_seqlen_q must be at least the longest sequence, 2",
        ),
        (lambda: flash_attn_varlen_func(Q[0], K[0, :3], V[0, :3], CU[::-1], CU, 2, 2), ValueError, "non-decreasing"),
        (lambda: flash_attn_varlen_func(Q[0], K[0], V[0], CU, CU, 2, 2), ValueError, r"total_k \(k's axis 0\) = 4"),
        (lambda: flash_attn_varlen_func(Q[0], K[0, :3], V[0, :3], CU * 1.0, CU, 2, 2), TypeError, "integer array"),
        (
            lambda: flash_attn_varlen_func(Q[0], K[0, :3], V[0, :3], CU, np.array([0, 3]), 2, 3),
            ValueError,
            "one length",
        ),
        (lambda: flash_attn_varlen_func(Q, K, V, CU, CU, 2, 2), ValueError, r"q must have shape \(total_q"),
    ],
)
def test_bad_arguments_raise_errors_naming_them(call: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()
