"""End-to-end checks of attention-check, as a user would run it (called by .ci/run).

Each case runs the installed command in a scratch directory and checks its exit code and report.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from properties.examples import write_notebook

BUGGY_FILE = textwrap.dedent(
    """
    import numpy as np

    def scaled_dot_product_self_attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k):
        # Passes the notebook's own values (there D = D_q = 4), but scales by sqrt(D), not sqrt(D_q).
        Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
        logits = K.T @ Q / np.sqrt(X.shape[0])
        A = np.exp(logits - logits.max(axis=0))
        A /= A.sum(axis=0)
        return V @ A, A
    """
)


def check(arguments: list[str], expected_exit: int, must_contain: list[str], cwd: Path) -> None:
    print(f"$ attention-check {' '.join(arguments)}", flush=True)
    completed = subprocess.run(["attention-check", *arguments], cwd=cwd, capture_output=True, text=True, check=False)
    output = completed.stdout + completed.stderr
    problems = (
        [f"exit {completed.returncode}, expected {expected_exit}"] if completed.returncode != expected_exit else []
    )
    problems += [f"output lacks {text!r}" for text in must_contain if text not in output]
    if problems:
        print(output)
        sys.exit("end-to-end check failed: " + "; ".join(problems))
    print(f"  ok: exit {completed.returncode}" + "".join(f"; saw {text!r}" for text in must_contain))


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        here = Path(scratch)
        (here / "my_attention.py").write_text(BUGGY_FILE)
        for kind in ("template", "solved", "sqrt_D"):
            write_notebook(here / f"{kind}.ipynb", kind)
        check([], 0, ["attention-check: PASS"], here)
        check(
            ["my_attention.py:scaled_dot_product_self_attention", "--json", "verdicts.json"],
            1,
            [
                "FAIL  doubling the query key dimension scales the logits by sqrt two",
                "reproduce:",
                "PASS  scaled attentions match the known values",
                "attention-check: FAIL",
            ],
            here,
        )
        assert '"verdict": "FAIL"' in (here / "verdicts.json").read_text()
        check(
            ["my_attention.py:scaled_dot_product_self_attention", "--square", "--only", "semantics,golden"],
            0,
            ["attention-check: PASS"],
            here,
        )
        check(["solved.ipynb", "--only", "semantics,golden"], 0, ["attention-check: PASS"], here)
        check(
            ["solved.ipynb"],
            1,
            ["FAIL  softmax is finite for every finite input", "the overflow comes from softmax_cols"],
            here,
        )
        check(["sqrt_D.ipynb"], 1, ["FAIL  doubling the query key dimension"], here)
        check(["template.ipynb", "--only", "golden"], 1, ["not implemented", "still the notebook's template"], here)
    print("end-to-end checks passed")


if __name__ == "__main__":
    main()
