"""End-to-end checks of attention-check, as a user would run it (called by .ci/run).

Each case runs the installed command in a scratch directory and checks its exit code and report.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from properties.checker.examples import KINDS, write_notebook

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
                "FAIL  doubling the query key dimension scales the logits as the scale demands",
                "diagnosis: matches attention scaled by 1/sqrt(D) = 1/sqrt(X.shape[0])",
                "# --- begin ---",
                "PASS  scaled attentions match the known values",
                "attention-check: FAIL",
            ],
            here,
        )
        verdicts = json.loads((here / "verdicts.json").read_text())
        assert verdicts["verdict"] == "FAIL"
        snippets = [law["reproduce"] for run in verdicts["runs"] for law in run["laws"] if law["status"] == "FAIL"]
        for snippet in snippets:
            (here / "replay.py").write_text(snippet)
            replayed = subprocess.run(
                [sys.executable, "replay.py"], cwd=here, capture_output=True, text=True, check=False
            )
            assert replayed.returncode != 0 and "LawViolation" in replayed.stderr, replayed.stderr
        print(f"  ok: each of the JSON's {len(snippets)} reproduce snippets exits non-zero with the law's LawViolation")
        check(
            ["my_attention.py:scaled_dot_product_self_attention", "--square", "--only", "semantics,golden"],
            0,
            ["attention-check: PASS"],
            here,
        )
        check(["solved.ipynb", "--only", "semantics,golden"], 0, ["attention-check: PASS"], here)
        # The course's own softmax_cols overflows: those FAILs are shown, attributed to it and not counted (a
        # correct solution PASSes), unless --strict-conventions.
        check(
            ["solved.ipynb"],
            0,
            ["FAIL  softmax is finite for every finite input", "the overflow comes from softmax_cols",
             "not counted: the code that fails is softmax_cols as the course gives it", "attention-check: PASS"],
            here,
        )  # fmt: skip
        check(["solved.ipynb", "--only", "robustness", "--strict-conventions"], 1, ["attention-check: FAIL"], here)
        check(["sqrt_D.ipynb"], 1, ["FAIL  doubling the query key dimension"], here)
        check(["sqrt_D.ipynb", "-k", "no_such_law"], 2, ["matched no law"], here)
        check(["sqrt_D.ipynb", "-k", "two words"], 2, ["is not a pytest -k expression"], here)
        # A class as a teacher grades it: a folder of notebooks, among them files that loop, exhaust memory,
        # crash the interpreter or print megabytes; each is reported in its row and the others are graded.
        folder = here / "class"
        folder.mkdir()
        for kind in KINDS:
            write_notebook(folder / f"{kind}.ipynb", kind)
        check(
            ["class", "--only", "semantics,golden", "--timeout", "60", "--csv", "grades.csv", "--jobs", "2"],
            1,
            ["did not finish within 60 s", "crashed the interpreter (SIGSEGV)", "printed more than",
             "exhausts memory", "reads the notebook global D", "your logits look transposed", "template"],
            here,
        )  # fmt: skip
        grades = list(csv.DictReader((here / "grades.csv").open()))
        solved = [row for row in grades if row["file"] == str(Path("class") / "solved.ipynb")]
        assert len(grades) == 3 * len(KINDS) and {row["verdict"] for row in solved} == {"PASS"}, grades
        hungry = next(row for row in grades if row["file"] == str(Path("class") / "memory_hungry.ipynb")
                      and row["function"] == "scaled_dot_product_self_attention")  # fmt: skip
        categories = ("semantics", "conventions", "robustness", "hygiene", "gradients", "golden")
        assert hungry["verdict"] == "FAIL" and hungry["error"].startswith("exhausts memory"), hungry
        assert not hungry["failed_laws"] and "FAIL" not in {hungry[c] for c in categories}, hungry
        print(f"  ok: {len(grades)} CSV rows; the solved notebook passes; exhausting memory fails no law")
        # Deterministic: the same file gives the same verdicts on every run.
        runs = []
        for _ in range(2):
            check(["sqrt_D.ipynb", "--json", "again.json"], 1, [], here)
            laws = json.loads((here / "again.json").read_text())["runs"]
            runs.append([(law["law"], law["status"], law["counterexample"]) for run in laws for law in run["laws"]])
        assert runs[0] == runs[1], "two runs of one file gave different verdicts"
        print("  ok: two runs give the same verdicts and counterexamples")
    print("end-to-end checks passed")


if __name__ == "__main__":
    main()
