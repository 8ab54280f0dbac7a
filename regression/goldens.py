"""Golden data files, read with importlib.resources so they work from an installed distribution too."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from properties.helpers.problems import AttentionProblem


@cache
def load(name: str) -> dict[str, Any]:
    """The parsed JSON file regression/data/<name>.json."""
    text = resources.files("regression").joinpath("data").joinpath(f"{name}.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def notebook_12_1_problem() -> AttentionProblem:
    """The inputs of notebook 12.1 as an AttentionProblem."""
    inputs = load("notebook_12_1")["inputs"]
    return AttentionProblem(**{name: np.array(value) for name, value in inputs.items()})
