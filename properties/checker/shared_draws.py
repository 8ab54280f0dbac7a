"""The laws' examples drawn once per grading run and shared by every function it checks.

Drawing is most of a law's cost (hypothesis builds each example choice by choice), and a class of notebooks
meets every law once per function per student. In a grading worker each hypothesis law first replays its shared
examples: its explicit `@example`s, then the `settings.max_examples` examples its own run draws (the same seed:
derandomised, or `--seed`; in two batches, BATCHES), drawn by the first worker that needs them and kept, pickled,
in a directory the parent hands its workers (in memory only without one). So a law meets the examples it would
have drawn itself, whichever worker drew them, in every file and whatever the class: a function on which the law
holds throughout its run meets exactly those examples.

A law that holds on every shared example, each run to its end, PASSes. Anything else (a failure, an example the
law or the function sets aside, an error) runs the law as hypothesis runs it, whose verdict and shrunk
counterexample are the law's; when that run holds although a shared example failed (its draws went another way
after an example was set aside), the law is rerun with that example as an explicit one, so that it FAILs on it
(unshrunk). A skip raised by the law is its verdict.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings

from properties.checker.report import own_output
from properties.helpers.hypothesis_internals import (
    derandomized_seed,
    draws,
    explicit_examples_of,
    local_constants_digest,
    settings_of,
)
from properties.helpers.sibling_examples import law_and_arguments, own_run, replay_examples

Example = dict[str, Any]
# Set on a law's item when its FAIL is a shared example that the law's own run did not meet (so not shrunk).
UNSHRUNK = pytest.StashKey[bool]()
# The drawn examples come in two batches: the first alone, since a law that skips (an option the function does not
# take) or fails at once needs no more; then the rest of the law's max_examples (drawn from the start again: a run
# seeded alike draws the same first example).
BATCHES = (1, 10**9)


class SharedDraws:
    """pytest plugin of the grading worker: each hypothesis law replays its shared examples first (module doc)."""

    def __init__(self, directory: Path | None, seed: int | None) -> None:
        """`directory`: where the run keeps the drawn examples (None: in this process only); `seed`: --seed."""
        self.directory = directory
        self.seed = seed
        self.drawn: dict[str, list[Example]] = {}

    def batch(self, law: Callable[..., Any], index: int) -> list[Example]:
        """The law's `index`-th batch of drawn examples (BATCHES): from this process, else the run's directory,
        else drawn now (and kept there)."""
        # Keyed by what the draws depend on: the law, the batch, the seed and the local constants hypothesis mixes in
        # (the battery's and a TARGET file's own numbers: two files with different ones do not share).
        name = f"{law.__module__}.{law.__qualname__}|{index}|{self.seed}|{local_constants_digest()}"
        if name in self.drawn:
            return self.drawn[name]
        path = self.directory / f"{hashlib.sha1(name.encode()).hexdigest()}.pickle" if self.directory else None
        drawn: list[Example] | None = None
        if path is not None and path.exists():
            try:
                drawn = pickle.loads(path.read_bytes())
            except (OSError, pickle.UnpicklingError, EOFError):  # half written by a worker that was stopped
                drawn = None
        if drawn is None:
            start = sum(BATCHES[:index])
            end = min(start + BATCHES[index], settings_of(law).max_examples)
            chosen = settings(settings_of(law), max_examples=max(end, 1), database=None, derandomize=False,
                              phases=[Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip
            seed = derandomized_seed(law) if self.seed is None else self.seed
            drawn = draws(law, chosen, seed_of=seed)[start:end] if end > start else []
            if path is not None:
                keep(path, drawn)
        self.drawn[name] = drawn
        return drawn

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> bool | None:
        if (replayable := law_and_arguments(pyfuncitem)) is None:
            return None  # pytest calls it
        law, arguments = replayable
        explicit = explicit_examples_of(law)
        held, failing = replay_shared(law, explicit, arguments)
        replayed = len(explicit)
        generates = Phase.generate in settings_of(law).phases  # else the law's run checks its explicit examples only
        for index in range(len(BATCHES) if generates else 0):
            if not held:
                break
            try:
                drawn = self.batch(law, index)
            except Exception:  # its strategies cannot draw (unsatisfiable, say): the law's own run says so
                held = False
                break
            held, failing = replay_shared(law, drawn, arguments)
            replayed += len(drawn)
        if held and replayed:  # never a PASS on no example
            return True

        def unshrunk() -> None:
            pyfuncitem.stash[UNSHRUNK] = True

        own_run(law, arguments, failing, unshrunk)
        return True


def replay_shared(
    law: Callable[..., Any], examples: list[Example], arguments: dict[str, Any]
) -> tuple[bool, Example | None]:
    """Replay the examples on the law (sibling_examples.replay_examples): (True, None) if each ran to its end and
    held; (False, the example) if one failed as a law fails; (False, None) after anything else (an example set aside
    or rejected, another error). A skip propagates."""
    held, failing, completed = replay_examples(law, examples, arguments)
    return held and completed == len(examples), failing


def keep(path: Path, drawn: list[Example]) -> None:
    """Write the drawn examples to `path` whole or not at all (another worker may read it meanwhile), outside the
    output limit the worker sets for the code under test; examples that do not pickle, or a directory that cannot
    be written, leave them in this process only."""
    try:
        data = pickle.dumps(drawn)
    except (pickle.PicklingError, TypeError, AttributeError):
        return
    with own_output(), contextlib.suppress(OSError):
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".part")
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
