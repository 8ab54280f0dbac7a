"""A small class graded once for the report's tests: a correct notebook, the sqrt(D) and the transposed-logits
mistakes and the template, on the few laws that tell them apart (the full battery would take minutes)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from properties.checker.cli import main
from properties.checker.examples import write_notebook

CLASS_KINDS = ("solved", "sqrt_D", "transposed", "template")
CLASS_LAWS = "output_agrees_with_a_50_digit_computation or softmax_columns_are_probability_distributions"


@dataclass(frozen=True)
class GradedClass:
    folder: Path
    data: dict[str, Any]  # the --json report
    csv: Path
    html: Path
    exit_code: int


@pytest.fixture(scope="session")
def graded_class(tmp_path_factory: pytest.TempPathFactory) -> GradedClass:
    """attention-check on a folder of four example notebooks, with --json, --csv and --html."""
    here = tmp_path_factory.mktemp("class")
    folder = here / "class"
    folder.mkdir()
    for kind in CLASS_KINDS:
        write_notebook(folder / f"{kind}.ipynb", kind)
    outputs = {name: here / f"grades.{name}" for name in ("json", "csv", "html")}
    code = main([str(folder), "-k", CLASS_LAWS, "--jobs", "2", "--timeout", "300",
                 *(f"--{name}={path}" for name, path in outputs.items())])  # fmt: skip
    data = json.loads(outputs["json"].read_text())
    return GradedClass(folder, data, outputs["csv"], outputs["html"], code)
