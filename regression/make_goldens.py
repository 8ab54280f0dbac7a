"""Regenerate regression/data/notebook_12_1.json: `python -m regression.make_goldens`.

Inputs come from the notebook's own seeds; the full-precision outputs from `regression.exact`
(50-digit decimals, independent of `attention/`); the printed values are copied from the notebook.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from regression.exact import self_attention_exact, to_decimal, to_float

DATA = Path(__file__).with_name("data")


def notebook_12_1_inputs() -> dict[str, list[list[float]]]:
    """The inputs of notebook 12.1, drawn exactly as its cells draw them."""
    np.random.seed(3)
    N, D = 3, 4
    all_x = [np.random.normal(size=(D, 1)) for _ in range(N)]
    np.random.seed(0)
    omega_q = np.random.normal(size=(D, D))
    omega_k = np.random.normal(size=(D, D))
    omega_v = np.random.normal(size=(D, D))
    beta_q = np.random.normal(size=(D, 1))
    beta_k = np.random.normal(size=(D, 1))
    beta_v = np.random.normal(size=(D, 1))
    arrays = {
        "X": np.hstack(all_x),
        "omega_v": omega_v,
        "omega_q": omega_q,
        "omega_k": omega_k,
        "beta_v": beta_v,
        "beta_q": beta_q,
        "beta_k": beta_k,
    }
    return {name: array.tolist() for name, array in arrays.items()}


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


def dumps(data: Any) -> str:
    """JSON with one matrix row a line, so that a person can read the file."""
    text = json.dumps(data, indent=1)
    return re.sub(r"\[\s*([-+0-9.eE,\s]+?)\s*\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)


def main() -> None:
    path = DATA / "notebook_12_1.json"
    path.write_text(dumps(notebook_12_1()) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
