"""What `pytest` runs (--suite, properties/plugin.py and the repository's conftest.py): alone, the battery (laws and
golden values); with --suite full, paths, a -m expression or --run-slow, also the meta-tests and tests/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from properties.plugin import suite

ROOT = Path(__file__).parent.parent


def config(source: pytest.Config.ArgsSource, **options: Any) -> pytest.Config:
    """A stand-in for pytest's config: the arguments' source and the options suite() reads."""
    values = {"--suite": None, "-m": "", "--run-slow": False, **options}
    return cast(pytest.Config, SimpleNamespace(args_source=source, getoption=values.__getitem__))


def test_pytest_alone_runs_the_battery_and_anything_named_runs_the_full_suite() -> None:
    testpaths, named = pytest.Config.ArgsSource.TESTPATHS, pytest.Config.ArgsSource.ARGS
    assert suite(config(testpaths)) == "battery"
    assert suite(config(testpaths, **{"--suite": "full"})) == "full"
    assert suite(config(testpaths, **{"-m": "meta"})) == "full"
    assert suite(config(testpaths, **{"--run-slow": True})) == "full"
    assert suite(config(named)) == "full"
    assert suite(config(named, **{"--suite": "battery"})) == "battery"


def collected(*arguments: str) -> list[str]:
    """The node ids `pytest --collect-only` collects from the repository's root with these arguments."""
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *arguments]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return [line for line in run.stdout.splitlines() if "::" in line]


@pytest.mark.slow
def test_the_suites_collect_what_they_say() -> None:
    """Alone: laws and golden values, no meta-test, nothing of tests/; --suite full: those too; a named path: the
    whole file, meta-tests included."""
    battery, full = collected(), collected("--suite", "full")
    assert battery and not any(node.startswith("tests/") for node in battery)
    assert not any("catches" in node for node in battery)
    assert set(battery) < set(full)
    assert any(node.startswith("tests/") for node in full) and any("catches" in node for node in full)
    masks = collected("properties/test_masks.py")
    assert any("catches" in node for node in masks)


@pytest.mark.slow
def test_under_impl_nothing_that_checks_the_reference_runs() -> None:
    """`pytest --impl TARGET` counts only laws of TARGET: the reference's sinusoidal encoding laws and the checks of
    the bundled reference (marked reference) skip, saying so."""
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "properties/test_positions.py",
               "regression/test_backward_differential.py", "--impl", "attention:scaled_dot_product_self_attention",
               "-k", "sinusoidal or backward"]  # fmt: skip
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "passed" not in run.stdout.splitlines()[-1], run.stdout[-2000:]
    assert "the reference's sinusoidal encoding, not of --impl TARGET" in run.stdout
    assert "a check of the bundled reference itself, not of --impl TARGET" in run.stdout
