"""attention-check: run the battery on implementations, notebooks or folders of them; one verdict per law."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from properties.checker.grading import (
    BAD_EXPRESSION,
    Graded,
    Options,
    Subject,
    backward_arguments,
    convention_arguments,
    grade,
    jobs_for,
    rows,
)
from properties.checker.records import EXIT_CODES, FAIL, NOT_CHECKED, LawVerdict, combined, report_json
from properties.helpers.options import ALIGNMENTS, ARRAYS, CATEGORIES, CONVENTIONS, DTYPES, LAYOUTS, PROFILES

TIMEOUTS = {"dev": 300.0, "ci": 900.0, "thorough": 3600.0}  # default seconds per file, by profile


EPILOG = f"""verdicts: a function PASSes when at least one counted law passed and none failed; it is NOT CHECKED
when nothing failed but every selected law skipped (the reason names what was missing); conventions are
shown, not counted, unless --strict-conventions. See docs/verdicts.md.

exit codes:
  {EXIT_CODES["PASS"]}  PASS: every file passed
  {EXIT_CODES["FAIL"]}  FAIL: some file failed (or could not be graded)
  {EXIT_CODES["usage"]}  usage error (a bad option, PATH or -k expression)
  {EXIT_CODES["NOT CHECKED"]}  NOT CHECKED: nothing failed, but some function had no counted law checked

environment:
  ATTENTION_DRAWS_CACHE  where the laws' drawn examples are kept between runs (default
                         ~/.cache/attention-properties/draws; off: for one run only). See docs/grading.md.
  ATTENTION_JAX_CACHE    where jax targets' compilations are kept (default ~/.cache/attention-properties/jax; off)"""


def arrays_directory(json_path: str | None) -> Path:
    """Where large counterexamples go as .npz files: beside the JSON report (REPORT-arrays/), else
    ./attention-check-arrays/ (created only when a counterexample needs it)."""
    if json_path:
        report = Path(json_path).resolve()
        return report.parent / f"{report.stem}-arrays"
    return Path.cwd() / "attention-check-arrays"


def law_title(law: str) -> str:
    return law.removeprefix("test_").replace("_", " ")


def rerun(law: LawVerdict, subject: Subject, convention: Sequence[str] = (), backward: Sequence[str] = ()) -> str:
    """The pytest command that reruns one law on the subject (in its calling convention; a gradient law with the
    backward's arguments, --backward TARGET or --gradients)."""
    option = {"softmax": "--softmax", "multihead": "--multihead"}.get(subject.kind)
    under_test = f"{option} '{subject.target}'" if option else f"--impl '{subject.target}' --impl-kind {subject.kind}"
    command = f"pytest --pyargs {law.module} -p properties.plugin -k {law.law} {under_test}"
    quoted = [f"'{a}'" if ":" in a else a for a in backward] if law.category == "gradients" else []
    return " ".join([command, *convention, *quoted])


def print_subject(subject: Subject) -> None:
    print(f"\n{subject.function}: {subject.target} ({subject.kind}): {subject.state}")
    if subject.error:
        print(f"  ERROR  {subject.error}")
    for category in CATEGORIES:
        laws = [law for law in subject.laws if law.category == category]
        if laws:
            print(f"  {category}")
        for law in laws:
            print(f"    {law.status:<4}  {law_title(law.law)}")
            if law.reason and law.status != "PASS":
                print(f"          {law.reason}")
            if law.seen and law.category == "conventions":
                print(f"          seen: {law.seen_text()}")
            if law.set_aside and law.status != "SKIP":
                print(
                    "          set aside (not judged): "
                    + "; ".join(f"{n} with {why}" for why, n in law.set_aside.items())
                )
            if law.status == "FAIL" and law.diagnosis:
                print(f"          diagnosis: {law.diagnosis}")
            if law.attributed:
                print(f"          not counted: the code that fails is {law.attributed}")
    if subject.laws:
        counts = {status: sum(law.status == status for law in subject.laws) for status in ("PASS", "FAIL", "SKIP")}
        attributed = sum(law.status == "FAIL" and bool(law.attributed) for law in subject.laws)
        shown = f" ({attributed} not counted)" if attributed and subject.uncounted else ""
        print(f"  {counts['PASS']} PASS, {counts['FAIL']} FAIL{shown}, {counts['SKIP']} SKIP: {subject.verdict}")
    if subject.not_checked:
        print(f"  NOT CHECKED: {subject.not_checked}")
    total: dict[str, int] = {}
    for law in subject.laws:
        for why, n in law.set_aside.items():
            total[why] = total.get(why, 0) + n
    if total:
        print("  set aside: " + "; ".join(f"{n} problems with {why}" for why, n in total.items()))


def rows_of(value: Any) -> dict[str, list[int]] | None:
    """The shapes of q, k and v of the first rows problem in a counterexample's JSON (the flash and row
    conventions' problems: q (batch, L, heads, D), ...), or None."""
    if isinstance(value, dict):
        if all(name in value for name in ("q", "k", "v")):
            arrays = {name: value[name] for name in ("q", "k", "v")}
            return {name: a["shape"] if isinstance(a, dict) else list(np.shape(a)) for name, a in arrays.items()}
        value = list(value.values())
    if isinstance(value, list) and value and isinstance(value[0], dict | list):
        return next((found for found in map(rows_of, value) if found), None)
    return None


def print_details(subject: Subject, convention: Sequence[str] = (), backward: Sequence[str] = ()) -> None:
    for law in subject.laws:
        if law.status != "FAIL":
            continue
        print(f"\n--- FAIL {law_title(law.law)}  [{law.category}; {law.module}; {subject.function}]")
        if law.statement:
            print(f"law: {law.statement}")
        print(law.details)
        if law.diagnosis:
            print(f"diagnosis: {law.diagnosis}")
        example = law.counterexample
        rows = rows_of(example) if example and "N" not in example else None
        if example and "N" in example:
            print(f"counterexample: D={example['D']}, D_q={example['D_q']}, D_v={example['D_v']}, N={example['N']}")
        elif rows:
            print("counterexample: " + ", ".join(f"{name} {tuple(shape)}" for name, shape in rows.items()))
        if law.reproduce:
            print("reproduce: save the lines between the markers as a .py file, run it with python from this directory")
            print(f"# --- begin ---\n{law.reproduce}\n# --- end ---")
        print(f"or rerun the law: {rerun(law, subject, convention, backward)}")


def print_summary(graded: Sequence[Graded]) -> None:
    table = [{k: v for k, v in row.items() if k not in ("failed_laws", "error", "not_checked")} for row in rows(graded)]
    for row, file in zip(table, (r for r in rows(graded)), strict=True):
        row["diagnosis"] = (row["diagnosis"] or file["error"] or file["not_checked"]).split("\n")[0][:100]
    columns = ["file", "function", "state", "verdict", *CATEGORIES, "diagnosis"]
    widths = {c: max(len(c), *(len(r[c]) for r in table)) for c in columns[:-1]}
    print("\n" + "  ".join(c.ljust(widths.get(c, 0)) for c in columns).rstrip())
    for row in table:
        print("  ".join(row[c].ljust(widths.get(c, 0)) for c in columns).rstrip())


def write_csv(graded: Sequence[Graded], path: Path) -> None:
    table = list(rows(graded))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]) if table else ["file"])
        writer.writeheader()
        writer.writerows(table)


def as_json(graded: Sequence[Graded], options: Options) -> dict[str, Any]:
    """The --json report (its schema: properties.checker.records, docs/json.md)."""
    return report_json(list(graded), options)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="attention-check",
        description="Check self-attention implementations, filled-in copies of notebook 12.1, or folders of "
        "them, against the laws of self-attention and the notebook's golden values.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="notebooks (.ipynb), .py files (each with the notebook's three functions), folders (searched for "
        "notebooks), or TARGETs package.module:function / path/to/file.py:function (default: the bundled reference)",
    )
    p.add_argument("--kind", choices=("scaled", "unscaled"), default="scaled", help="of a TARGET: eq. 12.9 or 12.8")
    p.add_argument("--profile", choices=PROFILES, default="dev", help="hypothesis profile")
    p.add_argument("--seed", type=int, default=None, help="explore with this seed (default: derandomised)")
    p.add_argument("--only", default="", metavar="CATEGORIES", help="comma-separated subset of " + ",".join(CATEGORIES))
    p.add_argument(
        "-k",
        dest="laws",
        default="",
        metavar="EXPRESSION",
        help="only the laws whose test function names match this pytest -k expression, e.g. -k doubling",
    )
    p.add_argument("--square", action="store_true", help="draw only D_q = D_v = D (the notebook's setting)")
    p.add_argument("--softmax", default=None, metavar="TARGET", help="with a TARGET: also check this column softmax")
    p.add_argument("--multihead", default=None, metavar="TARGET", help="with a TARGET: also check this multi-head")
    p.add_argument("--backward", default=None, metavar="TARGET",
                   help="with a TARGET: also check its backward pass (docs/backward.md)")  # fmt: skip
    p.add_argument("--gradients", action="store_true",
                   help="sdpa, jax or torch: check the TARGET's gradients by its library's autograd")  # fmt: skip
    p.add_argument(
        "--convention",
        choices=CONVENTIONS,
        default="notebook",
        help="of a TARGET: notebook, f(X, omega_v, ..., beta_k); sdpa, f(query, key, value, ...) on rows; flash, "
        "flash_attn_func(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, ...)",
    )
    p.add_argument(
        "--causal-alignment",
        choices=ALIGNMENTS,
        default=None,
        help="sdpa, flash: causal's triangle when L != S (default: sdpa top-left, flash bottom-right)",
    )
    p.add_argument("--layout", choices=LAYOUTS, default=None, help="sdpa: axis order of q, k, v (default BHLE)")
    p.add_argument("--array", choices=ARRAYS, default=None, help="sdpa, flash: numpy (default), torch or jax arrays")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="sdpa, flash: dtype of q, k, v (default float64)")
    p.add_argument(
        "--strict-conventions",
        action="store_true",
        help="let a FAIL in the conventions category (a query that sees no key) fail the verdict too",
    )
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="files graded at once (default: cores)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per file (default: 300, ci 900, thorough 3600)")
    p.add_argument("--memory", type=int, default=4096, metavar="MB", help="heap limit per file (default 4096)")
    p.add_argument("--json", default=None, metavar="FILE", help="write every verdict, per law, as JSON")
    p.add_argument("--csv", default=None, metavar="FILE", help="write one row per (file, function) as CSV")
    p.add_argument(
        "--html", default=None, metavar="FILE", help="write the class report: one self-contained page with pictures"
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="grade on this Dask cluster (tcp://host:8786; needs the extra 'cluster'), each file in its own process",
    )
    p.add_argument("--list", action="store_true", help="list every law, its category and the mistakes it catches")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        from properties.catalogues.registry import catalogue_text  # imports the laws: only when asked

        print(catalogue_text())
        return 0
    only = tuple(c.strip() for c in args.only.split(",") if c.strip())
    unknown = sorted(set(only) - set(CATEGORIES))
    if unknown:
        parser().error(f"--only: unknown categories {unknown}; choose from {', '.join(CATEGORIES)}")
    jobs, missing = jobs_for(args.paths)
    if missing:
        parser().error(f"not a notebook, .py file, folder or TARGET: {', '.join(missing)}")
    if not jobs:
        parser().error(f"no notebooks found in {', '.join(args.paths)}")
    if (args.softmax or args.multihead or args.backward) and not all(job.target for job in jobs):
        parser().error("--softmax, --multihead and --backward go with a TARGET, not with notebooks")
    options = Options(
        profile=args.profile, seed=args.seed, only=only, laws=args.laws, square=args.square,
        timeout=args.timeout or TIMEOUTS[args.profile], memory_mb=args.memory, kind=args.kind,
        softmax=args.softmax and jobs_for([args.softmax])[0][0].target,
        multihead=args.multihead and jobs_for([args.multihead])[0][0].target,
        backward=args.backward and jobs_for([args.backward])[0][0].target, gradients=args.gradients,
        convention=convention_arguments(args.convention, layout=args.layout, array=args.array, dtype=args.dtype,
                                        **{"causal-alignment": args.causal_alignment}),
        arrays_dir=str(arrays_directory(args.json)),
    )  # fmt: skip
    seed = "derandomised" if args.seed is None else f"seed {args.seed}"
    print(f"attention-check: {len(jobs)} file(s); profile {args.profile}, {seed}" + (f"; only {', '.join(only)}"
          if only else "") + (f"; laws matching {args.laws!r}" if args.laws else "")
          + ("; --square: only D_q = D_v = D drawn (a scale by 1/sqrt(D) for 1/sqrt(D_q) cannot show)"
             if args.square else ""))  # fmt: skip

    def progress(graded: Graded) -> None:
        if len(jobs) > 1:
            print(f"  graded {graded.file}: {graded.verdict}", file=sys.stderr, flush=True)

    if args.scheduler:
        from properties.checker.cluster import grade_on_cluster

        graded = grade_on_cluster(jobs, options, args.scheduler, progress)
    else:
        graded = grade(jobs, options, args.jobs, progress)
    ran = [subject for file in graded for subject in file.subjects if subject.state == "implemented"]
    if args.laws and ran and all(BAD_EXPRESSION in subject.error for subject in ran):
        print(f"attention-check: -k {args.laws!r} is {BAD_EXPRESSION}")
        return EXIT_CODES["usage"]
    if args.laws and ran and not any(subject.laws for subject in ran):
        print(f"attention-check: -k {args.laws!r} matched no law (attention-check --list names them)")
        return EXIT_CODES["usage"]
    if args.strict_conventions:
        for subject in (subject for file in graded for subject in file.subjects):
            subject.uncounted = ()
    if len(graded) == 1:
        file = graded[0]
        if file.error:
            print(f"\n{file.file}: {file.error}")
        for subject in file.subjects:
            print_subject(subject)
        backward = backward_arguments(options.backward, options.gradients, not args.paths, options.convention,
                                      options.kind)  # fmt: skip
        for subject in file.subjects:
            print_details(subject, options.convention, backward)
    print_summary(graded)
    if args.csv:
        write_csv(graded, Path(args.csv))
    if args.json:
        Path(args.json).write_text(json.dumps(as_json(graded, options), indent=1) + "\n")
    if args.html:
        from properties.checker.html import class_report

        uncounted = () if args.strict_conventions else ("conventions",)
        report = class_report(as_json(graded, options), uncounted, pictures=not options.convention,
                              memory_mb=options.memory_mb, workers=args.jobs)  # fmt: skip
        Path(args.html).write_text(report, encoding="utf-8")
    verdict = combined([file.verdict for file in graded])
    failed = sum(file.verdict == FAIL for file in graded)
    unchecked = sum(file.verdict == NOT_CHECKED for file in graded)
    counts = [f"{failed} of {len(graded)} files fail"] if failed and len(graded) > 1 else []
    counts += [f"{unchecked} of {len(graded)} files not checked"] if unchecked and len(graded) > 1 else []
    reasons = [s.not_checked for file in graded for s in file.subjects if s.not_checked]
    if verdict == NOT_CHECKED and len(graded) == 1:
        counts.append(reasons[0] if len(set(reasons)) == 1 else "see each function above")
    print(f"\nattention-check: {verdict}" + (f" ({'; '.join(counts)})" if counts else ""))
    return EXIT_CODES[verdict]


if __name__ == "__main__":
    raise SystemExit(main())
