"""tests/: the project's own tests, mirroring the packages (the reference in attention/, the helpers, the
catalogues and the checker, the import rules). Under --impl they are skipped by location: they test the project,
not the TARGET; the laws in properties/ and regression/ are what checks a TARGET."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture(scope="session", autouse=True)
def draws_cache_of_the_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The graders these tests start keep their shared draws in a directory of the session, not the user's cache
    (unless ATTENTION_DRAWS_CACHE is set)."""
    if "ATTENTION_DRAWS_CACHE" in os.environ:
        yield
        return
    os.environ["ATTENTION_DRAWS_CACHE"] = str(tmp_path_factory.mktemp("draws"))
    try:
        yield
    finally:
        del os.environ["ATTENTION_DRAWS_CACHE"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--impl"):
        return
    skip = pytest.mark.skip(reason="a test of the bundled reference (tests/), not of --impl TARGET")
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(skip)
