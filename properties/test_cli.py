"""The checker's own parts: notebook extraction, verdict tables, reproduction snippets (meta-tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from properties import broken as b
from properties import test_attention_matrix as laws
from properties.checks import LawViolation
from properties.cli import Run, absolute_target, reproduction
from properties.examples import write_notebook
from properties.loading import load_function
from properties.notebook import extract
from properties.problem import AttentionProblem

pytestmark = pytest.mark.meta


def test_extraction_keeps_only_imports_and_the_functions(tmp_path: Path) -> None:
    extraction = extract(write_notebook(tmp_path / "solved.ipynb", "solved"))
    assert extraction.status == dict.fromkeys(extraction.status, "defined")
    assert "plt.plot" not in extraction.source and "RuntimeError" not in extraction.source
    assert "np.random.seed" not in extraction.source and "%matplotlib" not in extraction.source
    assert all(extraction.calls_softmax_cols.values())


def test_extracted_functions_run_without_the_rest_of_the_notebook(tmp_path: Path) -> None:
    source = extract(write_notebook(tmp_path / "solved.ipynb", "solved")).source
    module = tmp_path / "functions.py"
    module.write_text(source.replace("import matplotlib.pyplot as plt", "import not_an_installed_module as plt"))
    function = load_function(f"{module}:scaled_dot_product_self_attention")
    X_prime = function(np.eye(2), np.eye(2), np.eye(2), np.eye(2), *(np.zeros((2, 1)),) * 3)
    assert X_prime.shape == (2, 2)


def test_template_functions_raise_not_implemented(tmp_path: Path) -> None:
    extraction = extract(write_notebook(tmp_path / "template.ipynb", "template"))
    assert extraction.status["self_attention"] == "template"
    assert extraction.status["softmax_cols"] == "defined"
    module = tmp_path / "functions.py"
    module.write_text(extraction.source)
    with pytest.raises(NotImplementedError, match="template"):
        load_function(f"{module}:self_attention")(np.eye(2))


def test_file_targets_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert absolute_target("impl.py:f") == f"{tmp_path / 'impl.py'}:f"
    assert absolute_target("package.module:f") == "package.module:f"


def test_reproduction_snippet_replays_the_shrunk_counterexample() -> None:
    """A snippet built from a falsifying example, printed as hypothesis prints it (with the reprs of
    Implementation and AttentionProblem), runs and fails the law again."""
    implementation = b.broken(b.attentions_transposed_in_output)
    one, zero = np.ones((1, 1)), np.zeros((1, 1))
    problem = AttentionProblem(np.array([[0.0, 1.0]]), one, one, one, zero, zero, zero)
    law = laws.test_output_is_values_times_attentions.hypothesis.inner_test  # type: ignore[attr-defined]
    with pytest.raises(LawViolation):
        law(implementation=implementation, problem=problem)
    example = (
        "Falsifying example: test_output_is_values_times_attentions(\n"
        f"    implementation={implementation!r},\n    problem={problem!r},\n)"
    )
    row = {"law": "test_output_is_values_times_attentions", "module": "properties.test_attention_matrix",
           "details": f"X' must equal V @ attentions: ...\n\n{example}"}  # fmt: skip
    snippet = reproduction(row, Run("implementation", implementation.name, "scaled"))
    with pytest.raises(LawViolation, match="X' must equal V @ attentions"):
        exec(snippet, {})
