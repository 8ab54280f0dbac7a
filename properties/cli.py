"""attention-check: run the battery on an implementation (or a notebook) and print one verdict per law."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from properties.notebook import extract
from properties.options import (
    ARRAYS,
    CATEGORIES,
    CONVENTIONS,
    DTYPES,
    LAYOUTS,
    REFERENCE_TARGETS,
    SDPA_REFERENCE_TARGET,
)

DEFAULT_TIMEOUT = 1800.0  # seconds for one run of the battery (the thorough profile needs minutes)
SOFTMAX_OVERFLOW_LAW = "test_softmax_is_finite_for_every_finite_input"


@dataclass
class Run:
    """One run of the battery on one function, and its verdicts."""

    title: str
    target: str
    kind: str
    softmax: str | None = None
    multihead: str | None = None
    laws: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    convention: list[str] = field(default_factory=list)  # --convention sdpa and its --layout/--array/--dtype

    @property
    def failed(self) -> bool:
        return bool(self.error) or any(row["status"] == "FAIL" for row in self.laws)


def absolute_target(target: str) -> str:
    """A file TARGET made absolute (the battery runs in a scratch directory); a module TARGET unchanged."""
    module, sep, attribute = target.rpartition(":")
    if sep and (module.endswith(".py") or "/" in module or "\\" in module):
        return f"{Path(module).expanduser().resolve()}:{attribute}"
    return target


def run_battery(run: Run, *, profile: str, only: Sequence[str], square: bool, timeout: float) -> None:
    """Run properties/ and regression/ against run.target in a subprocess; fill in run.laws or run.error."""
    with tempfile.TemporaryDirectory(prefix="attention-check-") as scratch:
        report, ini = Path(scratch) / "verdicts.json", Path(scratch) / "pytest.ini"
        ini.write_text("[pytest]\n")
        selection = "not meta and not benchmark"
        if only:
            selection += " and (" + " or ".join(only) + ")"
        command = [
            sys.executable, "-m", "pytest", "--pyargs", "properties", "regression",
            "-p", "properties.plugin", "-p", "no:cacheprovider", "-c", str(ini), "--rootdir", scratch,
            "-q", "--no-header", "--benchmark-skip", "-m", selection, "--impl", run.target, "--impl-kind", run.kind,
            "--hypothesis-profile", profile, "--attention-report", str(report),
        ]  # fmt: skip
        if run.softmax:
            command += ["--softmax", run.softmax]
        if run.multihead:
            command += ["--multihead", run.multihead]
        if square:
            command.append("--square")
        command += run.convention
        environment = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        environment.pop("ATTENTION_IMPL", None)
        try:
            completed = subprocess.run(
                command, cwd=scratch, env=environment, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            run.error = f"the battery did not finish within {timeout:.0f} s (an implementation that hangs?)"
            return
        if completed.returncode not in (0, 1) or not report.exists():
            run.error = f"the battery could not run (pytest exit {completed.returncode}):\n" + (
                completed.stdout[-4000:] + completed.stderr[-4000:]
            )
            return
        run.laws = json.loads(report.read_text())["laws"]


def law_title(law: str) -> str:
    return law.removeprefix("test_").replace("_", " ")


def reproduction(row: dict[str, Any], run: Run) -> str:
    """Copy-paste Python that replays a law's shrunk counterexample, or the pytest command that reruns it."""
    details: str = row["details"]
    marker = "Falsifying example: "
    rerun = (
        f"pytest --pyargs {row['module']} -p properties.plugin -k {row['law']} "
        f"--impl '{run.target}' --impl-kind {run.kind}"
        + (f" --softmax '{run.softmax}'" if run.softmax else "")
        + "".join(f" {option}" for option in run.convention)
    )
    if marker not in details:
        return rerun
    example = details[details.index(marker) + len(marker) :]
    call = example.replace(f"{row['law']}(", "law.hypothesis.inner_test(", 1)
    return "\n".join(
        [
            "import numpy as np",
            "from numpy import array",
            "from properties.implementation import Implementation",
            "from properties.loading import load_function",
            "from properties.implementation import Multihead, Softmax",
            *(["from properties.conventions import Convention, SdpaImplementation"] if run.convention else []),
            "from properties.problem import AttentionProblem",
            *(["from properties.problem import MultiheadProblem"] if "MultiheadProblem(" in call else []),
            *(["from properties.problem import BatchedProblem"] if "BatchedProblem(" in call else []),
            f"from {row['module']} import {row['law']} as law",
            "",
            call.strip(),
            f"# or rerun the law: {rerun}",
        ]
    )


def print_run(run: Run, *, note_softmax_overflow: bool) -> None:
    print(f"\n{run.title}: {run.target} ({run.kind})")
    if run.error:
        print(f"  ERROR  {run.error}")
        return
    for category in CATEGORIES:
        rows = [row for row in run.laws if row["category"] == category]
        if not rows:
            continue
        print(f"  {category}")
        for row in rows:
            reason = row["reason"]
            if (
                note_softmax_overflow
                and row["status"] == "FAIL"
                and category == "robustness"
                and row["law"] != SOFTMAX_OVERFLOW_LAW
            ):
                reason += " [the overflow comes from softmax_cols, which does not shift by the column maximum]"
            line = f"    {row['status']:<4}  {law_title(row['law'])}"
            print(line + (f"\n          {reason}" if reason and row["status"] != "PASS" else ""))
    counts = {status: sum(row["status"] == status for row in run.laws) for status in ("PASS", "FAIL", "SKIP")}
    print(f"  {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP")


def print_details(run: Run) -> None:
    for row in run.laws:
        if row["status"] != "FAIL":
            continue
        print(f"\n--- FAIL {law_title(row['law'])}  [{row['category']}; {row['module']}; {run.target}]")
        if row["statement"]:
            print(f"law: {row['statement']}")
        print(row["details"])
        print("reproduce:")
        print("    " + reproduction(row, run).replace("\n", "\n    "))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="attention-check",
        description="Check a self-attention implementation, or the functions of a filled-in notebook 12.1, "
        "against the laws of self-attention and the notebook's golden values.",
    )
    p.add_argument(
        "target",
        nargs="?",
        default=None,
        help="package.module:function, path/to/file.py:function, or path/to/notebook.ipynb "
        "(default: the bundled reference)",
    )
    p.add_argument("--kind", choices=("scaled", "unscaled"), default="scaled", help="eq. 12.9 (default) or eq. 12.8")
    p.add_argument("--profile", choices=("dev", "ci", "thorough"), default="dev", help="hypothesis profile")
    p.add_argument("--only", default="", metavar="CATEGORIES", help="comma-separated subset of " + ",".join(CATEGORIES))
    p.add_argument("--square", action="store_true", help="draw only D_q = D_v = D (the notebook's setting)")
    p.add_argument("--softmax", default=None, metavar="TARGET", help="also check this column softmax")
    p.add_argument("--multihead", default=None, metavar="TARGET", help="also check this multi-head attention")
    p.add_argument(
        "--convention",
        choices=CONVENTIONS,
        default="notebook",
        help="notebook: f(X, omega_v, ..., beta_k); sdpa: f(query, key, value, ...) on rows",
    )
    p.add_argument("--layout", choices=LAYOUTS, default=None, help="sdpa: axis order of q, k, v (default BHLE)")
    p.add_argument("--array", choices=ARRAYS, default=None, help="sdpa: numpy (default), torch or jax arrays")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="sdpa: dtype of q, k, v (default float64)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the verdicts as JSON")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds allowed for one run")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = sorted(set(only) - set(CATEGORIES))
    if unknown:
        parser().error(f"--only: unknown categories {unknown}; choose from {', '.join(CATEGORIES)}")
    with tempfile.TemporaryDirectory(prefix="attention-notebook-") as scratch:
        if args.target and args.target.endswith(".ipynb"):
            notebook = Path(args.target).expanduser().resolve()
            if not notebook.is_file():
                parser().error(f"notebook {str(notebook)!r} does not exist")
            extraction = extract(notebook)
            module = Path(scratch) / "notebook_functions.py"
            module.write_text(extraction.source)
            print(f"attention-check: notebook {notebook}")
            for name, status in extraction.status.items():
                print(f"  {name}: {status}")
            runs = [
                Run("scaled_dot_product_self_attention", f"{module}:scaled_dot_product_self_attention", "scaled",
                    softmax=f"{module}:softmax_cols"),
                Run("self_attention", f"{module}:self_attention", "unscaled"),
            ]  # fmt: skip
        elif args.convention == "sdpa":
            convention = ["--convention", "sdpa"] + [
                f"--{name}={value}" for name in ("layout", "array", "dtype") if (value := getattr(args, name))
            ]
            target = absolute_target(args.target) if args.target else SDPA_REFERENCE_TARGET
            runs = [Run("row-convention kernel", target, args.kind, convention=convention)]
            extraction = None
        else:
            target = absolute_target(args.target) if args.target else REFERENCE_TARGETS[args.kind]
            softmax = args.softmax or (None if args.target else "attention:softmax_cols")
            multihead = args.multihead or (None if args.target else "attention:multihead_scaled_self_attention")
            runs = [
                Run("implementation", target, args.kind, softmax=softmax and absolute_target(softmax),
                    multihead=multihead and absolute_target(multihead))
            ]  # fmt: skip
            extraction = None
        for run in runs:
            run_battery(run, profile=args.profile, only=only, square=args.square, timeout=args.timeout)
        overflow = any(
            row["law"] == SOFTMAX_OVERFLOW_LAW and row["status"] == "FAIL" for run in runs for row in run.laws
        )
        note_overflow = overflow and (extraction is None or any(extraction.calls_softmax_cols.values()))
        print(f"profile {args.profile}" + (f"; only {', '.join(only)}" if only else ""))
        for run in runs:
            print_run(run, note_softmax_overflow=note_overflow)
        for run in runs:
            print_details(run)
    failed = any(run.failed for run in runs)
    print(f"\nattention-check: {'FAIL' if failed else 'PASS'}")
    if args.json:
        verdicts = {
            "verdict": "FAIL" if failed else "PASS",
            "profile": args.profile,
            "only": only,
            "runs": [
                {"function": r.title, "target": r.target, "kind": r.kind, "error": r.error, "laws": r.laws}
                for r in runs
            ],
        }
        Path(args.json).write_text(json.dumps(verdicts, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
