"""tests/: the project's own tests, mirroring the packages (the reference in attention/, the helpers, the
catalogues and the checker, the import rules). Under --impl they are skipped by location: they test the project,
not the TARGET; the laws in properties/ and regression/ are what checks a TARGET."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--impl"):
        return
    skip = pytest.mark.skip(reason="a test of the bundled reference (tests/), not of --impl TARGET")
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(skip)
