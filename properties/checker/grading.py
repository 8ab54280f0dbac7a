"""Grade many files: each notebook, .py file or TARGET in its own worker process, several at once.

The parent (`grade`) hands each file to `python -m properties.checker.worker JOB RESULT`, with a time limit,
and reads back one verdict per law for each function of the file (properties/checker/worker.py runs the
battery). The parent imports neither pytest nor hypothesis: an attention-check pays for them in its workers only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

from properties.checker.records import SKIP, Graded, Job, LawVerdict, Options, Subject, WorkerJob, counted_laws
from properties.helpers.options import (
    BACKWARD_REFERENCE_TARGETS,
    CATEGORIES,
)

__all__ = ["Graded", "Job", "LawVerdict", "Options", "Subject", "WorkerJob", "grade", "jobs_for", "merged", "rows"]

NOTEBOOK_FUNCTIONS = {"softmax_cols": "softmax", "self_attention": "unscaled",
                      "scaled_dot_product_self_attention": "scaled"}  # fmt: skip
REFERENCE = "attention"  # the job that checks the bundled reference (attention-check without PATH)
SOFTMAX_OVERFLOW_LAW = "test_softmax_is_finite_for_every_finite_input"
COURSE_SOFTMAX = "softmax_cols as the course gives it"  # whose code a notebook's overflow FAILs are (records.py)
BAD_EXPRESSION = "not a pytest -k expression (names joined by and, or, not, with parentheses)"
OUTPUT_LIMIT_MB = 64  # what a file may print (its worker is stopped beyond)
MAX_SHARDS = 4  # workers one file's laws are split between at most (grade)
DRAWS_CACHE = "ATTENTION_DRAWS_CACHE"  # where the laws' drawn examples are kept between runs ("off": not kept)
DRAWS_KEPT_DAYS = 14  # a cache of another version of the battery unused this long is removed


def convention_arguments(convention: str, **choices: str | None) -> tuple[str, ...]:
    """The pytest arguments of a calling convention: () for the notebook's, else --convention and its choices."""
    if convention == "notebook":
        given = [f"--{name}" for name, value in choices.items() if value]
        if given:
            raise SystemExit(f"attention-check: {', '.join(given)} need --convention sdpa or flash")
        return ()
    return ("--convention", convention, *(f"--{name}={value}" for name, value in choices.items() if value))


def backward_arguments(
    backward: str | None, gradients: bool, reference: bool, convention: Sequence[str], kind: str = "scaled"
) -> list[str]:
    """The pytest arguments that give the gradient laws their backward pass: --gradients, --backward TARGET, or the
    reference's own backward pass of its convention and kind when the job checks the bundled reference."""
    if gradients:
        return ["--gradients"]
    if backward is None and reference:
        backward = BACKWARD_REFERENCE_TARGETS[
            "sdpa" if convention else "notebook", "unscaled" if kind == "unscaled" else "scaled"
        ]
    return ["--backward", backward] if backward else []


def note_softmax_overflow(subjects: list[Subject]) -> None:
    """Where softmax_cols overflows, say so on the overflow rows of the functions that call it; when it is the
    course's own softmax_cols, those rows and its own overflow FAILs are the course's: shown, not counted."""
    softmax = next((s for s in subjects if s.kind == "softmax" and s.function == "softmax_cols"), None)
    if softmax is None or not any(law.law == SOFTMAX_OVERFLOW_LAW and law.status == "FAIL"
                                  for law in softmax.laws):  # fmt: skip
        return
    course = COURSE_SOFTMAX if softmax.given else ""
    for subject in subjects:
        for law in subject.laws if subject.calls_softmax_cols else []:
            if law.mistake in ("notebook_softmax", "overflow"):
                law.diagnosis = "the overflow comes from softmax_cols, which does not subtract the column maximum"
                law.attributed = course
    for law in softmax.laws if course else []:  # the course's code, every line of it
        if law.status == "FAIL":
            law.attributed = course


def limit_resources(memory_mb: int) -> None:
    """Cap the worker's heap (RLIMIT_DATA: what it allocates, not the address space that JIT runtimes such as
    XLA reserve without using, which RLIMIT_AS would count) and the size of what the code under test writes (the
    soft limit only: the worker lifts it while it writes its own results, `own_output`)."""
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    size = OUTPUT_LIMIT_MB * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size if hard == resource.RLIM_INFINITY else min(size, hard), hard))


# ---------------------------------------------------------------------------------------------- the parent


def absolute_target(target: str) -> str:
    """A file TARGET made absolute (the battery runs in a scratch directory); a module TARGET unchanged."""
    module, sep, attribute = target.rpartition(":")
    if sep and (module.endswith((".py", ".ipynb")) or "/" in module or "\\" in module):
        return f"{Path(module).expanduser().resolve()}:{attribute}"
    return target


def defines_a_function(path: Path) -> bool:
    """Whether a .py file defines one of the notebook's functions (a `def softmax_cols(`, ... line): a student's
    solution, not a helper module beside it."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(re.search(rf"^\s*def\s+{name}\s*\(", text, re.MULTILINE) for name in NOTEBOOK_FUNCTIONS)


def jobs_for(paths: Sequence[str]) -> tuple[list[Job], list[str]]:
    """The files to grade (folders searched recursively for notebooks and for .py files that define one of the
    notebook's functions), and the PATHs that name nothing."""
    if not paths:
        return [Job("attention (the bundled reference)", None, REFERENCE)], []
    jobs, unknown = [], []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            found = sorted(p for pattern in ("*.ipynb", "*.py") for p in path.rglob(pattern)
                           if ".ipynb_checkpoints" not in p.parts
                           and (p.suffix == ".ipynb" or defines_a_function(p)))  # fmt: skip
            jobs += [Job(str(p), str(p.resolve()), None) for p in found]
        elif path.suffix in (".ipynb", ".py") and path.is_file():
            jobs.append(Job(given, str(path.resolve()), None))
        elif ":" in given and not path.exists():
            jobs.append(Job(given, None, absolute_target(given)))
        else:
            unknown.append(given)
    return jobs, unknown


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def grade_one(job: Job, options: Options, shard: int = 0, shards: int = 1, draws_dir: str | None = None) -> Graded:
    """Grade one file (its laws' part `shard` of `shards`) in a worker process with the time, memory and output
    limits of `options`; `draws_dir` is where the run's workers share the laws' drawn examples (shared_draws.py)
    and keep hypothesis's storage (the constants it parses out of local modules, once per source)."""
    graded = Graded(job.file)
    with tempfile.TemporaryDirectory(prefix="attention-grade-") as scratch:
        job_file, result, output = (Path(scratch) / name for name in ("job.json", "result.json", "output.txt"))
        job_file.write_text(json.dumps(WorkerJob.of(job, options, shard, shards, draws_dir).to_json()))
        environment = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OPENBLAS_NUM_THREADS": "1",
                       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # fmt: skip
        environment.pop("ATTENTION_IMPL", None)
        if draws_dir is not None:  # hypothesis's own cache (the constants it reads from local modules) kept too
            environment.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(hypothesis_storage(draws_dir)))
        with output.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "properties.checker.worker", str(job_file), str(result)],
                cwd=scratch, env=environment, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                code = process.wait(timeout=options.timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                code = None
        graded.printed_bytes = output.stat().st_size
        if result.exists() and result.stat().st_size:
            with contextlib.suppress(json.JSONDecodeError):  # stopped while writing: reported unfinished below
                graded.subjects = [Subject.from_json(s) for s in json.loads(result.read_text())]
        tail = output.read_bytes()[-3000:].decode(errors="replace")
    if code is None:
        graded.error = f"did not finish within {options.timeout:.0f} s (a loop that never ends, or far too slow?)"
    elif code == -signal.SIGXFSZ or graded.printed_bytes >= OUTPUT_LIMIT_MB * 2**20:
        graded.error = f"printed more than {OUTPUT_LIMIT_MB} MB; stopped"
    elif code < 0:
        graded.error = f"crashed the interpreter ({_signal_name(-code)})"
    elif code != 0:
        memory = "MemoryError" in tail
        graded.error = (
            f"exhausted the memory limit ({options.memory_mb} MB)" if memory else f"the checker failed:\n{tail}"
        )
    for subject in graded.subjects:
        if subject.error.startswith("the battery could not run"):
            subject.error += ":\n" + tail
        if not subject.done and not subject.error:
            subject.error = graded.error or "not run"
        set_aside_exhausted_memory(subject, options.memory_mb)
    if not graded.subjects and not graded.error:
        graded.error = "the worker reported nothing"
    return graded


def exhausted_memory(law: LawVerdict) -> bool:
    """Whether the function raised MemoryError under this law (its FAIL's reason, or what a law that accepts a
    raised exception saw)."""
    return "MemoryError" in law.reason or any("MemoryError" in seen for seen in law.seen)


def set_aside_exhausted_memory(subject: Subject, memory_mb: int) -> None:
    """A function that raised MemoryError errs with "exhausts memory", and each law under which it did becomes a
    SKIP (not checked): running out of the grader's memory is neither a law's FAIL nor, on an empty input, a
    refusal that the conventions law would PASS. The laws it ran within the limit keep their verdicts."""
    if not any(exhausted_memory(law) for law in subject.laws):
        return
    subject.error = subject.error or f"exhausts memory (limit {memory_mb} MB): MemoryError"
    reason = f"not checked: the function exhausted the memory limit ({memory_mb} MB)"
    subject.laws = [
        dataclasses.replace(law, status=SKIP, reason=reason, details="", counterexample=None, reproduce=None,
                            diagnosis=None, mistake=None, arrays=None, seen={})
        if exhausted_memory(law) else law
        for law in subject.laws
    ]  # fmt: skip


def merged(parts: Sequence[Graded]) -> Graded:
    """One file's verdicts from the workers that each ran a part of its laws (KeepShard): every part finds the same
    functions; their laws, concatenated in part order, are those of one whole run in the same order."""
    first = parts[0]
    graded = Graded(first.file, error=next((part.error for part in parts if part.error), ""),
                    printed_bytes=sum(part.printed_bytes for part in parts))  # fmt: skip
    if not all(len(part.subjects) == len(first.subjects) for part in parts):  # a part that stopped before reporting
        graded.subjects = max((part.subjects for part in parts), key=len)
        graded.error = graded.error or "a worker reported nothing"
        return graded
    for subjects in zip(*(part.subjects for part in parts), strict=True):
        subject = dataclasses.replace(subjects[0], laws=[law for s in subjects for law in s.laws])
        subject.error = next((s.error for s in subjects if s.error), "")
        subject.done = all(s.done for s in subjects)
        graded.subjects.append(subject)
    note_softmax_overflow(graded.subjects)  # the softmax's overflow law and the callers' laws may be in two parts
    return graded


def battery_fingerprint() -> str:
    """A digest of what the laws' draws depend on besides their law, seed and options: the sources of attention/,
    properties/ and regression/ (strategies, laws, the reference they call), and the versions of Python, hypothesis
    and numpy (read from their metadata: nothing is imported)."""
    digest = hashlib.sha1()
    for package in ("attention", "properties", "regression"):
        spec = importlib.util.find_spec(package)
        roots = list(spec.submodule_search_locations or []) if spec is not None else []
        for root in roots:
            for path in sorted(Path(root).rglob("*.py")):
                digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(f"{sys.version}|{metadata.version('hypothesis')}|{metadata.version('numpy')}".encode())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def draws_directory(options: Options) -> Generator[str, None, None]:
    """Where a run's workers keep the laws' drawn examples (shared_draws.py), kept for later runs: DRAWS_CACHE
    (default $XDG_CACHE_HOME or ~/.cache, then attention-properties/draws), in a directory of the battery's
    fingerprint and the options the draws may depend on (profile, --square, the calling convention); directories of
    other fingerprints unused for DRAWS_KEPT_DAYS are removed (nothing else there is touched). "off", or a cache that
    cannot be made: a directory of this run only. Either way the yielded directory's parent belongs to the battery's
    version or to this run, which hypothesis_storage relies on."""
    chosen = os.environ.get(DRAWS_CACHE, "")
    if chosen != "off":
        home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        base = Path(chosen).expanduser() if chosen else home / "attention-properties" / "draws"
        context = json.dumps([options.profile, options.square, list(options.convention)])
        fingerprint = battery_fingerprint()
        directory = base / fingerprint / hashlib.sha1(context.encode()).hexdigest()[:12]
        try:
            directory.mkdir(parents=True, exist_ok=True)
            os.utime(directory.parent)
        except OSError:
            pass
        else:
            with contextlib.suppress(OSError):
                for old in base.iterdir():  # only what we made: a fingerprint's directory, 16 hex digits
                    ours = re.fullmatch(r"[0-9a-f]{16}", old.name) is not None and old.is_dir()
                    if ours and old.name != fingerprint and time.time() - old.stat().st_mtime > DRAWS_KEPT_DAYS * 86400:
                        shutil.rmtree(old, ignore_errors=True)
            yield str(directory)
            return
    with tempfile.TemporaryDirectory(prefix="attention-draws-") as scratch:
        draws = Path(scratch) / "draws"  # a subdirectory: the parent is this run's own, as the docstring says
        draws.mkdir()
        yield str(draws)


def hypothesis_storage(draws_dir: str) -> Path:
    """Where the workers keep hypothesis's storage (the constants it parses out of every local module, a file per
    source, keyed by its digest): beside the draws of every option set of the battery's version (draws_directory), so
    that a check under other options (a profile, --square, a convention) does not parse them again (0.5 s of CPU a
    worker), and removed with them."""
    return Path(draws_dir).parent / "hypothesis"


def grade(jobs: Sequence[Job], options: Options, workers: int, progress: Callable[[Graded], None]) -> list[Graded]:
    """Grade every job, `workers` at a time, in the order given; `progress` is called as each finishes. With fewer
    jobs than workers, each job's laws are split between `workers // len(jobs)` workers (the idle cores' share, at
    most MAX_SHARDS). The workers share the laws' drawn examples through `draws_directory` (shared_draws.py): each
    law is drawn for once, not once per file."""
    workers = max(1, workers)
    # At most MAX_SHARDS parts: each worker pays its own start (imports, collection: about a second here).
    shards = max(1, min(MAX_SHARDS, workers // max(1, len(jobs))))

    with draws_directory(options) as draws_dir:

        def one(job: Job) -> Graded:
            if shards == 1:
                graded = grade_one(job, options, draws_dir=draws_dir)
            else:
                with ThreadPoolExecutor(max_workers=shards) as parts:
                    graded = merged(list(parts.map(lambda shard: grade_one(job, options, shard, shards, draws_dir),
                                                   range(shards))))  # fmt: skip
            progress(graded)
            return graded

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, jobs))


def score(laws: Sequence[LawVerdict | dict[str, Any]], uncounted: Sequence[str] = ("conventions",)) -> float:
    """The fraction of counted laws passed: PASS / (PASS + FAIL) over the laws of counted categories; 0 when none
    ran (a template, a missing function or a file that could not be graded earns nothing). Laws are the records,
    or their JSON (the class report reads the JSON)."""
    records = [law if isinstance(law, LawVerdict) else LawVerdict(
        law="", category=law["category"], module="", subject="", status=law["status"],
        attributed=law.get("attributed", "")) for law in laws]  # fmt: skip
    counted = [law.status for law in counted_laws(records, tuple(uncounted)) if law.status in ("PASS", "FAIL")]
    return counted.count("PASS") / len(counted) if counted else 0.0


def rows(graded: Sequence[Graded]) -> Generator[dict[str, str], None, None]:
    """One row per (file, function): the CSV's columns."""
    for file in graded:
        subjects = file.subjects or [Subject("-", "", "-", state="not graded", error=file.error)]
        for subject in subjects:
            failed = [law for law in subject.laws if law.status == "FAIL"]
            notes = [law.diagnosis + (f" (not counted: {law.attributed})" if law.attributed else "")
                     for law in failed if law.diagnosis]  # fmt: skip
            diagnoses = list(dict.fromkeys(notes))
            yield {
                "file": file.file,
                "function": subject.function,
                "state": subject.state,
                "verdict": subject.verdict,
                "score": f"{score(subject.laws, subject.uncounted):.3f}",
                **{category: subject.category(category) for category in CATEGORIES},
                "failed_laws": " ".join(law.law for law in failed),
                "diagnosis": "; ".join(diagnoses),
                "error": subject.error or (file.error if not file.subjects else ""),
                "not_checked": subject.not_checked,
            }
