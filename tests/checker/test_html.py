"""The class report (attention-check --html), its pictures, and the CSV's score column."""

from __future__ import annotations

import base64
import csv
import re
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from properties.checker import html as report
from properties.checker.grading import score
from properties.checker.html import class_report, law_rates, runs_from_json
from properties.checker.pictures import Comparison, compare, differs, have_matplotlib, heatmaps, problem_arrays
from tests.checker.conftest import GradedClass

pytestmark = pytest.mark.meta
PNG = b"\x89PNG\r\n\x1a\n"


def law(name: str, status: str, category: str = "semantics") -> dict[str, object]:
    return {"law": name, "status": status, "category": category, "diagnosis": None}


def test_score_is_the_fraction_of_counted_laws_passed() -> None:
    laws = [law("a", "PASS"), law("b", "FAIL"), law("c", "SKIP"), law("d", "PASS"), law("e", "FAIL", "conventions")]
    assert score(laws) == pytest.approx(2 / 3)
    assert score(laws, uncounted=()) == pytest.approx(2 / 4)
    assert score([law("c", "SKIP")]) == 0.0 and score([]) == 0.0


@pytest.mark.slow
def test_the_csv_has_a_score_column(graded_class: GradedClass) -> None:
    rows = list(csv.DictReader(graded_class.csv.open()))
    by_run = {(Path(r["file"]).stem, r["function"]): r for r in rows}
    runs = {(Path(r["file"]).stem, r["function"]): r for r in graded_class.data["runs"]}
    assert list(rows[0])[:5] == ["file", "function", "state", "verdict", "score"]
    for key, row in by_run.items():
        assert float(row["score"]) == pytest.approx(score(runs[key]["laws"]), abs=5e-4), key
    assert by_run["solved", "scaled_dot_product_self_attention"]["score"] == "1.000"
    assert by_run["template", "self_attention"]["score"] == "0.000"
    assert float(by_run["sqrt_D", "scaled_dot_product_self_attention"]["score"]) < 1.0


@pytest.mark.slow
def test_the_report_is_one_self_contained_file(graded_class: GradedClass) -> None:
    page = graded_class.html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    for reference in ("http://", "https://", "<script src", "<link", "@import", "url("):
        assert reference not in page, reference
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'<img[^>]* src="([^"]*)"', page))
    assert "<script>" in page and 'class="sortable"' in page  # the sorting script is inline


@pytest.mark.slow
def test_the_report_summarises_the_class(graded_class: GradedClass) -> None:
    page = graded_class.html.read_text(encoding="utf-8")
    assert graded_class.exit_code == 1
    assert re.search(r"4 files in [^,<]*class, 12 functions", page)
    chart = page[page.index('id="diagnoses"') : page.index('id="laws"')]
    for mistake in ("matches attention scaled by 1/sqrt(D) = 1/sqrt(X.shape[0])", "your logits look transposed"):
        assert re.search(re.escape(mistake) + r"</div>.*?<span class=\"count\">1 of 4</span>", chart), mistake
    not_graded = page[page.index('id="not-graded"') : page.index('id="laws"')]
    assert "self_attention: template" in not_graded and "1 of 4" in not_graded
    runs = runs_from_json(graded_class.data)
    rates = law_rates(runs)
    assert rates and all(ran > 0 for _, _, _, ran in rates)
    for name, _, passed, ran in rates:
        title = report.title(name)
        assert re.search(re.escape(title) + r"</td><td>\w+</td><td[^>]*>" + f"{passed} of {ran}<", page), title
    agrees = next(r for r in rates if r[0] == "test_output_agrees_with_a_50_digit_computation")
    assert agrees[2:] == (4, 6)  # scaled and unscaled of three implemented notebooks; sqrt_D and transposed fail


@pytest.mark.slow
def test_every_row_links_to_its_detail(graded_class: GradedClass) -> None:
    page = graded_class.html.read_text(encoding="utf-8")
    runs_table = page[page.index('id="runs"') : page.index('id="details"')]
    links = re.findall(r'<a href="#([^"]+)">', runs_table)
    assert len(links) == len(graded_class.data["runs"]) == 12
    ids = set(re.findall(r' id="([^"]+)"', page))
    assert set(links) <= ids
    sqrt_D = next(r for r in runs_from_json(graded_class.data) if "sqrt_D" in r.file and r.kind == "scaled")
    detail = page[page.index(f'id="{sqrt_D.anchor}"') :].split("</section>")[0]
    assert "diagnosis:</b> matches attention scaled by 1/sqrt(D)" in detail and "counterexample: D=" in detail


@pytest.mark.slow
@pytest.mark.skipif(not have_matplotlib(), reason="matplotlib (the extra 'pictures') is not installed")
def test_failing_functions_get_heatmaps(graded_class: GradedClass) -> None:
    page = graded_class.html.read_text(encoding="utf-8")
    runs = runs_from_json(graded_class.data)
    for run in runs:
        detail = page[page.index(f'id="{run.anchor}"') :].split("</section>")[0]
        images = re.findall(r'<img class="heatmap"[^>]* src="data:image/png;base64,([^"]+)"', detail)
        assert bool(images) == (run.verdict == "FAIL" and run.state == "implemented"), run.file
        assert all(base64.b64decode(image).startswith(PNG) for image in images)
    assert "pictures need matplotlib" not in page


@pytest.mark.slow
def test_without_matplotlib_the_report_says_so(graded_class: GradedClass, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "have_matplotlib", lambda: False)
    page = class_report(graded_class.data)
    assert "<img" not in page and "pictures need matplotlib" in page
    assert page.count('<tr><td><a href="#run-') == 12  # the rest is the same


def test_law_rates_leave_out_functions_stopped_by_an_error() -> None:
    data = {"runs": [
        {"file": "a.ipynb", "function": "f", "verdict": "PASS", "laws": [law("x", "PASS"), law("y", "SKIP")]},
        {"file": "b.ipynb", "function": "f", "verdict": "FAIL", "laws": [law("x", "FAIL")]},
        {"file": "c.ipynb", "function": "f", "verdict": "FAIL", "laws": [law("x", "FAIL")], "error": "MemoryError"},
    ]}  # fmt: skip
    assert law_rates(runs_from_json(data)) == [("x", "semantics", 1, 2)]


def test_problem_arrays_read_the_json_counterexample() -> None:
    example = {"X": [[0.0, 1.0]], "omega_v": [[1.0]], "omega_q": [[2.0]], "omega_k": [[1.0]], "beta_v": [[0.0]],
               "beta_q": [0.5], "beta_k": [[0.0]], "D": 1, "D_q": 1, "D_v": 1, "N": 2}  # fmt: skip
    arrays = problem_arrays(example)
    assert arrays is not None and arrays[0].shape == (1, 2) and arrays[5].shape == (1, 1)
    assert problem_arrays({**example, "N": 0}) is None and problem_arrays({"arguments": {}}) is None


@pytest.mark.skipif(not have_matplotlib(), reason="matplotlib (the extra 'pictures') is not installed")
def test_heatmaps_mark_the_cells_that_differ() -> None:
    correct = np.array([[0.7, 0.2], [0.3, 0.8]])
    transposed = Comparison("attentions", correct.T.copy(), correct)
    assert differs(transposed).tolist() == [[False, True], [True, False]]
    rounding = Comparison("attentions", correct + 1e-15, correct)
    assert not differs(rounding).any()
    assert differs(Comparison("attentions", None, correct, "raised ValueError")).all()
    uri = heatmaps(transposed)
    assert uri is not None and base64.b64decode(uri.removeprefix("data:image/png;base64,")).startswith(PNG)


@pytest.mark.slow
def test_pictures_run_the_function_in_a_limited_worker(tmp_path: Path) -> None:
    source = textwrap.dedent(
        """
        import numpy as np

        def transposed(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k):
            Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
            logits = Q.T @ K / np.sqrt(omega_q.shape[0])
            A = np.exp(logits - logits.max(axis=0))
            A /= A.sum(axis=0)
            return V @ A, A

        def loops(*arrays):
            while True:
                pass
        """
    )
    (tmp_path / "student.py").write_text(source)
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(shape) for shape in [(2, 3), (2, 2), (2, 2), (2, 2), (2, 1), (2, 1), (2, 1)]]
    (comparison,) = compare(f"{tmp_path / 'student.py'}:transposed", "scaled", [arrays])
    assert comparison.name == "attentions" and comparison.returned is not None
    assert differs(comparison).any()
    start = time.monotonic()
    assert compare(f"{tmp_path / 'student.py'}:loops", "scaled", [arrays], timeout=3) == []
    assert time.monotonic() - start < 30
