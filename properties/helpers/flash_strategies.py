"""Strategies for the rectangular laws (FlashProblem, properties/helpers/flash_convention.py): cross-attention and
decoding (L != S), windows at their edges, score modifications, packed batches and key splits.

Lengths reach a tiled kernel's block boundaries cheaply: small lengths (1 to 6), lengths at 16, 32, 64 +- 1 against
small ones (L > S and L < S), and decoding steps (L = 1) against caches as long as the long-sequence laws draw
(LONG_LENGTHS, up to 700): every problem has at most 65 x 65 or 1 x 700 logits per head. Entries are standard
normal from a drawn seed, times a drawn magnitude (hypothesis shrinks the seed, the shape and the magnitude).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from hypothesis import reject
from hypothesis import strategies as st
from numpy.typing import NDArray

from properties.helpers.flash_convention import FlashProblem, window_readings
from properties.helpers.strategies import LONG_LENGTHS, composite

Array = NDArray[np.float64]
SMALL = (1, 2, 3, 4, 5, 6)
BOUNDARIES = (15, 16, 17, 31, 32, 33, 63, 64, 65)
MAGNITUDES = (0.25, 1.0, 2.0)


@composite
def lengths(draw: st.DrawFn) -> tuple[int, int]:
    """(L, S): small against small, a block boundary against a small length either way, or a decoding step."""
    small, edge = st.sampled_from(SMALL), st.sampled_from(BOUNDARIES)
    shape = draw(st.sampled_from(("small", "long queries", "long keys", "decoding")), label="shape")
    if shape == "small":
        return draw(small, label="L"), draw(small, label="S")
    if shape == "long queries":
        return draw(edge, label="L"), draw(small, label="S")
    if shape == "long keys":
        return draw(small, label="L"), draw(edge, label="S")
    return 1, draw(st.sampled_from(LONG_LENGTHS), label="S")


def random_rows(draw: st.DrawFn, shapes: list[tuple[int, ...]], magnitude: float | None = None) -> list[Array]:
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    size = draw(st.sampled_from(MAGNITUDES), label="magnitude") if magnitude is None else magnitude
    rng = np.random.default_rng(seed)
    return [size * rng.standard_normal(shape) for shape in shapes]


@composite
def rectangular_problems(
    draw: st.DrawFn, L: int | None = None, S: int | None = None, groups: bool = True, magnitude: float | None = None
) -> FlashProblem:
    """A FlashProblem with B in {1, 2}, H_k in {1, 2}, H = H_k or 2 H_k (grouped heads), D in 1..4, D_v in 1..3."""
    if L is None or S is None:
        L, S = draw(lengths(), label="L, S")
    B = draw(st.integers(1, 2), label="B")
    H_k = draw(st.integers(1, 2), label="H_k")
    H = H_k * (draw(st.integers(1, 2), label="group") if groups else 1)
    D, D_v = draw(st.integers(1, 4), label="D"), draw(st.integers(1, 3), label="D_v")
    q, k, v = random_rows(draw, [(B, L, H, D), (B, S, H_k, D), (B, S, H_k, D_v)], magnitude)
    return FlashProblem(q, k, v)


class Reordered(NamedTuple):
    problem: FlashProblem
    order: NDArray[np.intp]


@composite
def problems_with_key_orders(draw: st.DrawFn) -> Reordered:
    problem = draw(rectangular_problems())
    return Reordered(problem, np.asarray(draw(st.permutations(range(problem.S))), dtype=np.intp))


@composite
def problems_with_query_orders(draw: st.DrawFn) -> Reordered:
    problem = draw(rectangular_problems())
    return Reordered(problem, np.asarray(draw(st.permutations(range(problem.L))), dtype=np.intp))


class ChangedQuery(NamedTuple):
    problem: FlashProblem
    n: int  # the query changed
    changed: FlashProblem


@composite
def problems_with_a_changed_query(draw: st.DrawFn) -> ChangedQuery:
    problem = draw(rectangular_problems())
    assume_two = problem.L >= 2
    if not assume_two:
        problem = draw(rectangular_problems(L=2, S=problem.S))
    n = draw(st.integers(0, problem.L - 1), label="n")
    (row,) = random_rows(draw, [(problem.B, problem.H, problem.D)])
    q = problem.q.copy()
    q[:, n] = row
    return ChangedQuery(problem, n, problem.replace(q=q))


class Scaled(NamedTuple):
    problem: FlashProblem
    scale: float
    power: int  # q is multiplied by 2**power and the scale divided by it


@composite
def problems_with_scales(draw: st.DrawFn) -> Scaled:
    problem = draw(rectangular_problems())
    scale = draw(st.sampled_from((0.125, 0.3, 1.0, 1.7)), label="scale")
    return Scaled(problem, scale, draw(st.sampled_from((-2, -1, 1, 2)), label="power"))


def windows_for(draw: st.DrawFn, L: int, S: int) -> tuple[int, int]:
    """(left, right): -1 (unbounded) or a side from 0 to max(L, S) + 1, often at the small values where an
    off-by-one at the band's edge shows."""
    reach = max(L, S) + 1
    side = st.one_of(st.just(-1), st.integers(0, 3), st.integers(0, reach))
    return draw(side, label="left"), draw(side, label="right")


class Windowed(NamedTuple):
    problem: FlashProblem
    window: tuple[int, int]


@composite
def problems_with_windows(draw: st.DrawFn) -> Windowed:
    problem = draw(rectangular_problems())
    return Windowed(problem, windows_for(draw, problem.L, problem.S))


class OutsideTheWindow(NamedTuple):
    problem: FlashProblem
    window: tuple[int, int]
    n: int  # the query judged
    changed: FlashProblem  # keys and values outside query n's window replaced


@composite
def problems_with_keys_outside_a_window(draw: st.DrawFn, alignment: str) -> OutsideTheWindow:
    problem, window = draw(problems_with_windows())
    # The keys hidden from query n under every accepted reading of the window (window_readings: the definition
    # and FlashAttention 2's, which differ when L > S + 1 and a side is -1 or >= S). Query n sees a key under
    # every reading: what a query that sees none gets is a convention (jax: the mean of all values).
    readings = window_readings(problem.L, problem.S, window, alignment=alignment)
    seeing = [i for i in range(problem.L) if all(reading[i].any() for reading in readings)]
    if not seeing:
        reject()
    n = draw(st.sampled_from(seeing), label="n")
    hidden = np.logical_and.reduce([~reading[n] for reading in readings])
    k2, v2 = random_rows(draw, [problem.k.shape, problem.v.shape], 4.0)
    k = np.where(hidden[None, :, None, None], k2, problem.k)
    v = np.where(hidden[None, :, None, None], v2, problem.v)
    return OutsideTheWindow(problem, window, n, problem.replace(k=k, v=v))


class Capped(NamedTuple):
    problem: FlashProblem
    softcap: float


@composite
def problems_with_softcaps(draw: st.DrawFn) -> Capped:
    """Logits well beyond the cap (magnitude 2 rows, so |s| up to ~10) and caps from 0.5 to 30."""
    problem = draw(rectangular_problems(magnitude=draw(st.sampled_from((1.0, 2.0, 3.0)), label="magnitude")))
    return Capped(problem, draw(st.sampled_from((0.5, 1.0, 3.0, 30.0)), label="softcap"))


class Sloped(NamedTuple):
    problem: FlashProblem
    slopes: Array  # (H,) or (B, H)
    causal: bool


@composite
def problems_with_alibi(draw: st.DrawFn) -> Sloped:
    problem = draw(rectangular_problems())
    values = st.sampled_from((0.0, 0.0625, 0.25, 0.5, 1.0))
    per_batch = draw(st.booleans(), label="per batch")
    shape = (problem.B, problem.H) if per_batch else (problem.H,)
    slopes = np.array(draw(st.lists(values, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))).reshape(shape)
    return Sloped(problem, slopes, draw(st.booleans(), label="causal"))


class Sunk(NamedTuple):
    problem: FlashProblem
    sinks: Array  # (H,)


@composite
def problems_with_sinks(draw: st.DrawFn) -> Sunk:
    problem = draw(rectangular_problems())
    values = st.sampled_from((-3.0, -0.5, 0.0, 1.0, 4.0))
    return Sunk(problem, np.array(draw(st.lists(values, min_size=problem.H, max_size=problem.H))))


class Split(NamedTuple):
    problem: FlashProblem
    point: int  # keys [0, point) and [point, S)


@composite
def problems_with_split_points(draw: st.DrawFn) -> Split:
    problem = draw(rectangular_problems())
    return Split(problem, draw(st.integers(0, problem.S), label="split point"))


class Masking(NamedTuple):
    """The options that hide keys or bias them by position: causal, window_size, alibi_slopes."""

    causal: bool = False
    window: tuple[int, int] = (-1, -1)
    slopes: Array | None = None  # (H,) or (B, H)

    def keywords(self) -> dict[str, Any]:
        """flash_attn_func's keywords for these options (only those that are set)."""
        options: dict[str, Any] = {}
        if self.causal:
            options["causal"] = True
        if self.window != (-1, -1):
            options["window_size"] = self.window
        if self.slopes is not None:
            options["alibi_slopes"] = self.slopes
        return options

    def supported(self, takes: Callable[..., bool]) -> Masking:
        """The options a target takes (by its signature, `takes(name)`); the others turned off."""
        return Masking(
            self.causal and takes("causal"),
            self.window if takes("window_size") else (-1, -1),
            self.slopes if takes("alibi_slopes") else None,
        )


def slopes_for(draw: st.DrawFn, B: int, H: int) -> Array:
    """ALiBi slopes, one a head (H,) or one a batch element and head (B, H), 0 included."""
    values = st.sampled_from((0.0, 0.0625, 0.25, 0.5, 1.0))
    shape = (B, H) if draw(st.booleans(), label="per batch") else (H,)
    drawn = draw(st.lists(values, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))), label="slopes")
    return np.array(drawn, dtype=np.float64).reshape(shape)


def masking_for(draw: st.DrawFn, B: int, H: int, L: int, S: int) -> Masking:
    """No mask, causal, a window (its edges and one past them, windows_for) or both, with ALiBi or without."""
    kind = draw(st.sampled_from(("none", "causal", "window", "causal window")), label="mask")
    window = windows_for(draw, L, S) if "window" in kind else (-1, -1)
    slopes = slopes_for(draw, B, H) if draw(st.booleans(), label="alibi") else None
    return Masking("causal" in kind, window, slopes)


class Shifted(NamedTuple):
    problem: FlashProblem
    shift: float  # added to every logit
    masking: Masking


@composite
def problems_with_logit_shifts(draw: st.DrawFn) -> Shifted:
    """Unmasked, causal or windowed problems, with ALiBi or without, and a shift of every logit."""
    problem = draw(rectangular_problems())
    shift = draw(st.sampled_from((-5.0, 0.5, 3.0, 40.0)), label="shift")
    return Shifted(problem, shift, masking_for(draw, problem.B, problem.H, problem.L, problem.S))


class MaskedLse(NamedTuple):
    problem: FlashProblem
    masking: Masking
    softcap: float  # 0: off


@composite
def problems_with_masks(draw: st.DrawFn) -> MaskedLse:
    """Causal or windowed problems (or neither), with ALiBi or without, soft-capped or not."""
    problem = draw(rectangular_problems())
    masking = masking_for(draw, problem.B, problem.H, problem.L, problem.S)
    return MaskedLse(problem, masking, draw(st.sampled_from((0.0, 0.0, 1.0, 5.0)), label="softcap"))


@composite
def problems_with_empty_rows(draw: st.DrawFn) -> Windowed:
    """More queries than keys (L >= S + 3) and a narrow window (left in 0..2, right in 0..1, both < S, so that
    FlashAttention 2 reads it as written): the first L - S - right queries see no key bottom-right, the last
    L - S - left top-left."""
    S = draw(st.sampled_from((3, 4, 5)), label="S")
    L = S + draw(st.sampled_from((3, 4, 6, 14)), label="L - S")
    problem = draw(rectangular_problems(L=L, S=S))
    return Windowed(problem, (draw(st.integers(0, 2), label="left"), draw(st.integers(0, 1), label="right")))


class Packed(NamedTuple):
    """Sequences b = 0, ..., batch - 1 of lengths (L_b, S_b), packed as flash_attn_varlen_func takes them, with the
    options of the call (only those set are passed)."""

    q: Array  # (total_q, H, D)
    k: Array  # (total_k, H_k, D)
    v: Array  # (total_k, H_k, D_v)
    cu_seqlens_q: NDArray[np.int32]
    cu_seqlens_k: NDArray[np.int32]
    causal: bool
    window: tuple[int, int] = (-1, -1)
    slopes: Array | None = None  # (H,) or (batch, H)
    softcap: float = 0.0
    sinks: Array | None = None  # (H,)

    def sequence(self, b: int) -> FlashProblem:
        q0, q1, k0, k1 = (int(a) for a in (*self.cu_seqlens_q[b : b + 2], *self.cu_seqlens_k[b : b + 2]))
        return FlashProblem(self.q[None, q0:q1], self.k[None, k0:k1], self.v[None, k0:k1])

    @property
    def batch(self) -> int:
        return len(self.cu_seqlens_q) - 1

    @property
    def max_seqlen_k(self) -> int:
        return int(np.diff(self.cu_seqlens_k).max(initial=0))

    def slopes_of(self, b: int) -> Array | None:
        """Sequence b's ALiBi slopes, (H,)."""
        if self.slopes is None:
            return None
        return np.asarray(self.slopes[b] if self.slopes.ndim == 2 else self.slopes)

    def supported(self, takes: Callable[..., bool]) -> Packed:
        """The options a target takes (by its signature, `takes(name)`); the others turned off."""
        return self._replace(
            causal=self.causal and takes("causal"),
            window=self.window if takes("window_size") else (-1, -1),
            slopes=self.slopes if takes("alibi_slopes") else None,
            softcap=self.softcap if takes("softcap") else 0.0,
            sinks=self.sinks if takes("sinks") else None,
        )


def packed_sequences(draw: st.DrawFn) -> tuple[Array, Array, Array, NDArray[np.int32], NDArray[np.int32]]:
    """2 to 4 sequences of lengths 0 (empty), small or at a block boundary: q, k, v, cu_seqlens_q, cu_seqlens_k."""
    count = draw(st.integers(2, 4), label="sequences")
    length = st.sampled_from((0, 1, 2, 3, 5, 15, 16, 17, 33))
    pairs = [(draw(length, label="L_b"), draw(length, label="S_b")) for _ in range(count)]
    H_k = draw(st.integers(1, 2), label="H_k")
    H = H_k * draw(st.integers(1, 2), label="group")
    D, D_v = draw(st.integers(1, 3), label="D"), draw(st.integers(1, 3), label="D_v")
    total_q, total_k = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
    q, k, v = random_rows(draw, [(total_q, H, D), (total_k, H_k, D), (total_k, H_k, D_v)])
    cu_q = np.concatenate([[0], np.cumsum([p[0] for p in pairs])]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum([p[1] for p in pairs])]).astype(np.int32)
    return q, k, v, cu_q, cu_k


@composite
def packed_batches(draw: st.DrawFn) -> Packed:
    """2 to 4 sequences, lengths 0 (empty), small or at a block boundary, causal or not, with a window or not (sides
    at their edges, windows_for, up to the longest sequence + 1)."""
    q, k, v, cu_q, cu_k = packed_sequences(draw)
    causal = draw(st.booleans(), label="causal")
    longest = int(max(np.diff(cu_q).max(initial=0), np.diff(cu_k).max(initial=0)))
    window = windows_for(draw, longest, longest) if draw(st.booleans(), label="window") else (-1, -1)
    return Packed(q, k, v, cu_q, cu_k, causal, window)


@composite
def packed_batches_with_score_modifications(draw: st.DrawFn) -> Packed:
    """Packed batches (causal or not) with ALiBi (one slope a head, or a sequence and head), a softcap and sinks,
    each drawn or not."""
    q, k, v, cu_q, cu_k = packed_sequences(draw)
    H, batch = q.shape[1], len(cu_q) - 1
    slopes = slopes_for(draw, batch, H) if draw(st.booleans(), label="alibi") else None
    softcap = draw(st.sampled_from((0.0, 1.0, 5.0)), label="softcap")
    values = st.sampled_from((-3.0, 0.0, 1.0, 4.0))
    sinks = np.array(draw(st.lists(values, min_size=H, max_size=H), label="sinks")) if draw(st.booleans()) else None
    return Packed(q, k, v, cu_q, cu_k, draw(st.booleans(), label="causal"), (-1, -1), slopes, softcap, sinks)


class PackedChange(NamedTuple):
    packed: Packed
    b: int
    changed: Packed


@composite
def packed_batches_with_a_changed_sequence(draw: st.DrawFn) -> PackedChange:
    packed = draw(packed_batches())
    b = draw(st.integers(0, packed.batch - 1), label="b")
    q0, q1, k0, k1 = (int(a) for a in (*packed.cu_seqlens_q[b : b + 2], *packed.cu_seqlens_k[b : b + 2]))
    q, k, v = packed.q.copy(), packed.k.copy(), packed.v.copy()
    q[q0:q1], k[k0:k1], v[k0:k1] = random_rows(draw, [q[q0:q1].shape, k[k0:k1].shape, v[k0:k1].shape], 3.0)
    return PackedChange(packed, b, packed._replace(q=q, k=k, v=v))


class Parts(NamedTuple):
    """Two attention states over disjoint keys (out (B, L, H, D_v), lse (B, H, L)) and the problem they split."""

    problem: FlashProblem
    point: int
    lse_shift: float  # added to every logit, so that lse reaches where exp overflows


@composite
def merge_cases(draw: st.DrawFn) -> Parts:
    problem = draw(rectangular_problems(groups=False))
    return Parts(problem, draw(st.integers(0, problem.S), label="split point"),
                 draw(st.sampled_from((0.0, 0.0, 800.0, -800.0)), label="lse shift"))  # fmt: skip


class MaskedParts(NamedTuple):
    """Two key splits of a problem under causal and a window (bottom-right), so that a query may see no key in one
    part: lse -inf there, out 0."""

    problem: FlashProblem
    point: int
    lse_shift: float
    causal: bool
    window: tuple[int, int]


@composite
def masked_merge_cases(draw: st.DrawFn) -> MaskedParts:
    """merge_cases under causal or not and a window (windows_for): a query may see no key in one part, or in both."""
    problem, point, shift = draw(merge_cases())
    causal = draw(st.booleans(), label="causal")
    window = windows_for(draw, problem.L, problem.S)
    return MaskedParts(problem, point, shift, causal, window)


def varlen_keywords(packed: Packed, **options: Any) -> dict[str, Any]:
    """The keyword arguments of flash_attn_varlen_func for `packed` (its options only when set)."""
    keywords: dict[str, Any] = {
        "cu_seqlens_q": packed.cu_seqlens_q,
        "cu_seqlens_k": packed.cu_seqlens_k,
        "max_seqlen_q": int(np.diff(packed.cu_seqlens_q).max(initial=0)),
        "max_seqlen_k": packed.max_seqlen_k,
        **Masking(packed.causal, packed.window, packed.slopes).keywords(),
    }
    if packed.softcap:
        keywords["softcap"] = packed.softcap
    if packed.sinks is not None:
        keywords["sinks"] = packed.sinks
    return {**keywords, **options}
