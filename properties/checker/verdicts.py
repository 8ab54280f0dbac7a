"""One verdict per law, for attention-check: a pytest plugin that records each law's outcome and, for a
FAIL, the shrunk counterexample, a replay snippet and a diagnosis.

The counterexample is taken from the law itself: while a law runs, its hypothesis handle's `inner_test`
(the hook hypothesis documents for plugins that wrap the test body) is wrapped to record the keyword
arguments of every call. Hypothesis replays the shrunk failing example last and lets its exception
propagate; the call that raised that very exception is the counterexample.
"""

from __future__ import annotations

import functools
import inspect
import json
import traceback
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import strategies as st

from properties.catalogues.registry import category_of_item
from properties.checker.diagnosis import diagnose
from properties.checker.records import LawVerdict
from properties.checker.report import ArrayStore, Draws, counterexample, snippet
from properties.checker.shared_draws import UNSHRUNK
from properties.helpers.checks import OBSERVED, leaves
from properties.helpers.implementations import SET_ASIDE
from properties.helpers.options import FIXTURES

SUBJECTS = FIXTURES  # the fixture a law checks, most specific first


@dataclass
class Call:
    """One call of a law's body: its keyword arguments, and what it raised (None if it returned)."""

    arguments: dict[str, Any]
    error: BaseException | None = None


@dataclass
class Calls:
    """The calls of one law's body during one test item."""

    calls: list[Call] = field(default_factory=list)

    def failing(self, error: BaseException) -> Call | None:
        """The call that raised `error`, else the last call that raised anything."""
        raised = [call for call in self.calls if call.error is not None]
        return next((c for c in reversed(raised) if c.error is error), raised[-1] if raised else None)


CALLS = pytest.StashKey[Calls]()


def recording(inner: Callable[..., Any], calls: Calls) -> Callable[..., Any]:
    """`inner` (a law's body), recording the arguments (by name, also those hypothesis passes by position, as it
    does for an explicit example) and the outcome of every call in `calls`."""
    names = list(inspect.signature(inner).parameters)

    @functools.wraps(inner)
    def body(*args: Any, **kwargs: Any) -> Any:
        given = {**dict(zip(names, args, strict=False)), **kwargs}
        arguments = {k: Draws(v) if isinstance(v, st.DataObject) else v for k, v in given.items()}
        call = Call(arguments)
        calls.calls.append(call)
        try:
            return inner(**arguments)
        except BaseException as error:
            call.error = error
            raise

    return body


def subject_of(item: pytest.Item) -> str:
    """Which function under test the law checks: softmax, multihead or implementation ("" for none)."""
    names = getattr(item, "fixturenames", ())
    return next((name for name in SUBJECTS if name in names), "")


def describe(error: BaseException) -> str:
    """The failure in words: the law's message, the exception's type when it is not an assertion, the file
    and line of an assert that says nothing, and what caused it."""
    first = leaves(error)[0]
    message = str(first).strip()
    if not message:
        frames = traceback.extract_tb(first.__traceback__)
        where = f" at {frames[-1].filename}:{frames[-1].lineno}: {frames[-1].line}" if frames else ""
        message = f"{type(first).__name__}{where}"
    elif not isinstance(first, AssertionError):
        message = f"{type(first).__name__}: {message}"
    cause = first.__cause__
    if cause is not None and not isinstance(cause, AssertionError):
        message += f"\n  caused by {type(cause).__name__}: {cause}"
    return message


class VerdictRecorder:
    """Collects one verdict per law (a test function, over its parameters): FAIL > PASS > SKIP."""

    RANK: ClassVar[dict[str, int]] = {"FAIL": 2, "PASS": 1, "SKIP": 0}

    def __init__(self, path: Path | None = None, arrays: Path | None = None, tag: str = "") -> None:
        """`path`: the JSON to write at the end (None: none); `arrays`: the directory for the .npz files of large
        counterexamples (None: every array inline); `tag`: names those files apart (the function under test)."""
        self.path = path
        self.arrays = arrays
        self.tag = tag
        self.laws: dict[str, LawVerdict] = {}
        self.by_nodeid: dict[str, str] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            category = category_of_item(item)
            if category is None:  # not a law (properties/catalogues/registry.py)
                continue
            function = getattr(item, "function", None)
            law = getattr(item, "originalname", item.name)
            self.by_nodeid[item.nodeid] = law
            self.laws.setdefault(
                law,
                LawVerdict(
                    law=law,
                    category=category,
                    module=getattr(function, "__module__", ""),
                    subject=subject_of(item),
                    statement=" ".join((getattr(function, "__doc__", None) or "").split()),
                ),
            )

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Any, None]:
        handle = getattr(getattr(item, "obj", None), "hypothesis", None)
        if handle is None or item.nodeid not in self.by_nodeid:
            yield
            return
        inner = handle.inner_test
        calls = item.stash[CALLS] = Calls()
        handle.inner_test = recording(inner, calls)
        OBSERVED.clear()
        SET_ASIDE.clear()
        try:
            yield
        finally:
            handle.inner_test = inner
            row = self.laws[self.by_nodeid[item.nodeid]]
            for what, count in OBSERVED.items():
                row.seen[what] = row.seen.get(what, 0) + count
            for why, count in SET_ASIDE.items():
                row.set_aside[why] = row.set_aside.get(why, 0) + count
            OBSERVED.clear()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        outcome = yield
        report: pytest.TestReport = outcome.get_result()
        law = self.by_nodeid.get(item.nodeid)
        if law is None:
            return
        row = self.laws[law]
        found: dict[str, Any] = {}
        if report.failed:
            status = "FAIL"
            if call.excinfo is None:
                reason = details = report.longreprtext
            else:
                details = describe(call.excinfo.value)
                reason = details.splitlines()[0]
                if self.RANK[status] > self.RANK[row.status]:
                    found = self._counterexample(item, call.excinfo.value, self._store(law))
        elif report.skipped:
            longrepr = report.longrepr
            status = "SKIP"
            reason = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
            reason = reason.removeprefix("Skipped: ")
            details = ""
        elif report.when == "call":
            status, reason, details = "PASS", "", ""
        else:
            return
        if self.RANK[status] > self.RANK[row.status] or (status == row.status == "SKIP" and not row.reason):
            row.status, row.reason, row.details = status, reason, details
            for name, value in found.items():
                setattr(row, name, value)

    def _store(self, law: str) -> ArrayStore:
        """Where the large arrays of `law`'s counterexample go: <arrays>/<tag>-<law>.npz (or nowhere)."""
        if self.arrays is None:
            return ArrayStore()
        return ArrayStore(self.arrays / f"{self.tag + '-' if self.tag else ''}{law}.npz")

    @staticmethod
    def _counterexample(item: pytest.Item, error: BaseException, store: ArrayStore) -> dict[str, Any]:
        calls = item.stash.get(CALLS, None)
        failing = calls.failing(leaves(error)[0]) if calls is not None else None
        if failing is None:
            return {}
        law = getattr(item, "obj", None)
        found: dict[str, Any] = {"counterexample": counterexample(failing.arguments, store)}
        try:
            shrunk = not item.stash.get(UNSHRUNK, False)
            found["reproduce"] = snippet(law, failing.arguments, failing.error, store, shrunk)  # type: ignore[arg-type]
        except ValueError:
            found["reproduce"] = None
        found["arrays"] = store.save()
        diagnosis = diagnose(failing.arguments)
        if diagnosis is not None:
            found.update(diagnosis=diagnosis.message, mistake=diagnosis.mistake)
        return found

    def pytest_sessionfinish(self) -> None:
        if self.path is not None:
            self.path.write_text(json.dumps({"laws": [asdict(law) for law in self.laws.values()]}, indent=1) + "\n")


def pytest_addoption(parser: pytest.Parser) -> None:
    """`-p properties.checker.verdicts --attention-report FILE`: write one verdict per law as JSON."""
    group = parser.getgroup("attention", "attention-properties")
    group.addoption("--attention-report", default=None, metavar="FILE", help="write one verdict per law as JSON")


def pytest_configure(config: pytest.Config) -> None:
    report = config.getoption("--attention-report")
    if report:
        config.pluginmanager.register(VerdictRecorder(Path(report)), "attention-verdicts")
