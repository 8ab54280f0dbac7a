"""The catalogue of the battery: every law with its category and the known mistakes its meta-tests catch, and the
matrix of keyword options against kinds of mistakes.

Nothing here is kept by hand. The laws are the test functions of properties/ and regression/ that carry a category
marker; the mistakes a law catches are found by running every meta-test with
`properties.helpers.meta.recording()`, under which assert_law_fails notes the law and the broken implementation it
is given instead of running the law. The option and the kind of each mistake come from its tag in
properties/catalogues/mistakes/ (`mistakes.mistake`).
`attention-check --list` prints `catalogue_text()`.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import pkgutil
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from properties.catalogues.mistakes._base import MISTAKES
from properties.helpers.implementations import FunctionUnderTest, Implementation
from properties.helpers.meta import recording
from properties.helpers.options import CATEGORIES

PACKAGES = ("properties", "regression")


@dataclass(frozen=True)
class Mistake:
    """A broken implementation a meta-test hands to a law."""

    name: str
    description: str  # the first sentence of its docstring
    options: tuple[str, ...] = ()  # the options it gets wrong (its tag), if it is a mistake in an option
    kind: str = ""  # the kind of mistake (its tag)


@dataclass
class Law:
    """A law of the battery: a test function with a category marker."""

    name: str
    module: str
    category: str
    statement: str  # the first sentence of its docstring
    catches: list[Mistake] = field(default_factory=list)


def first_sentence(text: str | None) -> str:
    """The text up to the first full stop that a capital letter follows ("eq. 12.9" does not end it)."""
    words = " ".join((text or "").split())
    end = re.search(r"\.\s+(?=[A-Z])", words)
    return words if end is None else words[: end.start() + 1]


def law_modules() -> Iterator[ModuleType]:
    """Every test module of the battery's packages, imported."""
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("test_"):
                yield importlib.import_module(f"{package_name}.{info.name}")


def marks_of(function: Callable[..., Any], module: ModuleType) -> list[Any]:
    """The pytest marks of a test function, its module's included."""
    marks = list(getattr(function, "pytestmark", []))
    module_marks = getattr(module, "pytestmark", [])
    return marks + (list(module_marks) if isinstance(module_marks, list) else [module_marks])


def parameter_sets(function: Callable[..., Any], marks: list[Any]) -> Iterator[dict[str, Any]]:
    """The keyword arguments of every parametrized case of a test function; none if it needs a fixture."""
    axes: list[list[dict[str, Any]]] = []
    for mark in marks:
        if mark.name != "parametrize":
            continue
        names, values = mark.args[0], mark.args[1]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        cases = []
        for value in values:
            value = getattr(value, "values", value)  # pytest.param(...)
            row = value if len(names) > 1 else (value,)
            cases.append(dict(zip(names, row, strict=True)))
        axes.append(cases)
    for combination in itertools.product(*axes):
        arguments = {k: v for case in combination for k, v in case.items()}
        if set(inspect.signature(function).parameters) <= set(arguments):
            yield arguments


def mistake_of(value: Any) -> Mistake | None:
    """The mistake a meta-test argument stands for: a broken implementation (named
    properties.catalogues.mistakes:...)."""
    if inspect.isfunction(value) and value.__module__.startswith(f"{MISTAKES}."):
        return Mistake(value.__name__, first_sentence(value.__doc__))  # a plain broken function (an encoding)
    if isinstance(value, Implementation | FunctionUnderTest):
        name = value.name if isinstance(value, Implementation) else value.target
    elif isinstance(getattr(value, "name", None), str) and callable(getattr(value, "function", None)):
        name = value.name  # a flash, varlen or merge target (properties/helpers/flash_convention.py)
    else:
        return None
    if not name.startswith(f"{MISTAKES}:"):
        return None  # the reference, handed to a law beside a broken function
    function = value.function
    label = name.removeprefix(f"{MISTAKES}:")
    if isinstance(value, Implementation) and value.kind != "scaled":
        label += f" (checked as {value.kind})"
    tagged = getattr(function, "option", "")
    return Mistake(
        label,
        first_sentence(function.__doc__),
        tuple(part.strip() for part in tagged.split(",") if part.strip()),
        getattr(function, "mistake", ""),
    )


def catalogue() -> list[Law]:
    """Every law, in category order, with the mistakes its meta-tests catch (each once)."""
    laws: dict[str, Law] = {}
    metas: list[tuple[Any, list[Any]]] = []
    for module in law_modules():
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if not name.startswith("test_") or function.__module__ != module.__name__:
                continue
            marks = marks_of(function, module)
            names = {mark.name for mark in marks}
            if "meta" in names:
                if "assert_law_fails" in function.__code__.co_names:
                    metas.append((function, marks))
                continue
            own = {mark.name for mark in getattr(function, "pytestmark", [])}  # before the module's marker
            category = next((c for c in CATEGORIES if c in own), next((c for c in CATEGORIES if c in names), None))
            if category is not None:
                laws[name] = Law(name, module.__name__, category, first_sentence(function.__doc__))
    for function, marks in metas:
        for arguments in parameter_sets(function, marks):
            with recording() as aims:
                function(**arguments)
            for law, given in aims:
                entry = laws.get(law.__name__)
                if entry is None:
                    continue
                for value in given.values():
                    mistake = mistake_of(value)
                    if mistake is not None and mistake not in entry.catches:
                        entry.catches.append(mistake)
    return sorted(laws.values(), key=lambda law: (CATEGORIES.index(law.category), law.module))


def coverage(laws: list[Law]) -> dict[str, dict[str, dict[str, list[str]]]]:
    """option -> kind of mistake -> broken implementation -> the laws that catch it (from the tags)."""
    matrix: dict[str, dict[str, dict[str, list[str]]]] = {}
    for law in laws:
        for mistake in law.catches:
            for option in mistake.options:
                catchers = matrix.setdefault(option, {}).setdefault(mistake.kind, {}).setdefault(mistake.name, [])
                if law.name not in catchers:
                    catchers.append(law.name)
    return matrix


def title(law: str) -> str:
    return law.removeprefix("test_").replace("_", " ")


def catalogue_text() -> str:
    """The catalogue as attention-check --list prints it: laws by category, then the options matrix."""
    laws = catalogue()
    lines: list[str] = []
    for category in CATEGORIES:
        rows = [law for law in laws if law.category == category]
        if not rows:
            continue
        lines.append(f"{category}  ({len(rows)} law{'s' if len(rows) > 1 else ''})")
        for law in rows:
            lines.append(f"  {title(law.name)}  [{law.module}]")
            if law.statement:
                lines.append(f"      {law.statement}")
            caught = ", ".join(mistake.name for mistake in law.catches) or "(no meta-test)"
            lines.append(f"      catches: {caught}")
    lines += ["", "keyword options and multi-head: each known mistake and the laws that catch it"]
    for option, kinds in sorted(coverage(laws).items()):
        lines.append(f"  {option}")
        for kind, mistakes in sorted(kinds.items()):
            for name, catchers in sorted(mistakes.items()):
                lines.append(f"    {kind:<22} {name}: {', '.join(title(c) for c in catchers)}")
    return "\n".join(lines)
