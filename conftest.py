"""Loads the battery's pytest plugin, properties/plugin.py: the hypothesis profiles (dev, ci, thorough), the
options --impl, --impl-kind, --softmax, --multihead, --square and (for row-convention
kernels) --convention, --layout, --array, --dtype, and the fixtures `implementation`, `kernel`, `softmax` and
`multihead`. It lives in the package so that an installed battery
(attention-check) has them too; `pytest --help` lists the options under "attention-properties"."""

from pathlib import Path

import pytest

pytest_plugins = ("properties.plugin",)
TESTS = Path(__file__).parent / "tests"


@pytest.hookimpl(trylast=True)  # after the battery's plugin has read its options
def pytest_configure(config: pytest.Config) -> None:
    """`pytest` alone runs the battery (--suite battery): the project's own tests, tests/, are not even collected;
    `pytest --suite full`, a -m expression or a named path runs them."""
    from properties.plugin import suite

    if suite(config) == "battery":
        config.args[:] = [arg for arg in config.args if (config.rootpath / arg).resolve() != TESTS]
