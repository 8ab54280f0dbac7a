"""Example notebooks in the form of notebook 12.1, for the checker's tests, CI and the README.

Each is built from cells written here: the notebook's imports (matplotlib among them), its seeded data
cells, softmax_cols as the notebook gives it (no shift), the two attention functions, and a cell that
plots and one that raises, neither of which the checker may run.
"""

from __future__ import annotations

import json
from pathlib import Path

from attention.notebook import NOTEBOOK_12_1_INPUT_CELL
from properties.helpers.notebook import COURSE_SOFTMAX_COLS

IMPORTS = "import numpy as np\nimport matplotlib.pyplot as plt\n%matplotlib inline"
DATA = NOTEBOOK_12_1_INPUT_CELL
SOFTMAX_COLS = COURSE_SOFTMAX_COLS
TEMPLATE = """def {name}(X,omega_v, omega_q, omega_k, beta_v, beta_q, beta_k):
  # TODO -- Write this function
  # Replace this line
  X_prime = np.zeros_like(X);

  return X_prime"""
SOLVED = """def {name}(X,omega_v, omega_q, omega_k, beta_v, beta_q, beta_k):
  queries = omega_q @ X + beta_q
  keys = omega_k @ X + beta_k
  values = omega_v @ X + beta_v
  dot_products = keys.T @ queries{scaling}
  attentions = softmax_cols(dot_products)
  X_prime = values @ attentions
  return X_prime"""
SCALE_BY_D_Q = "\n  dot_products = dot_products / np.sqrt(omega_q.shape[0])"
# The bug of many submitted solutions: the input dimension D instead of D_q. The notebook has D = D_q = 4,
# so its printed values are reproduced exactly.
SCALE_BY_D = "\n  dot_products = dot_products / np.sqrt(X.shape[0])"
# Scaled functions of other example notebooks: a mistake (transposed logits, a notebook global), and files
# that loop, exhaust memory, crash the interpreter or print megabytes (the grader must contain each).
SCALED = {
    "transposed": SOLVED.replace("keys.T @ queries", "queries.T @ keys").replace("{scaling}", SCALE_BY_D_Q),
    "global_D": SOLVED.replace("{scaling}", "\n  dot_products = dot_products / np.sqrt(D)"),
    "looping": "def {name}(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k):\n  while True:\n    pass",
    "memory_hungry": SOLVED.replace("{scaling}", "\n  scratch = np.ones((40000, 40000))" + SCALE_BY_D_Q),
    "crashing": "def {name}(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k):\n  import ctypes\n"
    "  return ctypes.string_at(0)",
    "printing": SOLVED.replace("{scaling}", "\n  print('x' * 10**6)" + SCALE_BY_D_Q),
}
# The course's unfilled notebook (nbgrader form): each function to write has a docstring, the steps as comments,
# `# YOUR CODE HERE`, `raise NotImplementedError()`, then the template's return of names that only later cells
# assign at top level (X_prime, attentions): that return never runs.
COURSE_PARAMETERS = """# Set seed so we get the same random numbers
np.random.seed(0)

# Number of dimensions of each input
D = 4
# Choose random values for the parameters
omega_q = np.random.normal(size=(D,D))
omega_k = np.random.normal(size=(D,D))
omega_v = np.random.normal(size=(D,D))
beta_q = np.random.normal(size=(D,1))
beta_k = np.random.normal(size=(D,1))
beta_v = np.random.normal(size=(D,1))"""
COURSE_MATRIX = """# Copy data into matrix
X = np.zeros((D, N))
X[:,0] = np.squeeze(all_x[0])
X[:,1] = np.squeeze(all_x[1])
X[:,2] = np.squeeze(all_x[2])"""
COURSE_TEMPLATE = '''def {name}(X,omega_v, omega_q, omega_k, beta_v, beta_q, beta_k):
  """
  {what}

  Args:
    X: D x N matrix of N inputs (one per column)
    omega_v, omega_q, omega_k: weight matrices of the values, queries and keys
    beta_v, beta_q, beta_k: biases of the values, queries and keys (columns)

  Returns:
    X_prime: the outputs, one column per input
    attentions: the N x N attention weights
  """
  # 1. Compute queries, keys, and values
  # 2. Compute dot products{scaling}
  # 3. Apply softmax to calculate attentions
  # 4. Weight values by attentions
  # YOUR CODE HERE
  raise NotImplementedError()

  return X_prime, attentions'''
COURSE_CALL = """# Run the self attention mechanism
X_prime, attentions = {name}(X,omega_v, omega_q, omega_k, beta_v, beta_q, beta_k)

# Print out the results
np.set_printoptions(precision=3)
print("Your answer:")
print(X_prime)
print(attentions)"""
KINDS = ("template", "course_template", "solved", "sqrt_D", *SCALED)
PLOT = "plt.plot(np.arange(10))\nplt.show()"
RAISES = "raise RuntimeError('a later cell of the notebook that must not run')"


def notebook(cells: list[str]) -> dict[str, object]:
    """A minimal nbformat-4 notebook with these code cells."""
    return {
        "nbformat": 4,
        "nbformat_minor": 0,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "cells": [
            {"cell_type": "code", "source": cell.splitlines(keepends=True), "metadata": {}, "outputs": [],
             "execution_count": None}
            for cell in cells
        ],
    }  # fmt: skip


def cells_for(kind: str) -> list[str]:
    """Code cells of the template ("template"), a correct solution ("solved"), a sqrt(D) one ("sqrt_D"), or
    a correct self_attention with one of the scaled functions of SCALED."""
    if kind == "course_template":
        cells = [IMPORTS, DATA, COURSE_PARAMETERS, SOFTMAX_COLS, COURSE_MATRIX]
        for name, what, scaling in (
            ("self_attention", "Self-attention (eq. 12.8): the outputs X' and the attentions.", ""),
            ("scaled_dot_product_self_attention", "Scaled dot-product self-attention (eq. 12.9).",
             "\n  # 2b. Scale them by 1 / sqrt(D_q)"),
        ):  # fmt: skip
            cells += [COURSE_TEMPLATE.format(name=name, what=what, scaling=scaling), COURSE_CALL.format(name=name)]
        return [*cells, PLOT, RAISES]
    if kind in SCALED:
        unscaled = SOLVED.format(name="self_attention", scaling="")
        scaled = SCALED[kind].replace("{name}", "scaled_dot_product_self_attention").replace("{scaling}", "")
    elif kind == "template":
        unscaled = TEMPLATE.format(name="self_attention")
        scaled = TEMPLATE.format(name="scaled_dot_product_self_attention")
    else:
        scaling = SCALE_BY_D if kind == "sqrt_D" else SCALE_BY_D_Q
        unscaled = SOLVED.format(name="self_attention", scaling="")
        scaled = SOLVED.format(name="scaled_dot_product_self_attention", scaling=scaling)
    return [IMPORTS, DATA, SOFTMAX_COLS, unscaled, PLOT, scaled, RAISES]


def write_notebook(path: Path, kind: str) -> Path:
    """Write example notebook `kind` (one of KINDS) to `path`."""
    path.write_text(json.dumps(notebook(cells_for(kind)), indent=1))
    return path
