"""Regenerate regression/data/notebook_12_1.json: `python -m regression.make_goldens`.

Inputs come from the notebook's own seeds; the full-precision outputs from `regression.exact`
(50-digit decimals, independent of `attention/`); the printed values are copied from the notebook.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import numpy as np

from attention import notebook as attention_notebook
from regression.exact import PRECISION, self_attention_exact, to_decimal, to_float

DATA = Path(__file__).with_name("data")


def notebook_12_1_inputs() -> dict[str, list[list[float]]]:
    """The inputs of notebook 12.1 (attention.notebook draws them as its cells do), as nested lists."""
    return {name: array.tolist() for name, array in attention_notebook.notebook_12_1_inputs()._asdict().items()}


def notebook_12_1() -> dict[str, Any]:
    inputs = notebook_12_1_inputs()
    exact = {}
    for kind, scaled in (("unscaled", False), ("scaled", True)):
        X_prime, attentions = self_attention_exact(*(to_decimal(inputs[name]) for name in inputs), scaled=scaled)
        exact[kind] = {"X_prime": to_float(X_prime), "attentions": to_float(attentions)}
    return {
        "source": "Understanding Deep Learning, notebook 12.1 (Self Attention), udlbook/Notebooks/Chap12",
        "provenance": (
            "np.random.seed(3); N=3; D=4; all_x = [np.random.normal(size=(D,1)) for n in range(N)]; "
            "X = columns all_x; np.random.seed(0); omega_q, omega_k, omega_v = normal(size=(D,D)) each; "
            "beta_q, beta_k, beta_v = normal(size=(D,1)) each, in that order"
        ),
        "inputs": inputs,
        "notebook_printed": {
            "note": "x_prime_n_true as the notebook prints them (unscaled self-attention), columns of X'",
            "decimals": 8,
            "unscaled_X_prime_columns": [
                [0.94744244, -0.24348429, -0.91310441, -0.44522983],
                [1.64201168, -0.08470004, 4.02764044, 2.18690791],
                [1.61949281, -0.06641533, 3.96863308, 2.15858316],
            ],
        },
        "known_scaled_attentions": {
            "note": "the scaled attention matrix as filed with the foundation issue, checked to 1e-8",
            "tolerance": 1e-8,
            "attentions": [
                [3.38843552e-07, 1.55730194e-06, 6.20418746e-02],
                [9.60161968e-01, 7.12734969e-02, 7.05962187e-02],
                [3.98376935e-02, 9.28724946e-01, 8.67361907e-01],
            ],
        },
        "exact": {
            "note": "50-digit decimal computation (regression/exact.py) rounded to float64",
            **exact,
        },
        "permutation": {"note": "the notebook's permutation check: columns [1, 2, 0]", "columns": [1, 2, 0]},
    }


def notebook_12_2_inputs() -> dict[str, Any]:
    """The inputs of notebook 12.2 (multi-head), drawn exactly as its cells draw them."""
    np.random.seed(3)
    N, D, H = 6, 8, 2
    H_D = D // H
    X = np.random.normal(size=(D, N))
    np.random.seed(0)
    heads = []
    for _ in range(H):
        omega_q = np.random.normal(size=(H_D, D))
        omega_k = np.random.normal(size=(H_D, D))
        omega_v = np.random.normal(size=(H_D, D))
        beta_q = np.random.normal(size=(H_D, 1))
        beta_k = np.random.normal(size=(H_D, 1))
        beta_v = np.random.normal(size=(H_D, 1))
        heads.append({"omega_v": omega_v, "omega_q": omega_q, "omega_k": omega_k,
                      "beta_v": beta_v, "beta_q": beta_q, "beta_k": beta_k})  # fmt: skip
    omega_c = np.random.normal(size=(D, D))
    return {
        "X": X.tolist(),
        "heads": [{name: array.tolist() for name, array in head.items()} for head in heads],
        "omega_c": omega_c.tolist(),
    }


def multihead_exact(inputs: dict[str, Any]) -> list[list[float]]:
    """X' of notebook 12.2 in 50-digit decimals: each head by regression.exact, stacked, times omega_c."""
    X = to_decimal(inputs["X"])
    stacked = []
    for head in inputs["heads"]:
        names = ("omega_v", "omega_q", "omega_k", "beta_v", "beta_q", "beta_k")
        X_prime, _ = self_attention_exact(X, *(to_decimal(head[name]) for name in names), scaled=True)
        stacked.extend(X_prime)
    omega_c = to_decimal(inputs["omega_c"])
    with localcontext() as context:
        context.prec = PRECISION
        product = [
            [sum((omega_c[i][j] * stacked[j][n] for j in range(len(stacked))), Decimal(0)) for n in range(len(X[0]))]
            for i in range(len(omega_c))
        ]
    return to_float(product)


def notebook_12_2() -> dict[str, Any]:
    inputs = notebook_12_2_inputs()
    return {
        "source": "Understanding Deep Learning, notebook 12.2 (Multihead Self-Attention), udlbook/Notebooks/Chap12",
        "provenance": (
            "np.random.seed(3); N=6; D=8; X = normal(size=(D,N)); H=2; H_D=4; np.random.seed(0); for each head "
            "omega_q, omega_k, omega_v = normal(size=(H_D,D)), then beta_q, beta_k, beta_v = normal(size=(H_D,1)); "
            "then omega_c = normal(size=(D,D))"
        ),
        "inputs": inputs,
        "notebook_printed": {
            "note": "the True values the notebook prints for X' (np.set_printoptions(precision=3))",
            "decimals": 3,
            "X_prime": [
                [-21.207, -5.373, -20.933, -9.179, -11.319, -17.812],
                [-1.995, 7.906, -10.516, 3.452, 9.863, -7.24],
                [5.479, 1.115, 9.244, 0.453, 5.656, 7.089],
                [-7.413, -7.416, 0.363, -5.573, -6.736, -0.848],
                [-11.261, -9.937, -4.848, -8.915, -13.378, -5.761],
                [3.548, 10.036, -2.244, 1.604, 12.113, -2.557],
                [4.888, -5.814, 2.407, 3.228, -4.232, 3.71],
                [1.248, 18.894, -6.409, 3.224, 19.717, -5.629],
            ],
        },
        "exact": {
            "note": "50-digit decimals (regression/exact.py; heads stacked, times omega_c), rounded to float64",
            "X_prime": multihead_exact(inputs),
        },
    }


def dumps(data: Any) -> str:
    """JSON with one matrix row a line, so that a person can read the file."""
    text = json.dumps(data, indent=1)
    return re.sub(r"\[\s*([-+0-9.eE,\s]+?)\s*\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)


def main() -> None:
    for name, make in (("notebook_12_1", notebook_12_1), ("notebook_12_2", notebook_12_2)):
        path = DATA / f"{name}.json"
        path.write_text(dumps(make()) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
