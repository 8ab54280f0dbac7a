"""The battery's hypothesis profiles, options (--impl, --impl-kind, --softmax, --square) and fixtures live in
properties/plugin.py, so that an installed battery (attention-check) has them too."""

pytest_plugins = ("properties.plugin",)
