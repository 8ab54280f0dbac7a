"""Hypothesis profiles, the command-line options, and the implementation under test."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from attention import scaled_dot_product_self_attention, self_attention, softmax_cols
from properties.implementation import KINDS, Implementation
from properties.loading import load_function
from properties.strategies import GENERATION

# Profiles. Numerical examples have no meaningful deadline; `ci` extends hypothesis's built-in ci
# profile (derandomised, no example database), which hypothesis selects by itself when CI is set.
settings.register_profile("dev", max_examples=20, deadline=None)
settings.register_profile(
    "ci",
    settings.get_profile("ci"),
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
if "HYPOTHESIS_PROFILE" in os.environ:
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])
elif settings.get_current_profile_name() == "ci":
    settings.load_profile("ci")  # the extended one registered above
else:
    settings.load_profile("dev")

REFERENCE = {
    "scaled": Implementation(
        scaled_dot_product_self_attention, "scaled", "attention:scaled_dot_product_self_attention"
    ),
    "unscaled": Implementation(self_attention, "unscaled", "attention:self_attention"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("attention", "attention-properties")
    group.addoption(
        "--impl",
        default=os.environ.get("ATTENTION_IMPL"),
        metavar="TARGET",
        help="implementation to check: package.module:function or path/to/file.py:function "
        "(default: $ATTENTION_IMPL, else both reference functions)",
    )
    group.addoption(
        "--impl-kind",
        default="scaled",
        choices=KINDS,
        help="which notebook function TARGET is: scaled (eq. 12.9, default) or unscaled (eq. 12.8)",
    )
    group.addoption(
        "--square",
        action="store_true",
        default=False,
        help="generate only D_q = D_v = D, the notebook's own setting",
    )


def implementations_under_test(config: pytest.Config) -> list[Implementation]:
    """The TARGET given with --impl / ATTENTION_IMPL, else the two reference functions."""
    target = config.getoption("--impl")
    if not target:
        return list(REFERENCE.values())
    try:
        function = load_function(target)
    except Exception as error:
        raise pytest.UsageError(f"--impl {target}: {error}") from error
    return [Implementation(function, config.getoption("--impl-kind"), target)]


def pytest_configure(config: pytest.Config) -> None:
    GENERATION.square = bool(config.getoption("--square"))
    config.stash[IMPLEMENTATIONS] = implementations_under_test(config)


IMPLEMENTATIONS = pytest.StashKey[list[Implementation]]()


def pytest_report_header(config: pytest.Config) -> list[str]:
    names = ", ".join(f"{impl.name} ({impl.kind})" for impl in config.stash[IMPLEMENTATIONS])
    return [
        f"attention implementation under test: {names}",
        f"hypothesis profile: {settings.get_current_profile_name()}",
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "implementation" in metafunc.fixturenames:
        impls = metafunc.config.stash[IMPLEMENTATIONS]
        metafunc.parametrize("implementation", impls, ids=[f"{i.kind}" for i in impls], scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the battery's own meta-tests; under --impl, skip them and what concerns only the reference."""
    for item in items:
        if "_catches" in item.name or item.name.startswith("test_strategy_"):
            item.add_marker(pytest.mark.meta)
    if not config.getoption("--impl"):
        return
    skip = pytest.mark.skip(reason="concerns the bundled reference or the battery itself, not --impl TARGET")
    for item in items:
        if item.get_closest_marker("reference_api") or item.get_closest_marker("meta"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def softmax() -> object:
    """The column softmax under test: the reference's (a notebook under grading brings its own)."""
    return softmax_cols
