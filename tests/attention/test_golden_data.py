"""The stored golden inputs are the notebooks' own seeded draws (regression/make_goldens.py replays them)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from attention.notebook import NOTEBOOK_12_1_INPUT_CELL
from regression.goldens import load
from regression.make_goldens import notebook_12_1_inputs, notebook_12_2_inputs


def test_notebook_12_1_inputs_are_the_notebooks_seeded_draws() -> None:
    """The stored inputs are exactly what np.random.seed(3) / seed(0) draw in the notebook's cells."""
    assert notebook_12_1_inputs() == load("notebook_12_1")["inputs"]


def test_notebook_12_2_inputs_are_the_notebooks_seeded_draws() -> None:
    """The stored inputs are exactly what the seeded cells of notebook 12.2 draw."""
    assert notebook_12_2_inputs() == load("notebook_12_2")["inputs"]


def test_the_notebooks_input_cell_draws_the_same_inputs() -> None:
    """The cell the example notebooks carry (attention.notebook) draws the X that notebook_12_1_inputs returns."""
    # The cell's np.random.seed and np.random.normal, on a private RandomState: numpy's global state stays put.
    namespace: dict[str, Any] = {"np": SimpleNamespace(random=np.random.RandomState())}
    exec(NOTEBOOK_12_1_INPUT_CELL, namespace)
    assert np.hstack(namespace["all_x"]).tolist() == load("notebook_12_1")["inputs"]["X"]
