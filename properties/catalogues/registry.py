"""The one registry of laws: what a law is, its category, the known mistakes its meta-tests catch, and the matrix of
keyword options against kinds of mistakes. The catalogue (`attention-check --list`), the plugin's check at
collection, the false-alarm test, the verdict recorder and the benchmarks all read it.

A law module is a top-level test_*.py of properties/ or regression/. A law is a test function of a law module with
exactly one category marker (options.CATEGORIES; its module's pytestmark counts); a test function there that is
not a law is marked `meta` (a meta-test), `benchmark` (a measurement) or `reference` (a check of the bundled
reference); anything else is an error (NotALaw), raised at collection by properties/plugin.py.

Nothing here is kept by hand. The mistakes a law catches are found by running every meta-test with
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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest

from properties.catalogues.mistakes._base import MISTAKES
from properties.helpers.hypothesis_internals import body_of, strategies_of
from properties.helpers.implementations import FunctionUnderTest, Implementation
from properties.helpers.meta import recording
from properties.helpers.options import CATEGORIES

PACKAGES = ("properties", "regression")  # a law module is one of their test_*.py modules
# Markers that make a test function of a law module something other than a law: a meta-test of the battery, a
# measurement (pytest-benchmark), a check of the bundled reference itself (both skipped under --impl).
NOT_LAWS = ("meta", "benchmark", "reference")


class NotALaw(Exception):
    """A test function of a law module that is neither a law (exactly one category marker) nor marked as one of
    NOT_LAWS."""


@dataclass(frozen=True)
class CaughtMistake:
    """A broken implementation a meta-test hands to a law."""

    name: str
    description: str  # the first sentence of its docstring
    options: tuple[str, ...] = ()  # the options it gets wrong (its tag), if it is a mistake in an option
    kind: str = ""  # the kind of mistake (its tag)


@dataclass
class Law:
    """A law of the battery: a test function of a law module with exactly one category marker."""

    name: str
    module: str
    category: str
    statement: str  # the first sentence of its docstring
    function: Callable[..., Any] = field(repr=False, compare=False)
    catches: list[CaughtMistake] = field(default_factory=list)


def first_sentence(text: str | None) -> str:
    """The text up to the first full stop that a capital letter follows ("eq. 12.9" does not end it)."""
    words = " ".join((text or "").split())
    end = re.search(r"\.\s+(?=[A-Z])", words)
    return words if end is None else words[: end.start() + 1]


def is_law_module(name: str) -> bool:
    """Whether the module named `name` is a law module: properties.test_* or regression.test_* (top level)."""
    package, _, module = name.partition(".")
    return package in PACKAGES and module.startswith("test_") and "." not in module


def law_modules() -> Iterator[ModuleType]:
    """Every law module, imported."""
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("test_"):
                yield importlib.import_module(f"{package_name}.{info.name}")


def classify(markers: Iterable[str], where: str) -> str | None:
    """The category of a test function of a law module from the names of its markers (its module's included):
    None if it is marked as one of NOT_LAWS, else its one category. NotALaw (naming `where`) for none or two, or
    for a law marked slow."""
    names = set(markers)
    if names & set(NOT_LAWS):
        return None
    found = [category for category in CATEGORIES if category in names]
    if "slow" in names:  # the default run deselects slow tests: a law marked slow would go unchecked there
        raise NotALaw(f"{where}: a law is never marked slow (the default run deselects slow tests)")
    if len(found) != 1:
        what = "no category marker" if not found else f"{len(found)} category markers ({', '.join(found)})"
        raise NotALaw(
            f"{where}: a test function of a law module has {what}; a law has exactly one of {', '.join(CATEGORIES)}"
            f" (its module's pytestmark counts), anything else is marked {' or '.join(NOT_LAWS)}"
        )
    return found[0]


def marks_of(function: Callable[..., Any], module: ModuleType) -> list[Any]:
    """The pytest marks of a test function, its module's included."""
    marks = list(getattr(function, "pytestmark", []))
    module_marks = getattr(module, "pytestmark", [])
    return marks + (list(module_marks) if isinstance(module_marks, list) else [module_marks])


def category_of(function: Callable[..., Any], module: ModuleType) -> str | None:
    """The category of a test function of a law module (None: not a law); NotALaw if it is neither."""
    return classify((mark.name for mark in marks_of(function, module)), f"{module.__name__}.{function.__name__}")


def category_of_item(item: pytest.Item) -> str | None:
    """The category of a collected test (None: not a law, or not in a law module); NotALaw if it is neither."""
    module = getattr(getattr(item, "module", None), "__name__", "")
    if not is_law_module(module):
        return None
    function = getattr(item, "originalname", item.name)
    return classify((mark.name for mark in item.iter_markers()), f"{module}.{function}")


def test_functions(module: ModuleType) -> list[tuple[str, Callable[..., Any]]]:
    """The test functions a law module defines (not those it imports), by name."""
    return [
        (name, function)
        for name, function in inspect.getmembers(module, inspect.isfunction)
        if name.startswith("test_") and function.__module__ == module.__name__
    ]


def laws() -> list[Law]:
    """Every law of every law module (in module order, by name within a module); NotALaw for a test function that
    is neither a law nor marked as one of NOT_LAWS."""
    found = []
    for module in law_modules():
        for name, function in test_functions(module):
            category = category_of(function, module)
            if category is not None:
                found.append(Law(name, module.__name__, category, first_sentence(function.__doc__), function))
    return found


def meta_tests() -> list[tuple[Callable[..., Any], list[Any]]]:
    """(meta-test, its marks) for every meta-test of a law module that hands a law to assert_law_fails."""
    found = []
    for module in law_modules():
        for _, function in test_functions(module):
            marks = marks_of(function, module)
            if any(mark.name == "meta" for mark in marks) and "assert_law_fails" in function.__code__.co_names:
                found.append((function, marks))
    return found


def parametrizations(function: Callable[..., Any], marks: list[Any] | None = None) -> Iterator[dict[str, Any]]:
    """The keyword arguments of every case of a test function's @pytest.mark.parametrize grids (one empty case
    when it has none)."""
    axes: list[list[dict[str, Any]]] = []
    for mark in getattr(function, "pytestmark", []) if marks is None else marks:
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
        yield {k: v for case in combination for k, v in case.items()}


def fixtures_of(law: Callable[..., Any], parameters: dict[str, Any] | None = None) -> set[str]:
    """The arguments of a law's body that neither hypothesis draws nor `parameters` give: its fixtures."""
    drawn = set(strategies_of(law))
    return set(inspect.signature(body_of(law)).parameters) - drawn - set(parameters or {})


def parameter_sets(function: Callable[..., Any], marks: list[Any]) -> Iterator[dict[str, Any]]:
    """The keyword arguments of every parametrized case of a test function; none if it needs a fixture."""
    for arguments in parametrizations(function, marks):
        if set(inspect.signature(function).parameters) <= set(arguments):
            yield arguments


def mistake_of(value: Any) -> CaughtMistake | None:
    """The mistake a meta-test argument stands for: a broken implementation (named
    properties.catalogues.mistakes:...)."""
    if inspect.isfunction(value) and value.__module__.startswith(f"{MISTAKES}."):
        return CaughtMistake(value.__name__, first_sentence(value.__doc__))  # a plain broken function (an encoding)
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
    return CaughtMistake(
        label,
        first_sentence(function.__doc__),
        tuple(part.strip() for part in tagged.split(",") if part.strip()),
        getattr(function, "mistake", ""),
    )


def catalogue() -> list[Law]:
    """Every law, in category order, with the mistakes its meta-tests catch (each once)."""
    by_name = {law.name: law for law in laws()}
    for function, marks in meta_tests():
        for arguments in parameter_sets(function, marks):
            with recording() as aims:
                function(**arguments)
            for aimed, given in aims:
                entry = by_name.get(aimed.__name__)
                if entry is None:
                    continue
                for value in given.values():
                    mistake = mistake_of(value)
                    if mistake is not None and mistake not in entry.catches:
                        entry.catches.append(mistake)
    return sorted(by_name.values(), key=lambda law: (CATEGORIES.index(law.category), law.module))


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
