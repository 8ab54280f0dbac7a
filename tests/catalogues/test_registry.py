"""Meta-tests of the catalogue (properties/catalogues/registry.py): every law is listed, every law but the stored golden
values has a meta-test, and every mistake in properties/catalogues/mistakes/ is caught by some law."""

from __future__ import annotations

import inspect

import pytest

from properties.catalogues import mistakes as b
from properties.catalogues.registry import catalogue, coverage, title
from properties.checker.cli import main

pytestmark = pytest.mark.meta

# What properties/catalogues/mistakes/ defines besides the mistakes: the correct starting points and the wrappers.
HELPERS = {
    "stable_softmax",
    "correct_attention",
    "masked_attention",
    "x_prime_only",
    "mistake",
    "broken",
    "broken_multihead",
    "broken_softmax",
    "broken_kernel",
    "rows_softmax",
}


def test_every_law_but_the_golden_values_catches_a_known_mistake() -> None:
    laws = catalogue()
    assert laws, "no laws found"
    missing = [law.name for law in laws if law.category != "golden" and not law.catches]
    assert not missing, f"laws without a meta-test: {missing}"


def test_every_mistake_in_the_catalogue_of_broken_implementations_is_caught() -> None:
    caught = {
        mistake.name.split(" ")[0].removesuffix("_x_prime_only") for law in catalogue() for mistake in law.catches
    }
    defined = {
        name
        for name, function in inspect.getmembers(b, inspect.isfunction)
        if function.__module__ == b.__name__ and not name.startswith("_") and name not in HELPERS
    }
    assert not defined - caught, f"mistakes no meta-test hands to a law: {sorted(defined - caught)}"


def test_the_options_matrix_covers_every_option_and_combination() -> None:
    """Each option, each mode of the positions, each pairwise combination of the options and the multi-head
    mixing have at least one known mistake that a law catches."""
    matrix = coverage(catalogue())
    for option in ("positional (input)", "positional (query_key)", "mask", "causal", "bias", "mask + causal",
                   "mask + bias", "causal + bias", "positional + mask", "positional + causal", "positional + bias",
                   "multi-head heads", "multi-head heads of different shapes", "multi-head mixing",
                   "multi-head square mixing"):  # fmt: skip
        assert option in matrix, f"no known mistake in {option}"


def test_attention_check_lists_every_law(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    printed = capsys.readouterr().out
    for law in catalogue():
        assert title(law.name) in printed
    assert "causal_or_mask: causal with a mask sees the keys visible under both" in printed
