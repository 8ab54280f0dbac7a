"""check(): a function from a notebook cell (exec'd source registered in linecache, as IPython does) or from a
file, graded in an isolated worker; its verdict, fields, text and HTML."""

from __future__ import annotations

import importlib.util
import linecache
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from properties.checker.notebook_check import check, kind_of, module_for
from properties.checker.pictures import have_matplotlib

pytestmark = pytest.mark.meta
LAWS = "output_agrees_with_a_50_digit_computation or doubling_the_query_key_dimension_scales_the_logits_as"
ROOT = Path(__file__).resolve().parents[2]

CELL = """
def softmax_cols(data_in):
    exp_values = np.exp(data_in - data_in.max(axis=0))
    return exp_values / exp_values.sum(axis=0)

def scaled_dot_product_self_attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k):
    queries = omega_q @ X + beta_q
    keys = omega_k @ X + beta_k
    values = omega_v @ X + beta_v
    attentions = softmax_cols(keys.T @ queries / np.sqrt({scale}))
    return values @ attentions, attentions
"""
SQRT_D_Q, SQRT_D = "omega_q.shape[0]", "X.shape[0]"


def cell_function(tmp_name: str, source: str, name: str, **namespace: Any) -> Callable[..., Any]:
    """Define the functions of `source` as a Jupyter cell does: compiled under a pseudo-file whose lines are
    in linecache (so inspect.getsource finds them), executed in the notebook's namespace (__main__)."""
    filename = f"<ipython-input-{tmp_name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    scope: dict[str, Any] = {"__name__": "__main__", "np": np, **namespace}
    exec(compile(source, filename, "exec"), scope)
    return scope[name]  # type: ignore[no-any-return]


def test_a_cell_function_is_written_with_its_imports_and_helpers() -> None:
    function = cell_function("1", CELL.format(scale=SQRT_D_Q), "scaled_dot_product_self_attention")
    module = module_for(function)
    assert "import numpy as np" in module.source and "def softmax_cols" in module.source
    assert module.notebook_globals == ()
    reading = cell_function("2", "def f(X):\n    return X / D\n", "f", D=4)
    assert module_for(reading).notebook_globals == ("D",)
    assert kind_of("softmax_cols") == "softmax" and kind_of("self_attention") == "unscaled"
    assert kind_of("my_attention") == "scaled"


@pytest.mark.slow
def test_a_correct_cell_function_passes() -> None:
    function = cell_function("3", CELL.format(scale=SQRT_D_Q), "scaled_dot_product_self_attention")
    result = check(function, laws=LAWS)
    assert result.verdict == "PASS", str(result)
    assert result.failed == [] and result.counterexamples == {} and result.diagnosis == []
    assert {law["status"] for law in result.laws} == {"PASS"} and len(result.laws) == 2
    assert result.score == 1.0
    assert "PASS" in str(result) and "PASS" in result._repr_html_()


@pytest.mark.slow
def test_a_broken_cell_function_fails_with_its_diagnosis_and_pictures() -> None:
    function = cell_function("4", CELL.format(scale=SQRT_D), "scaled_dot_product_self_attention")
    result = check(function, laws=LAWS)
    assert result.verdict == "FAIL"
    assert set(result.failed) == set(result.counterexamples) and len(result.failed) == 2
    assert result.diagnosis and result.diagnosis[0].startswith("matches attention scaled by 1/sqrt(D)")
    assert all(example["N"] >= 1 for example in result.counterexamples.values())
    text = str(result)
    assert "FAIL  output agrees with a 50 digit computation" in text and "diagnosis: matches" in text
    page = result._repr_html_()
    assert "diagnosis:</b> matches attention scaled by 1/sqrt(D)" in page and "counterexample: D=" in page
    assert "<script" not in page and "http" not in page and ".attention-check " in page  # scoped style
    if have_matplotlib():
        assert '<img class="heatmap"' in page and 'src="data:image/png;base64,' in page
    else:
        assert "pictures need matplotlib" in page


@pytest.mark.slow
def test_a_function_from_a_file_is_graded_from_its_file(tmp_path: Path) -> None:
    (tmp_path / "student_attention.py").write_text(
        "import numpy as np\n" + textwrap.dedent(CELL.format(scale=SQRT_D_Q)).replace("scaled_dot", "my_scaled_dot")
    )
    spec = importlib.util.spec_from_file_location("student_attention", tmp_path / "student_attention.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = check(module.my_scaled_dot_product_self_attention, laws=LAWS)
    assert result.verdict == "PASS" and result.kind == "scaled", str(result)
    assert str(tmp_path / "student_attention.py") in result.run.target


def test_a_notebook_global_costs_a_row_and_no_run() -> None:
    function = cell_function("5", CELL.format(scale="D"), "scaled_dot_product_self_attention", D=4)
    result = check(function)
    assert result.verdict == "FAIL" and result.state == "reads a notebook global D" and result.laws == []
    assert "use X.shape" in result.error


@pytest.mark.slow
def test_a_function_that_never_returns_is_stopped_by_the_time_limit() -> None:
    function = cell_function("6", "def scaled_dot_product_self_attention(X, *arrays):\n    while True:\n"
                             "        pass\n", "scaled_dot_product_self_attention")  # fmt: skip
    start = time.monotonic()
    result = check(function, timeout=4, laws=LAWS)
    assert time.monotonic() - start < 60
    assert result.verdict == "FAIL" and "did not finish within 4 s" in result.error


def test_the_arguments_are_checked() -> None:
    function = cell_function("7", CELL.format(scale=SQRT_D_Q), "scaled_dot_product_self_attention")
    with pytest.raises(ValueError, match="only: unknown categories"):
        check(function, only="semantics,style")
    with pytest.raises(ValueError, match="kind must be one of"):
        check(function, kind="rows")
    with pytest.raises(TypeError, match="named function"):
        check(lambda X: X)


def test_check_is_exported_lazily() -> None:
    code = (
        "import sys, properties; loaded = [m for m in sys.modules if m.startswith('properties.checker')]; "
        "from properties import check; from properties.checker.notebook_check import check as c; "
        "print(loaded, check is c)"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[] True"
    import properties

    with pytest.raises(AttributeError, match="no attribute 'chek'"):
        _ = properties.chek
