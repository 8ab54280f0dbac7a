"""Meta-tests of the catalogue (properties/catalogues/registry.py): every law is listed, every law but the stored golden
values has a meta-test, and every mistake in properties/catalogues/mistakes/ is caught by some law."""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Any, cast

import numpy as np
import pytest
from hypothesis import strategies as st
from numpy.typing import NDArray

from properties import plugin
from properties.catalogues import mistakes as b
from properties.catalogues.registry import NotALaw, catalogue, classify, coverage, is_law_module, laws, title
from properties.checker.cli import main

Array = NDArray[np.float64]

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


@pytest.mark.parametrize(
    ("markers", "expected"),
    [
        (["parametrize", "semantics"], "semantics"),
        (["semantics", "semantics"], "semantics"),  # a function's own marker repeating its module's
        (["meta", "semantics"], None),
        (["benchmark"], None),
        (["reference", "parametrize"], None),
    ],
)
def test_a_law_has_exactly_one_category(markers: list[str], expected: str | None) -> None:
    assert classify(markers, "properties.test_x.test_y") == expected


@pytest.mark.parametrize("markers", [[], ["parametrize"], ["semantics", "robustness"]])
def test_anything_else_in_a_law_module_is_an_error_naming_the_function(markers: list[str]) -> None:
    with pytest.raises(NotALaw, match=r"properties\.test_x\.test_y: a test function of a law module has"):
        classify(markers, "properties.test_x.test_y")


def test_a_law_is_never_marked_slow() -> None:
    """The default run deselects slow tests: a slow law would go unchecked there; a slow meta-test may exist."""
    with pytest.raises(NotALaw, match=r"properties\.test_x\.test_y: a law is never marked slow"):
        classify(["semantics", "slow"], "properties.test_x.test_y")
    assert classify(["meta", "slow"], "properties.test_x.test_y") is None


class FakeItem:
    """What the plugin's collection check reads of a pytest item."""

    def __init__(self, module: str, name: str, markers: list[str]) -> None:
        self.module = ModuleType(module)
        self.name = self.originalname = name
        self.markers = [getattr(pytest.mark, marker).mark for marker in markers]

    def iter_markers(self) -> list[pytest.Mark]:
        return self.markers


def test_the_plugin_fails_the_collection_on_a_test_that_is_not_a_law() -> None:
    items: list[Any] = [
        FakeItem("properties.test_fake", "test_a_law", ["semantics"]),
        FakeItem("properties.test_fake", "test_without_category", []),
        FakeItem("tests.test_anything", "test_not_in_a_law_module", []),
    ]
    with pytest.raises(pytest.UsageError, match=r"properties\.test_fake\.test_without_category") as raised:
        plugin.pytest_collection_modifyitems(cast(pytest.Config, None), items)
    assert "test_a_law" not in str(raised.value) and "test_not_in_a_law_module" not in str(raised.value)
    assert is_law_module("regression.test_notebook_12_1") and not is_law_module("tests.helpers.test_strategies")


def test_every_law_of_the_registry_is_collected_with_its_category() -> None:
    """The registry's laws are exactly the test functions the battery's modules define with a category."""
    names = {(law.module, law.name): law.category for law in laws()}
    assert ("properties.test_masks", "test_masked_keys_influence_nothing") in names
    assert names[("regression.test_notebook_12_1", "test_scaled_attentions_match_the_known_values")] == "golden"
    assert all(not name.endswith("_catches") for _, name in names)


def test_the_meta_tests_of_a_law_share_its_draws_and_each_gets_a_fresh_copy() -> None:
    """assert_law_fails replays one law's batches (drawn once) on every broken implementation, each example a deep
    copy: a broken implementation that writes into its inputs leaves the shared draws as they were drawn."""
    from hypothesis import given
    from hypothesis.extra import numpy as hnp

    from properties.helpers.meta import assert_law_fails, drawn_batch

    @given(a=hnp.arrays(np.float64, 3, elements=st.floats(1, 2)))
    def law(write: float, a: Array) -> None:
        a *= write  # as a broken implementation that writes into its inputs
        assert np.all(a <= 2.0), "the entries stay in [1, 2]"

    assert drawn_batch(law, 0) is drawn_batch(law, 0) and len(drawn_batch(law, 0)) > 1
    before = repr(drawn_batch(law, 0))
    assert_law_fails(law, write=3.0)
    assert_law_fails(law, write=5.0)
    assert repr(drawn_batch(law, 0)) == before
