"""Diagnosis of the kernel mistakes (properties/catalogues/mistakes/kernels.py): each broken FlashAttention-signature
kernel, row-convention kernel checked through the flash adapter, packed kernel and merge is named as itself on the
probes alone, and correct kernels (the bundled ones, split-KV, float32, FlashAttention 2's choices) are named
nothing."""

from __future__ import annotations

from typing import Any

import pytest

from properties.catalogues import mistakes as b
from properties.catalogues.correct import CATALOGUE
from properties.checker.diagnosis import (
    FLASH_MISTAKES,
    FLASH_PROBES,
    MERGE_MISTAKES,
    SDPA_KERNEL_MISTAKES,
    VARLEN_LSE_MISTAKES,
    VARLEN_MISTAKES,
    diagnose,
    diagnose_flash,
    diagnose_merge,
    diagnose_varlen,
)
from properties.helpers.flash_convention import FlashImplementation, MergeImplementation, VarlenImplementation
from properties.helpers.row_convention import Convention

pytestmark = pytest.mark.meta


def test_every_kernel_mistake_of_the_catalogue_has_a_diagnosis() -> None:
    """Each flash_, sdpa_, varlen_ and merge_ mistake of kernels.py is in one of the diagnosis tables."""
    from properties.catalogues.mistakes import kernels

    tables = (FLASH_MISTAKES, SDPA_KERNEL_MISTAKES, VARLEN_MISTAKES, VARLEN_LSE_MISTAKES, MERGE_MISTAKES)
    named = {m.function.__name__ for table in tables for m in table}
    catalogue = {name for name, value in vars(kernels).items() if hasattr(value, "mistake") and callable(value)}
    assert catalogue == named


@pytest.mark.parametrize("mistake", FLASH_MISTAKES + SDPA_KERNEL_MISTAKES, ids=lambda m: m.function.__name__)
def test_each_kernel_mistake_is_diagnosed_as_itself(mistake: Any) -> None:
    """Checked through the flash convention (broken_flash: its own source and alignment), on the probes alone."""
    diagnosis = diagnose_flash(b.broken_flash(mistake.function), None)
    assert diagnosis is not None and diagnosis.mistake == mistake.function.__name__, diagnosis


@pytest.mark.parametrize("mistake", VARLEN_MISTAKES + VARLEN_LSE_MISTAKES, ids=lambda m: m.function.__name__)
def test_each_packed_mistake_is_diagnosed_as_itself(mistake: Any) -> None:
    diagnosis = diagnose_varlen(b.broken_varlen(mistake.function))
    assert diagnosis is not None and diagnosis.mistake == mistake.function.__name__, diagnosis


@pytest.mark.parametrize("mistake", MERGE_MISTAKES, ids=lambda m: m.function.__name__)
def test_each_merge_mistake_is_diagnosed_as_itself(mistake: Any) -> None:
    diagnosis = diagnose_merge(b.broken_merge(mistake.function))
    assert diagnosis is not None and diagnosis.mistake == mistake.function.__name__, diagnosis


@pytest.mark.parametrize(
    "variant", [v for v in CATALOGUE if v.role in ("flash", "varlen", "merge")], ids=lambda v: v.name
)
def test_correct_kernels_get_no_diagnosis(variant: Any) -> None:
    """The correct catalogue's kernels (split-KV, float32, FlashAttention 2's choices, the log-domain merge)."""
    if variant.role == "flash":
        assert diagnose_flash(FlashImplementation(variant.function, variant.name), None) is None
    elif variant.role == "varlen":
        assert diagnose_varlen(VarlenImplementation(variant.function, variant.name)) is None
    else:
        assert diagnose_merge(MergeImplementation(variant.function, variant.name)) is None


def test_the_bundled_kernels_get_no_diagnosis() -> None:
    from attention.flash import flash_attn_func, flash_attn_varlen_func, merge_attention_states
    from attention.rows import scaled_dot_product_attention

    assert diagnose_flash(FlashImplementation(flash_attn_func, "flash_attn_func"), None) is None
    sdpa = FlashImplementation(scaled_dot_product_attention, "sdpa", Convention(), "top-left", "sdpa")
    assert diagnose_flash(sdpa, None) is None
    assert diagnose_varlen(VarlenImplementation(flash_attn_varlen_func, "varlen")) is None
    assert diagnose_merge(MergeImplementation(merge_attention_states, "merge")) is None


def test_a_kernel_law_fail_is_diagnosed_from_its_arguments() -> None:
    """As the checker calls it: the law's keyword arguments, the problem inside a drawn case."""
    problem = FLASH_PROBES[0][0]
    flash = b.broken_flash(b.flash_window_right_off_by_one)
    diagnosis = diagnose({"flash": flash, "case": (problem, (1, 0))})
    assert diagnosis is not None and diagnosis.mistake == "flash_window_right_off_by_one"
    diagnosis = diagnose({"varlen": b.broken_varlen(b.varlen_sees_the_previous_last_block), "packed": None})
    assert diagnosis is not None and diagnosis.mistake == "varlen_sees_the_previous_last_block"
