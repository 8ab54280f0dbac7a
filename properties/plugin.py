"""The battery's pytest plugin: hypothesis profiles, command-line options, the implementation under test,
and (for attention-check) a machine-readable report of one verdict per law.

The repository's conftest.py loads it; `attention-check` passes it with `-p properties.plugin`, so the
battery also runs from a regular install, from any directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from properties.implementation import (
    REFERENCE,
    REFERENCE_MULTIHEAD,
    REFERENCE_SOFTMAX,
    FunctionUnderTest,
    Implementation,
    Multihead,
    Softmax,
)
from properties.loading import load_function
from properties.options import GENERATION, KINDS, MARKERS
from properties.verdicts import VerdictRecorder

# Profiles. Numerical examples have no meaningful deadline; `ci` extends hypothesis's built-in ci
# profile (derandomised, no example database), which hypothesis selects by itself when CI is set.
settings.register_profile("dev", max_examples=20, deadline=None)
settings.register_profile(
    "ci", settings.get_profile("ci"), max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
if "HYPOTHESIS_PROFILE" in os.environ:
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])
elif settings.get_current_profile_name() == "ci":
    settings.load_profile("ci")  # the extended one registered above
else:
    settings.load_profile("dev")

IMPLEMENTATIONS = pytest.StashKey[list[Implementation]]()


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
        "--softmax",
        default=None,
        metavar="TARGET",
        help="column softmax to check with the softmax laws (default: the reference's, unless --impl is given)",
    )
    group.addoption(
        "--multihead",
        default=None,
        metavar="TARGET",
        help="multi-head attention to check, f(X, heads, omega_c) (default: the reference's, unless --impl is given)",
    )
    group.addoption("--square", action="store_true", default=False, help="draw only D_q = D_v = D (the notebook's)")
    group.addoption("--attention-report", default=None, metavar="FILE", help="write one verdict per law as JSON")


def _load(target: str, option: str) -> Callable[..., Any]:
    try:
        return load_function(target)
    except Exception as error:
        raise pytest.UsageError(f"{option} {target}: {error}") from error


def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    GENERATION.square = bool(config.getoption("--square"))
    target = config.getoption("--impl")
    if target:
        kind = config.getoption("--impl-kind")
        config.stash[IMPLEMENTATIONS] = [Implementation(_load(target, "--impl"), kind, target)]
    else:
        config.stash[IMPLEMENTATIONS] = list(REFERENCE.values())
    report = config.getoption("--attention-report")
    if report:
        config.pluginmanager.register(VerdictRecorder(Path(report)), "attention-verdicts")


def pytest_report_header(config: pytest.Config) -> list[str]:
    names = ", ".join(f"{impl.name} ({impl.kind})" for impl in config.stash[IMPLEMENTATIONS])
    return [
        f"attention implementation under test: {names}",
        f"hypothesis profile: {settings.get_current_profile_name()}",
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "implementation" in metafunc.fixturenames:
        impls = metafunc.config.stash[IMPLEMENTATIONS]
        metafunc.parametrize("implementation", impls, ids=[impl.kind for impl in impls], scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under --impl, skip the battery's meta-tests (marked `meta`): they test the battery, not TARGET.

    The reference's own tests (tests/) are skipped under --impl by their folder's conftest.py.
    """
    if not config.getoption("--impl"):
        return
    skip = pytest.mark.skip(reason="a meta-test of the battery itself, not of --impl TARGET")
    for item in items:
        if item.get_closest_marker("meta"):
            item.add_marker(skip)


def _under_test(config: pytest.Config, option: str, what: str, reference: FunctionUnderTest) -> Any:
    """The function given with `option`, else the reference's; skips under --impl when none was given."""
    target = config.getoption(option)
    if target:
        return type(reference)(_load(target, option), target)
    if config.getoption("--impl"):
        pytest.skip(f"no {what} under test: pass {option} TARGET to check one")
    return reference


@pytest.fixture(scope="session")
def softmax(pytestconfig: pytest.Config) -> Softmax:
    """The column softmax under test: --softmax TARGET, else the reference's (not under --impl)."""
    result: Softmax = _under_test(pytestconfig, "--softmax", "column softmax", REFERENCE_SOFTMAX)
    return result


@pytest.fixture(scope="session")
def multihead(pytestconfig: pytest.Config) -> Multihead:
    """The multi-head attention under test: --multihead TARGET, else the reference's (not under --impl)."""
    result: Multihead = _under_test(pytestconfig, "--multihead", "multi-head attention", REFERENCE_MULTIHEAD)
    return result
