"""Loads the battery's pytest plugin, properties/plugin.py: the hypothesis profiles (dev, ci, thorough), the
options --impl, --impl-kind, --softmax, --multihead, --square and (for row-convention
kernels) --convention, --layout, --array, --dtype, and the fixtures `implementation`, `kernel`, `softmax` and
`multihead`. It lives in the package so that an installed battery
(attention-check) has them too; `pytest --help` lists the options under "attention-properties"."""

pytest_plugins = ("properties.plugin",)
