"""The battery's names and switches, in one small module that the plugin, the CLI and the laws all import.

Nothing here imports pytest's plugin or loads hypothesis profiles: importing it has no side effects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Every law carries one of these markers; attention-check groups its rows by them, in this order.
CATEGORIES = ("semantics", "conventions", "robustness", "hygiene", "gradients", "golden")
MARKERS = {
    "semantics": "a law of what self-attention computes",
    "conventions": "choices where the mathematics leaves freedom (a query that sees no key), reported apart",
    "robustness": "large logits, overflow, extreme inputs",
    "hygiene": "input mutation, determinism, hidden state",
    "gradients": "laws of a backward pass (dq, dk, dv of <d_out, out>): --backward TARGET, else the reference's",
    "golden": "stored values from the notebooks and the reference",
    "meta": "a meta-test of the battery itself (a law must fail on a broken implementation); skipped under --impl",
    "reference": "a check of the bundled reference itself in a law module, not a law of TARGET",
    "slow": "a project test that starts subprocesses (the CLI end to end, grading workers): deselected unless "
    "--run-slow or a -m expression naming slow (.ci/run runs them)",
}

# The fixtures a law checks (the functions under test, filled by properties/plugin.py), most specific first: a law
# that takes `kernel` checks the row-convention kernel, even if it also takes `implementation`. The rest of a law's
# arguments are drawn by hypothesis or parametrized.
FIXTURES = ("backward", "softmax", "multihead", "merge", "varlen", "flash", "kernel", "implementation")

Kind = Literal["scaled", "unscaled"]
KINDS: tuple[Kind, ...] = ("scaled", "unscaled")
# The bundled reference, as TARGETs for --impl.
REFERENCE_TARGETS: dict[Kind, str] = {
    "scaled": "attention:scaled_dot_product_self_attention",
    "unscaled": "attention:self_attention",
}
SOFTMAX_REFERENCE_TARGET = "attention:softmax_cols"
MULTIHEAD_REFERENCE_TARGET = "attention:multihead_scaled_self_attention"

# What `pytest` runs (--suite): the battery (its laws and golden values, on the implementation under test), or also
# the battery's meta-tests and, in the repository, the project's own tests (tests/; the repository's conftest.py).
SUITES = ("battery", "full")

# Hypothesis profiles (registered by properties/plugin.py) and the largest D, D_q, D_v each draws.
PROFILES = ("dev", "ci", "thorough")
SIZE_LIMITS = {"dev": 5, "ci": 6, "thorough": 9}
DEFAULT_SIZE_LIMIT = 6


@dataclass
class Generation:
    """Switches for what the strategies generate; properties/plugin.py sets them from the command line."""

    square: bool = False  # --square: only D_q = D_v = D, the notebook's own setting


GENERATION = Generation()

# The row convention (--convention sdpa, properties/helpers/row_convention.py): f(query, key, value, ...) on
# (..., L, E) rows.
CONVENTIONS = ("notebook", "sdpa", "flash")
LAYOUTS = ("BHLE", "BLHE")  # (batch, heads, length, width) as torch; (batch, length, heads, width) as jax
ARRAYS = ("numpy", "torch", "jax")
DTYPES = ("float16", "bfloat16", "float32", "float64")
SDPA_REFERENCE_TARGET = "attention.rows:scaled_dot_product_attention"
# The bundled backward passes, by the calling convention and kind of the forward they differentiate: pytest's
# default `backward` (every one of a kind) and attention-check's --backward on the bundled reference (that of its
# convention). The row kernel's backward takes its scale as a keyword: one for both kinds.
ROW_BACKWARD_TARGET = "attention:scaled_dot_product_attention_backward"
BACKWARD_REFERENCE_TARGETS: dict[tuple[str, Kind], str] = {
    ("sdpa", "scaled"): ROW_BACKWARD_TARGET,
    ("sdpa", "unscaled"): ROW_BACKWARD_TARGET,
    ("notebook", "scaled"): "attention:scaled_dot_product_self_attention_vjp",
    ("notebook", "unscaled"): "attention:self_attention_vjp",
}

# FlashAttention's convention (--convention flash, properties/helpers/flash_convention.py): flash_attn_func(q, k, v,
# ...) on (batch, length, heads, width) rows with L != S; its packed form, its log-sum-exp merge; causal alignments.
FLASH_REFERENCE_TARGET = "attention.flash:flash_attn_func"
VARLEN_REFERENCE_TARGET = "attention.flash:flash_attn_varlen_func"
MERGE_REFERENCE_TARGET = "attention.flash:merge_attention_states"
ALIGNMENTS = ("top-left", "bottom-right")  # where causal puts its triangle when L != S: torch's, FlashAttention's
