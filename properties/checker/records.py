"""The checker's records, typed: a law's verdict, a graded function, a graded file, a worker's job, and the JSON
written from them (its schema is defined here, once, and documented in docs/json.md).

Statuses of a law: PASS, FAIL, SKIP. Verdicts of a function, a file and a run: PASS (at least one counted law
passed and none failed), FAIL, NOT CHECKED (nothing failed, but no counted law was checked).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from properties.helpers.options import CATEGORIES

# 1: the untyped JSON before NOT CHECKED; 2: NOT CHECKED, not_checked, set_aside, arrays; 3: given, attributed
SCHEMA_VERSION = 3
PASS, FAIL, SKIP, NOT_CHECKED = "PASS", "FAIL", "SKIP", "NOT CHECKED"
VERDICTS = (PASS, FAIL, NOT_CHECKED)
# Exit codes of attention-check (also in its --help and docs/verdicts.md).
EXIT_CODES = {PASS: 0, FAIL: 1, "usage": 2, NOT_CHECKED: 3}


@dataclass
class LawVerdict:
    """One law's verdict on one function: its status (FAIL > PASS > SKIP over the law's parameters), why, and
    for a FAIL the counterexample, a replay snippet and a diagnosis."""

    law: str  # the test function's name
    category: str  # one of CATEGORIES
    module: str  # the law module (properties.test_...)
    subject: str  # the fixture it checks: implementation, kernel, softmax or multihead
    statement: str = ""  # the law, from its docstring
    status: str = SKIP
    reason: str = ""  # one line: why it failed or skipped
    details: str = ""  # the failure in full
    counterexample: dict[str, Any] | None = None  # the drawn arguments as JSON (large arrays in `arrays`)
    reproduce: str | None = None  # a replay snippet
    diagnosis: str | None = None  # the known mistake the output matches, in words
    mistake: str | None = None  # its name in properties.catalogues.mistakes
    arrays: str | None = None  # an .npz file name beside the report holding the counterexample's large arrays
    set_aside: dict[str, int] = field(default_factory=dict)  # problems not judged, by reason (e.g. the dtype range)
    seen: dict[str, int] = field(default_factory=dict)  # what the function did where a law accepts several choices
    # Whose code a FAIL comes from when it is not the function's author's: "softmax_cols as the course gives it".
    # Such a FAIL is shown and not counted (unless --strict-conventions), like a conventions row.
    attributed: str = ""

    def seen_text(self) -> str:
        """What was seen, in words: each behaviour with the number of examples that showed it."""
        return "; ".join(f"{what} ({n} example{'s' if n > 1 else ''})" for what, n in self.seen.items())

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LawVerdict:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def counted_laws(laws: list[LawVerdict], uncounted: tuple[str, ...]) -> list[LawVerdict]:
    """The laws a verdict counts: those outside the `uncounted` categories, without the FAILs attributed to code
    the author did not write unless nothing is uncounted (--strict-conventions counts everything)."""
    return [law for law in laws if law.category not in uncounted and not (uncounted and law.attributed)]


def skip_reasons(laws: list[LawVerdict]) -> str:
    """The SKIP reasons of `laws`, aggregated: each reason once, with how many laws gave it, most frequent first."""
    counts = Counter(law.reason or "skipped" for law in laws if law.status == SKIP)
    return "; ".join(f"{reason} ({n} law{'s' if n > 1 else ''})" for reason, n in counts.most_common())


@dataclass
class Subject:
    """A graded function: one function of a file under test, its state and its laws' verdicts."""

    function: str
    target: str
    kind: str  # scaled, unscaled, softmax or multihead
    state: str = "implemented"  # or template, missing, raises on import: ..., reads a notebook global D
    calls_softmax_cols: bool = False
    laws: list[LawVerdict] = field(default_factory=list)
    error: str = ""
    done: bool = False
    # Categories whose FAILs are reported but do not fail the verdict (and whose PASSes do not make one): another
    # convention for a query that sees no key, or raising on an empty input, is a choice, not a mistake;
    # --strict-conventions counts them.
    uncounted: tuple[str, ...] = ("conventions",)
    given: bool = False  # defined exactly as the course gives it (the notebook's softmax_cols), not by the student

    def counted(self) -> list[LawVerdict]:
        """The laws its verdict and score count: not those of the uncounted categories nor, unless every category
        counts (--strict-conventions), FAILs attributed to code the author did not write."""
        return counted_laws(self.laws, self.uncounted)

    @property
    def verdict(self) -> str:
        """FAIL if it is not implemented, errs or fails a counted law; PASS if a counted law passed; else NOT
        CHECKED."""
        counted = self.counted()
        if self.state != "implemented" or self.error or any(law.status == FAIL for law in counted):
            return FAIL
        return PASS if any(law.status == PASS for law in counted) else NOT_CHECKED

    @property
    def not_checked(self) -> str:
        """Why nothing was checked (the SKIP reasons, aggregated), or "" when the verdict is not NOT CHECKED."""
        if self.verdict != NOT_CHECKED:
            return ""
        counted = self.counted()
        if not self.laws:
            return "no law of the selection checks it"
        if not counted:
            skipped = skip_reasons(self.laws)
            return "no counted law was selected (conventions count only with --strict-conventions)" + (
                f"; the conventions laws skipped: {skipped}" if skipped else ""
            )
        return "every selected law skipped: " + skip_reasons(counted)

    def category(self, category: str) -> str:
        """FAIL, PASS or SKIP for one category (FAIL > PASS > SKIP); "-" when none of its laws ran."""
        statuses = {law.status for law in self.laws if law.category == category}
        return next((s for s in (FAIL, PASS, SKIP) if s in statuses), "-")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Subject:
        values = {**data, "laws": [LawVerdict.from_json(law) for law in data.get("laws", [])]}
        values["uncounted"] = tuple(values.get("uncounted", ("conventions",)))
        return cls(**values)


def combined(verdicts: list[str]) -> str:
    """FAIL if any is FAIL, else NOT CHECKED if any is NOT CHECKED, else PASS (and PASS for none)."""
    return FAIL if FAIL in verdicts else NOT_CHECKED if NOT_CHECKED in verdicts else PASS


@dataclass
class Graded:
    """A graded file (or TARGET) and what became of its functions."""

    file: str
    subjects: list[Subject] = field(default_factory=list)
    error: str = ""  # the worker's: timeout, memory, crash, output
    printed_bytes: int = 0

    @property
    def verdict(self) -> str:
        return FAIL if self.error else combined([s.verdict for s in self.subjects])


@dataclass
class Options:
    """How to grade: the hypothesis profile and seed, the categories, and the limits per file."""

    profile: str = "dev"
    seed: int | None = None  # None: derandomised (the same verdicts on every run)
    only: tuple[str, ...] = ()
    laws: str = ""  # a pytest -k expression: only the laws it matches
    square: bool = False
    timeout: float = 300.0
    memory_mb: int = 4096  # enough for a JIT runtime such as jax's XLA under the whole battery
    kind: str = "scaled"  # of a single TARGET
    softmax: str | None = None
    multihead: str | None = None
    backward: str | None = None  # --backward TARGET: the backward pass of the TARGET, for the gradient laws
    gradients: bool = False  # --gradients: the TARGET's gradients by its array library's autograd
    convention: tuple[str, ...] = ()  # --convention sdpa and its --layout/--array/--dtype, as pytest arguments
    arrays_dir: str | None = None  # where large counterexamples' .npz files go (None: every array inline)


@dataclass(frozen=True)
class Job:
    """A file to grade, as the parent finds it."""

    file: str  # as given or found
    path: str | None  # a notebook or .py file, absolute
    target: str | None  # a TARGET, absolute when a file


@dataclass
class WorkerJob:
    """What the parent hands a worker (job.json): the file and how to grade it."""

    file: str
    path: str | None
    target: str | None
    profile: str = "dev"
    seed: int | None = None
    only: tuple[str, ...] = ()
    laws: str = ""
    square: bool = False
    timeout: float = 300.0
    memory_mb: int = 4096
    kind: str = "scaled"
    softmax: str | None = None
    multihead: str | None = None
    backward: str | None = None
    gradients: bool = False
    convention: tuple[str, ...] = ()
    arrays_dir: str | None = None
    # This worker runs the laws of part `shard` of `shards`: contiguous runs of the collection order, so that the
    # parts' laws, concatenated, are the laws of one whole run in their order (grading.grade_shards).
    shard: int = 0
    shards: int = 1
    # Where the run keeps the laws' shared examples (properties/checker/shared_draws.py); None: in the worker only.
    draws_dir: str | None = None

    @classmethod
    def of(cls, job: Job, options: Options, shard: int = 0, shards: int = 1, draws_dir: str | None = None) -> WorkerJob:
        return cls(**asdict(job), **asdict(options), shard=shard, shards=shards, draws_dir=draws_dir)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerJob:
        return cls(**{**data, "only": tuple(data["only"]), "convention": tuple(data["convention"])})


# ---------------------------------------------------------------------------------------------- the JSON report


def run_json(file: Graded, subject: Subject) -> dict[str, Any]:
    """One function checked: `runs[]` of the report."""
    return {
        "file": file.file,
        "function": subject.function,
        "target": subject.target,
        "kind": subject.kind,
        "state": subject.state,
        "given": subject.given,
        "verdict": subject.verdict,
        "not_checked": subject.not_checked,
        "error": subject.error,
        "laws": [asdict(law) for law in subject.laws],
    }


def report_json(graded: list[Graded], options: Options) -> dict[str, Any]:
    """The whole report (--json FILE); docs/json.md describes every key."""
    runs = [run_json(file, subject) for file in graded for subject in file.subjects]
    runs += [{"file": file.file, "function": None, "target": None, "kind": None, "state": "not graded",
              "given": False, "verdict": FAIL, "not_checked": "", "error": file.error, "laws": []}
             for file in graded if not file.subjects]  # fmt: skip
    return {
        "schema": SCHEMA_VERSION,
        "verdict": combined([file.verdict for file in graded]),
        "profile": options.profile,
        "seed": options.seed,
        "only": list(options.only),
        "categories": list(CATEGORIES),
        "files": [{"file": file.file, "verdict": file.verdict, "error": file.error} for file in graded],
        "runs": runs,
    }
