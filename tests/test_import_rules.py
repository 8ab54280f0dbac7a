"""The import rules of the layout (issue 19), read from the source with ast:

- a law module (properties/test_*.py) imports no other law module, nothing of the checker, not the plugin;
- the plugin, the helpers and the catalogues import nothing of the checker (checked transitively too: importing
  properties.plugin in a fresh interpreter loads no properties.checker module);
- the reference (attention/) imports nothing of properties/ or regression/;
- the command line (attention-check's parent process) loads neither pytest nor hypothesis.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAWS_FORBIDDEN = ("properties.test_", "properties.checker", "properties.plugin")
TOOLS_FORBIDDEN = ("properties.checker",)
REFERENCE_FORBIDDEN = ("properties", "regression")


def imported_modules(source: str, package: str = "") -> list[str]:
    """Every module a source imports, absolute (`from properties import test_x` gives properties.test_x)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def violations(source: str, forbidden: tuple[str, ...], package: str = "") -> list[str]:
    """The imports of `source` that are, or lie under, a forbidden module."""
    return [
        name
        for name in imported_modules(source, package)
        if any(name == bad or name.startswith(bad if bad.endswith("_") else f"{bad}.") for bad in forbidden)
    ]


def modules(pattern: str, folder: str) -> list[Path]:
    return sorted((ROOT / folder).glob(pattern))


def package_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])


@pytest.mark.parametrize("path", modules("test_*.py", "properties"), ids=lambda p: p.name)
def test_law_modules_import_no_law_module_checker_or_plugin(path: Path) -> None:
    assert violations(path.read_text(), LAWS_FORBIDDEN, package_of(path)) == []


TOOL_MODULES = [
    ROOT / "properties" / "plugin.py",
    *modules("**/*.py", "properties/helpers"),
    *modules("**/*.py", "properties/catalogues"),
]


@pytest.mark.parametrize("path", TOOL_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_plugin_helpers_and_catalogues_import_nothing_of_the_checker(path: Path) -> None:
    assert violations(path.read_text(), TOOLS_FORBIDDEN, package_of(path)) == []


@pytest.mark.slow
def test_importing_the_plugin_loads_no_checker_module() -> None:
    code = "import sys, properties.plugin; print(sorted(m for m in sys.modules if m.startswith('properties.checker')))"
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    assert completed.stdout.strip() == "[]", completed.stdout


@pytest.mark.slow
def test_the_command_line_loads_neither_pytest_nor_hypothesis() -> None:
    """attention-check's parent only starts workers and prints their results: pytest and hypothesis (half a
    second of imports) are the workers' (properties/checker/worker.py)."""
    code = "import sys, properties.checker.cli; print(sorted({m.split('.')[0] for m in sys.modules} & {'pytest', "
    code += "'_pytest', 'hypothesis'}))"
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    assert completed.stdout.strip() == "[]", completed.stdout


@pytest.mark.parametrize("path", modules("**/*.py", "attention"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_reference_imports_nothing_of_the_battery(path: Path) -> None:
    assert violations(path.read_text(), REFERENCE_FORBIDDEN, package_of(path)) == []


@pytest.mark.meta
@pytest.mark.parametrize(
    ("source", "forbidden", "expected"),
    [
        ("from properties import test_masks as masks\n", LAWS_FORBIDDEN, "properties.test_masks"),
        ("from properties.checker.cli import rerun\n", LAWS_FORBIDDEN, "properties.checker.cli"),
        ("import properties.plugin\n", LAWS_FORBIDDEN, "properties.plugin"),
        ("from .checker import grading\n", TOOLS_FORBIDDEN, "properties.checker"),
        ("import properties.helpers.checks\n", REFERENCE_FORBIDDEN, "properties.helpers.checks"),
    ],
)
def test_the_import_rules_flag_a_bad_import(source: str, forbidden: tuple[str, ...], expected: str) -> None:
    """Meta-test: a synthetic source with a forbidden import is flagged; an allowed one is not."""
    assert expected in violations(source, forbidden, "properties")
    assert violations("from properties.helpers.checks import assert_close\n", LAWS_FORBIDDEN, "properties") == []
