"""Check a function from a notebook cell: `from properties import check; check(scaled_dot_product_self_attention)`.

The function's source (inspect.getsource: a Jupyter cell's source is in linecache) is written with the imports
and the notebook functions it uses into a module in a scratch folder, and graded by the grading supervisor as
a TARGET: in its own worker process, with the time, memory and output limits of attention-check, so that a
function that loops or exhausts memory stops there and the notebook's kernel goes on. A function from an
importable file is graded from its file. The result renders as HTML in Jupyter (`_repr_html_`) and as text
under `print`; its fields are data a course's own tests can assert on.
"""

from __future__ import annotations

import dis
import inspect
import re
import tempfile
import textwrap
import types
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from properties.checker.cli import TIMEOUTS, law_title
from properties.checker.grading import Graded, Job, Options, convention_arguments, draws_directory, grade_one
from properties.checker.html import STYLE, Run, add_pictures, run_detail, runs_from_json
from properties.checker.pictures import MISSING_MATPLOTLIB, have_matplotlib
from properties.helpers.notebook import global_message
from properties.helpers.options import CATEGORIES

KINDS = ("scaled", "unscaled", "softmax", "multihead")


def kind_of(name: str) -> str:
    """The kind a function's name suggests: softmax_cols -> softmax, self_attention -> unscaled, a multi-head ->
    multihead, anything else -> scaled (eq. 12.9)."""
    if "softmax" in name:
        return "softmax"
    if "multihead" in name or "multi_head" in name:
        return "multihead"
    return "unscaled" if name == "self_attention" else "scaled"


def _names_read(code: types.CodeType) -> set[str]:
    """The global names a code object (and the functions and comprehensions nested in it) reads."""
    names = {str(i.argval) for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _names_read(constant)
    return names


@dataclass(frozen=True)
class Module:
    """The source of a module holding a notebook function, and the notebook variables it reads (not run)."""

    source: str
    notebook_globals: tuple[str, ...]


def module_for(function: Callable[..., Any]) -> Module:
    """The function's source with the imports and the notebook-defined functions it uses (recursively)."""
    namespace = function.__globals__
    imports: list[str] = []
    definitions = [textwrap.dedent(inspect.getsource(function))]
    variables: list[str] = []
    seen = {function.__name__}
    pending = [function]
    while pending:
        current = pending.pop()
        for name in sorted(_names_read(current.__code__)):
            if name in seen or name not in namespace:  # a builtin, an attribute's name, or undefined (NameError)
                continue
            seen.add(name)
            value = namespace[name]
            if isinstance(value, types.ModuleType):
                imports.append(f"import {value.__name__}" + (f" as {name}" if value.__name__ != name else ""))
            elif inspect.isfunction(value) and value.__module__ == function.__module__:
                definitions.append(textwrap.dedent(inspect.getsource(value)))
                pending.append(value)
            elif callable(value) and getattr(value, "__module__", None) not in (None, "__main__"):
                qualname = getattr(value, "__qualname__", getattr(value, "__name__", name))
                imports.append(f"from {value.__module__} import {qualname}" + (f" as {name}" if qualname != name
                                                                                 else ""))  # fmt: skip
            else:
                variables.append(name)
    source = "\n".join(["import numpy as np", *dict.fromkeys(imports), "", "", *reversed(definitions)])
    return Module(source, tuple(variables))


def _file_target(function: Callable[..., Any]) -> str | None:
    """path/to/file.py:function for a module-level function of an importable .py file, else None."""
    namespace = getattr(function, "__globals__", {})
    file = namespace.get("__file__")
    qualname = getattr(function, "__qualname__", "")
    if namespace.get("__name__") == "__main__" or not file or "<" in qualname or "." in qualname:
        return None
    path = Path(file)
    return f"{path.resolve()}:{qualname}" if path.suffix == ".py" and path.is_file() else None


@dataclass
class CheckResult:
    """The verdict of check(): PASS or FAIL, one row per law, the counterexamples and diagnoses of the FAILs."""

    function: str
    kind: str
    verdict: str
    state: str
    error: str
    score: float
    laws: list[dict[str, Any]]
    counterexamples: dict[str, Any]  # law -> its shrunk counterexample (as in the JSON report)
    diagnosis: list[str]  # the distinct diagnoses of the FAIL rows
    run: Run = field(repr=False)
    pictures_note: str = field(default="", repr=False)

    @property
    def failed(self) -> list[str]:
        """The laws that FAIL."""
        return [law["law"] for law in self.laws if law["status"] == "FAIL"]

    def __str__(self) -> str:
        lines = [f"{self.function} ({self.kind}): {self.verdict}" + ("" if self.state == "implemented" else
                                                                     f"; {self.state}")]  # fmt: skip
        if self.error:
            lines.append(f"  ERROR  {self.error}")
        for category in CATEGORIES:
            laws = [law for law in self.laws if law["category"] == category]
            if laws:
                counts = {s: sum(law["status"] == s for law in laws) for s in ("PASS", "FAIL", "SKIP")}
                lines.append(f"  {category}: {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP")
            for law in laws:
                if law["status"] == "FAIL":
                    lines.append(f"    FAIL  {law_title(law['law'])}")
                    lines.append(f"          {law['reason']}")
                    if law["diagnosis"]:
                        lines.append(f"          diagnosis: {law['diagnosis']}")
                    example = law["counterexample"]
                    if example and "N" in example:
                        lines.append(f"          counterexample: D={example['D']}, D_q={example['D_q']}, "
                                     f"D_v={example['D_v']}, N={example['N']}")  # fmt: skip
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        style = scoped(STYLE, ".attention-check")
        return f'<div class="attention-check"><style>{style}</style>{run_detail(self.run, self.pictures_note)}</div>'


def scoped(style: str, scope: str) -> str:
    """CSS rules restricted to the elements under `scope` (a notebook page keeps its own look)."""

    def rule(match: re.Match[str]) -> str:
        selectors = [s.strip() for s in match.group(1).split(",")]
        scoped_selectors = [scope if s in ("body", "main") else f"{scope} {s}" for s in selectors]
        return ", ".join(scoped_selectors) + " {" + match.group(2) + "}"

    return re.sub(r"([^{}]+)\{([^{}]*)\}", rule, style)


def check(
    function: Callable[..., Any],
    *,
    kind: str | None = None,
    profile: str = "dev",
    seed: int | None = None,
    only: Iterable[str] | str = (),
    laws: str = "",
    square: bool = False,
    timeout: float | None = None,
    memory_mb: int = 4096,
    convention: str = "notebook",
    layout: str | None = None,
    array: str | None = None,
    dtype: str | None = None,
    strict_conventions: bool = False,
    pictures: int = 3,
) -> CheckResult:
    """Run the laws on `function` (defined in a notebook cell or a file) in an isolated worker process, with
    attention-check's keywords (`kind` from the name when None: softmax_cols -> softmax, self_attention ->
    unscaled, else scaled; `only` categories, `laws` a -k expression, `timeout` seconds); up to `pictures`
    FAIL rows get heatmaps of the returned and the correct matrix."""
    name = getattr(function, "__name__", "")
    if not callable(function) or not name or name == "<lambda>":
        raise TypeError(f"check: function must be a named function defined with def; got {function!r}")
    kind = kind or kind_of(name)
    if kind not in KINDS:
        raise ValueError(f"check: kind must be one of {', '.join(KINDS)}; got {kind!r}")
    categories = tuple(c.strip() for c in (only.split(",") if isinstance(only, str) else only) if c.strip())
    unknown = sorted(set(categories) - set(CATEGORIES))
    if unknown:
        raise ValueError(f"check: only: unknown categories {unknown}; choose from {', '.join(CATEGORIES)}")
    options = Options(
        profile=profile, seed=seed, only=categories, laws=laws, square=square,
        timeout=timeout if timeout is not None else TIMEOUTS[profile], memory_mb=memory_mb, kind=kind,
        convention=convention_arguments(convention, layout=layout, array=array, dtype=dtype),
    )  # fmt: skip
    uncounted: tuple[str, ...] = () if strict_conventions else ("conventions",)
    with tempfile.TemporaryDirectory(prefix="attention-notebook-check-") as scratch:
        target = _file_target(function)
        variables: tuple[str, ...] = ()
        if target is None:
            try:
                module = module_for(function)
            except (OSError, TypeError) as error:
                raise ValueError(f"check: cannot read the source of {name!r} ({error}); define it with def in a "
                                 "cell or a file") from error  # fmt: skip
            path = Path(scratch) / f"{name}_cell.py"
            path.write_text(module.source, encoding="utf-8")
            target, variables = f"{path}:{name}", module.notebook_globals
        if variables:
            state = f"reads a notebook global {', '.join(variables)}"
            graded = Graded(name, error=global_message(variables))
        else:
            with draws_directory(options) as draws_dir:  # a check run again meets its draws again
                graded = grade_one(Job(name, None, target), options, draws_dir=draws_dir)
            state = graded.subjects[0].state if graded.subjects else "not graded"
        subject = graded.subjects[0] if graded.subjects else None
        message = (subject.error if subject else "") or graded.error
        law_rows = [asdict(law) for law in subject.laws] if subject else []
        record: dict[str, Any] = {"file": name, "function": name, "target": target, "kind": kind, "state": state,
                  "error": message, "laws": law_rows}  # fmt: skip
        if subject is None or message or state != "implemented":
            record["verdict"] = "FAIL"
        else:  # PASS, FAIL or NOT CHECKED, as attention-check says (checker/records.py)
            subject.uncounted = tuple(uncounted)
            record["verdict"] = subject.verdict
        run = runs_from_json({"runs": [record]}, uncounted)[0]
        note = ""
        if run.failed and pictures and not options.convention:
            if have_matplotlib():
                add_pictures(run, pictures, memory_mb)
            else:
                note = MISSING_MATPLOTLIB
    return CheckResult(
        function=name, kind=kind, verdict=run.verdict, state=run.state, error=run.error, score=run.score,
        laws=run.laws, counterexamples={law["law"]: law["counterexample"] for law in run.failed},
        diagnosis=run.diagnoses, run=run, pictures_note=note,
    )  # fmt: skip
