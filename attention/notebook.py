"""The inputs of notebook 12.1 (Understanding Deep Learning, Chap. 12), drawn exactly as its cells draw them:
the one home of that draw, for `python -m attention`, the golden values and the example notebooks."""

from __future__ import annotations

import numpy as np

from attention._checks import CheckedArguments

# The notebook's cell that draws the inputs, verbatim; notebook_12_1_inputs() draws the same X.
NOTEBOOK_12_1_INPUT_CELL = (
    "np.random.seed(3)\nN = 3\nD = 4\nall_x = []\nfor n in range(N):\n  all_x.append(np.random.normal(size=(D,1)))"
)


def notebook_12_1_inputs() -> CheckedArguments:
    """X (D = 4, N = 3) and the six parameters as notebook 12.1 draws them, in the notebook's argument order.

    X: np.random.seed(3), then N draws of a (D, 1) column. Then np.random.seed(0) and, in this order,
    omega_q, omega_k, omega_v (D x D) and beta_q, beta_k, beta_v (D x 1). A local RandomState gives the same
    streams without touching numpy's global state.
    """
    N, D = 3, 4
    inputs = np.random.RandomState(3)
    X = np.hstack([inputs.normal(size=(D, 1)) for _ in range(N)])
    weights = np.random.RandomState(0)
    omega_q, omega_k, omega_v = (weights.normal(size=(D, D)) for _ in range(3))
    beta_q, beta_k, beta_v = (weights.normal(size=(D, 1)) for _ in range(3))
    return CheckedArguments(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k)
