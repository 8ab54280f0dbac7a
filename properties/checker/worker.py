"""The worker: `python -m properties.checker.worker JOB RESULT` grades one file for the parent (grading.py).

It limits its own memory and output, finds the functions (a template or missing function costs no run of the
battery), and runs the battery in-process, once per function, with properties.checker.verdicts recording the
laws. pytest and hypothesis are imported here, not in the parent, which only starts workers and reads their
results.
"""

from __future__ import annotations

import gc
import hashlib
import json
import sys
import tempfile
from collections.abc import Generator, Sequence
from pathlib import Path

import pytest
from hypothesis import Phase, Verbosity, settings

from properties.checker.grading import (
    BAD_EXPRESSION,
    NOTEBOOK_FUNCTIONS,
    REFERENCE,
    backward_arguments,
    limit_resources,
    note_softmax_overflow,
)
from properties.checker.records import Subject, WorkerJob
from properties.checker.report import own_output
from properties.checker.shared_draws import SharedDraws
from properties.helpers.options import FLASH_REFERENCE_TARGET, PROFILES, SDPA_REFERENCE_TARGET
from properties.helpers.sibling_examples import PLUGIN_NAME as SIBLINGS

# No explain phase: it reruns a failing law many times for a note that the report does not use.
CHECK_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)


def subjects_of_file(path: Path) -> list[Subject]:
    from properties.helpers.notebook import extract, global_message, load_notebook_function

    extraction = extract(path)
    subjects = []
    for name, kind in NOTEBOOK_FUNCTIONS.items():
        state = extraction.status[name]
        subject = Subject(name, f"{path}:{name}", kind, state, extraction.calls_softmax_cols.get(name, False),
                          given=name in extraction.given)  # fmt: skip
        if state.startswith("reads a notebook global"):
            subject.error = global_message(extraction.globals_read[name])
        elif state in ("template", "missing"):
            subject.error = "still the notebook's template" if state == "template" else "not defined in the file"
        elif state == "implemented":
            try:
                load_notebook_function(path, name)
            except Exception as error:
                subject.state = f"raises on import: {type(error).__name__}: {error}"
        subjects.append(subject)
    return subjects


def subjects_of_target(job: WorkerJob) -> list[Subject]:
    from properties.helpers.loading import load_function
    from properties.helpers.notebook import is_template

    if job.target == REFERENCE and job.convention:
        flash = "flash" in job.convention
        return [Subject("flash_kernel" if flash else "sdpa_kernel",
                        FLASH_REFERENCE_TARGET if flash else SDPA_REFERENCE_TARGET, job.kind)]  # fmt: skip
    if job.target == REFERENCE:
        function = "scaled_dot_product_self_attention" if job.kind == "scaled" else "self_attention"
        return [
            Subject(function, f"attention:{function}", job.kind),
            Subject("softmax_cols", "attention:softmax_cols", "softmax"),
            Subject("multihead_scaled_self_attention", "attention:multihead_scaled_self_attention", "multihead"),
        ]
    targets = {job.kind: job.target, "softmax": job.softmax, "multihead": job.multihead}
    subjects = [Subject(t.rpartition(":")[2], t, kind) for kind, t in targets.items() if t]
    for subject in subjects:
        try:
            loaded = load_function(subject.target)
        except Exception as error:
            missing = isinstance(error, ValueError) and "has no attribute" in str(error)
            subject.state = "missing" if missing else f"raises on import: {type(error).__name__}: {error}"
            continue
        if subject.kind in ("scaled", "unscaled", "softmax") and is_template(loaded, subject.kind != "softmax"):
            subject.state, subject.error = "template", "still the notebook's template"
    return subjects


class KeepSubjects:
    """Deselects every law that checks none of the given fixtures (implementation, softmax, multihead)."""

    def __init__(self, fixtures: set[str]) -> None:
        self.fixtures = fixtures

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        from properties.checker.verdicts import subject_of

        keep = [item for item in items if subject_of(item) in self.fixtures]
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep


class KeepShard:
    """Keeps part `shard` of `shards` of the laws left after KeepSubjects: contiguous runs of whole laws (every
    parameter of a law in one part) in collection order, of sizes differing by at most one law."""

    def __init__(self, shard: int, shards: int) -> None:
        self.shard, self.shards = shard, shards

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        laws = list(dict.fromkeys(getattr(item, "originalname", item.name) for item in items))
        size, extra = divmod(len(laws), self.shards)
        start = self.shard * size + min(self.shard, extra)
        mine = set(laws[start : start + size + (self.shard < extra)])
        keep = [item for item in items if getattr(item, "originalname", item.name) in mine]
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep


class BatteryBytecode:
    """While pytest collects the battery, its modules keep their assertion-rewritten bytecode (pytest writes it in
    their __pycache__, as Python does on any import), so a later check does not rewrite them again; the code under
    test, loaded before and run after, writes none (PYTHONDONTWRITEBYTECODE: no __pycache__ beside a student's file)."""

    @pytest.hookimpl(wrapper=True)
    def pytest_collection(self) -> Generator[None, object, object]:
        sys.dont_write_bytecode = False
        try:
            return (yield)
        finally:
            sys.dont_write_bytecode = True


FIXTURE = {"scaled": "implementation", "unscaled": "implementation", "softmax": "softmax", "multihead": "multihead"}


def _battery(subjects: list[Subject], job: WorkerJob, scratch: Path, shared: SharedDraws) -> None:
    """Run the battery once on these subjects (at most one per fixture) and give each its laws, each law replaying
    its `shared` draws first."""
    from properties.checker.verdicts import VerdictRecorder

    ini = scratch / "pytest.ini"
    ini.write_text("[pytest]\n")
    selection = "not meta and not benchmark"
    if job.only:
        selection += " and (" + " or ".join(job.only) + ")"
    arguments = [
        "--pyargs", "properties", "regression", "-p", "properties.plugin", "-p", "properties.checker.verdicts",
        "-p", "no:cacheprovider", "-p", "no:unraisableexception", "-p", f"no:{SIBLINGS}",
        "-c", str(ini), "--rootdir", str(scratch), "-q", "-s", "--no-header", "--tb=short", "--benchmark-skip",
        "-W", "ignore::pytest.PytestAssertRewriteWarning",
        "-m", selection, "--hypothesis-profile", job.profile,
    ]  # fmt: skip
    for subject in subjects:
        if subject.kind in ("scaled", "unscaled"):
            arguments += ["--impl", subject.target, "--impl-kind", subject.kind]
        else:
            arguments += [f"--{subject.kind}", subject.target]
    if any(subject.kind in ("scaled", "unscaled") for subject in subjects):
        arguments += backward_arguments(job.backward, job.gradients, job.target == REFERENCE, job.convention,
                                        job.kind)  # fmt: skip
    if job.laws:
        arguments += ["-k", job.laws]
    if job.seed is not None:
        arguments += ["--hypothesis-seed", str(job.seed)]
    if job.square:
        arguments.append("--square")
    arguments += job.convention
    # Under a row convention the implementation is also the `kernel` of the row-convention laws; its backward pass
    # (the `backward` of the gradient laws) is graded with it.
    attention = ("scaled", "unscaled")
    fixtures = {kind: {FIXTURE[kind], "kernel", "flash", "backward"} if job.convention and kind in attention
                else {FIXTURE[kind], "backward"} if kind in attention else {FIXTURE[kind]}
                for kind in FIXTURE}  # fmt: skip
    digest = hashlib.sha1("|".join(s.target for s in subjects).encode()).hexdigest()[:8]
    tag = "-".join([*(s.function for s in subjects), digest])
    recorder = VerdictRecorder(arrays=Path(job.arrays_dir) if job.arrays_dir else None, tag=tag)
    plugins = [recorder, shared, BatteryBytecode(), KeepSubjects(set().union(*(fixtures[s.kind] for s in subjects)))]
    if job.shards > 1:
        plugins.append(KeepShard(job.shard, job.shards))
    code = pytest.main(arguments, plugins=plugins)
    for subject in subjects:
        subject.laws = [law for law in recorder.laws.values() if law.subject in fixtures[subject.kind]]
        subject.done = True
        if code == pytest.ExitCode.USAGE_ERROR and job.laws:
            subject.error = f"-k {job.laws!r}: {BAD_EXPRESSION}"
        elif code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED):
            subject.error = f"the battery could not run (pytest exit {int(code)})"
            print(f"attention-check: the battery could not run on {subject.target} (pytest exit {int(code)})")


def work(job: WorkerJob, result: Path) -> None:
    """The worker: grade one file (job) and write its subjects to `result` after each run of the battery."""
    limit_resources(job.memory_mb)

    import properties.plugin  # noqa: F401  (registers the profiles, which are made deterministic here)

    # Quiet: the report is ours (counterexamples recorded from the laws' calls); hypothesis's own prints, such as
    # the explicit example of a law that skips (25 kB for N = 600), would only bury it.
    for name in PROFILES:
        settings.register_profile(
            name, settings.get_profile(name), derandomize=job.seed is None, database=None,
            report_multiple_bugs=False, print_blob=False, phases=CHECK_PHASES, verbosity=Verbosity.quiet,
        )  # fmt: skip
    path = Path(job.path) if job.path else None
    subjects = subjects_of_file(path) if path is not None else subjects_of_target(job)
    # Everything imported so far (pytest, hypothesis, numpy, the battery, the code under test) lives as long as the
    # worker: kept out of the collector's full passes, which otherwise scan it again and again during the laws.
    gc.freeze()

    def save() -> None:
        with own_output():
            result.write_text(json.dumps([s.to_json() for s in subjects]))

    save()
    ready = [s for s in subjects if s.state == "implemented" and not s.error]
    for s in subjects:
        s.done = s not in ready
    sessions: list[list[Subject]] = []
    if path is not None:  # a notebook: each function on its own
        sessions = [[s] for s in sorted(ready, key=lambda s: list(NOTEBOOK_FUNCTIONS.values()).index(s.kind))]
    elif ready:  # a TARGET with its --softmax and --multihead, in one run
        sessions = [ready]
    shared = SharedDraws(Path(job.draws_dir) if job.draws_dir else None, job.seed)  # one for the file's functions
    with tempfile.TemporaryDirectory(prefix="attention-check-") as scratch:
        for session in sessions:
            save()
            _battery(session, job, Path(scratch), shared)
    note_softmax_overflow(subjects)
    save()


def main(argv: Sequence[str] | None = None) -> None:
    """The worker's entry point: python -m properties.checker.worker JOB RESULT."""
    job, result = argv if argv is not None else sys.argv[1:]
    work(WorkerJob.from_json(json.loads(Path(job).read_text())), Path(result))


if __name__ == "__main__":
    main()
