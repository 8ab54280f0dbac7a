"""The property battery: strategies, tolerances, laws and meta-tests for self-attention implementations.

`from properties import check` checks a function from a notebook cell (properties.checker.notebook_check); the
checker is imported on that first use only, so that importing the battery or its pytest plugin loads none of it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check"]


def __getattr__(name: str) -> Any:
    if name == "check":
        from properties.checker.notebook_check import check

        return check
    raise AttributeError(f"module 'properties' has no attribute {name!r}")
