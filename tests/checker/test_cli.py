"""The checker's own parts: notebook extraction, replay snippets, and one real run of attention-check
(the installed hypothesis and pytest, a folder of notebooks, its CSV and JSON, and a snippet executed)."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from properties import test_attention_matrix as laws
from properties import test_long_sequences as long_laws
from properties import test_sdpa
from properties.catalogues import mistakes as b
from properties.checker.cli import rerun
from properties.checker.examples import notebook as notebook_of
from properties.checker.examples import write_notebook
from properties.checker.grading import (
    SOFTMAX_OVERFLOW_LAW,
    Graded,
    Subject,
    absolute_target,
    jobs_for,
    merged,
    rows,
)
from properties.checker.records import LawVerdict
from properties.checker.report import Draws, counterexample, snippet
from properties.checker.verdicts import describe
from properties.checker.worker import subjects_of_file
from properties.helpers.checks import LawViolation
from properties.helpers.implementations import REFERENCE
from properties.helpers.loading import load_function
from properties.helpers.notebook import extract, global_message
from properties.helpers.problems import AttentionProblem, BatchedProblem
from properties.helpers.row_convention import Convention

pytestmark = pytest.mark.meta
CONTRIBUTING = Path(__file__).resolve().parents[2] / "CONTRIBUTING.md"


def test_extraction_keeps_only_imports_and_the_functions(tmp_path: Path) -> None:
    extraction = extract(write_notebook(tmp_path / "solved.ipynb", "solved"))
    assert extraction.status == dict.fromkeys(extraction.status, "implemented")
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
    notebook = write_notebook(tmp_path / "template.ipynb", "template")
    extraction = extract(notebook)
    assert extraction.status["self_attention"] == "template"
    assert extraction.status["softmax_cols"] == "implemented"
    with pytest.raises(NotImplementedError, match="template"):
        load_function(f"{notebook}:self_attention")(np.eye(2))


def test_the_course_template_is_a_template_not_a_reader_of_globals(tmp_path: Path) -> None:
    """The course's unfilled cells (`# YOUR CODE HERE`, `raise NotImplementedError()`, then `return X_prime,
    attentions`, names a later cell assigns at top level): both functions are `template`, softmax_cols (given)
    is implemented, and nothing says "reads a notebook global"."""
    notebook = write_notebook(tmp_path / "course.ipynb", "course_template")
    extraction = extract(notebook)
    assert extraction.status == {"softmax_cols": "implemented", "self_attention": "template",
                                 "scaled_dot_product_self_attention": "template"}  # fmt: skip
    subjects = {s.function: s for s in subjects_of_file(notebook)}
    assert subjects["self_attention"].error == "still the notebook's template"
    assert "global" not in subjects["scaled_dot_product_self_attention"].error


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("raise NotImplementedError\n  return X", "template"),
        ("'''doc'''\n  pass\n  raise NotImplementedError('write me')", "template"),
        ("if X.size:\n    return X\n  raise NotImplementedError()", "implemented"),
        ("return X\n  print(D)", "implemented"),  # D is read only after the return
        ("Y = X * D\n  return Y", "reads a notebook global D"),
        ("for x in X:\n    continue\n    print(D)\n  return X", "implemented"),
    ],
)
def test_templates_are_recognised_by_behaviour(tmp_path: Path, body: str, status: str) -> None:
    path = tmp_path / "f.py"
    path.write_text(f"import numpy as np\nD = 4\n\ndef self_attention(X, *args):\n  {body}\n")
    assert extract(path).status["self_attention"] == status


def test_a_function_reading_a_notebook_global_is_named(tmp_path: Path) -> None:
    extraction = extract(write_notebook(tmp_path / "global.ipynb", "global_D"))
    assert extraction.status["scaled_dot_product_self_attention"] == "reads a notebook global D"
    assert extraction.status["self_attention"] == "implemented"
    assert global_message(("D",)).startswith("reads the notebook global D, which the checker does not run: use X.shape")


def test_a_function_that_fails_when_defined_raises_on_import(tmp_path: Path) -> None:
    path = tmp_path / "functions.py"
    path.write_text("import numpy as np\n\ndef self_attention(X, scale=np.sqrt(undefined_name)):\n    return X\n")
    subjects = {s.function: s.state for s in subjects_of_file(path)}
    assert subjects["self_attention"].startswith("raises on import: NameError")
    assert subjects["scaled_dot_product_self_attention"] == "missing"


def test_file_targets_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert absolute_target("impl.py:f") == f"{tmp_path / 'impl.py'}:f"
    assert absolute_target("package.module:f") == "package.module:f"


def test_snippet_replays_recorded_arguments_and_raises() -> None:
    """A snippet built from the keyword arguments of a failing call (an Implementation, a problem and
    recorded draws) runs on its own and fails the law again; the counterexample carries the sizes."""
    implementation = b.broken(b.attentions_transposed_in_output)
    one, zero = np.ones((1, 1)), np.zeros((1, 1))
    problem = AttentionProblem(np.array([[0.0, 1.0]]), one, one, one, zero, zero, zero)
    arguments = {"implementation": implementation, "problem": problem}
    code = snippet(laws.test_output_is_values_times_attentions, arguments)
    with pytest.raises(LawViolation, match="X' must equal V @ attentions"):
        exec(code, {})
    example = counterexample(arguments)
    assert (example["D"], example["N"], example["X"]) == (1, 2, [[0.0, 1.0]])
    replay = Draws(values=[3, np.array([1.0, float("inf")])])
    assert "float('inf')" in snippet(laws.test_output_is_values_times_attentions, {"data": replay})


def test_the_recorder_names_arguments_hypothesis_passes_by_position() -> None:
    """hypothesis passes an explicit example's arguments by position to a rerun law's body: the recorded call
    names them all, so that its counterexample and snippet are whole; an unshrunk one says so."""
    from properties.checker.verdicts import Calls, recording

    def body(implementation: object, problem: object) -> None:
        raise LawViolation("broken")

    calls = Calls()
    with pytest.raises(LawViolation):
        recording(body, calls)("the implementation", problem="the problem")
    with pytest.raises(LawViolation):
        recording(body, calls)("the implementation", "the problem")
    assert [call.arguments for call in calls.calls] == [{"implementation": "the implementation",
                                                         "problem": "the problem"}] * 2  # fmt: skip
    law = laws.test_output_is_values_times_attentions
    assert '"""Replays the shrunk counterexample' in snippet(law, {})
    assert "the law's own draws did not meet it" in snippet(law, {}, shrunk=False)


def test_readme_add_a_property_example_is_the_real_code() -> None:
    section = CONTRIBUTING.read_text().split("## Add a property", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    module = re.search(r"\(properties/(\w+)\.py", section)
    assert module is not None, "the section names the module its example comes from"
    assert code in (CONTRIBUTING.parent / "properties" / f"{module.group(1)}.py").read_text()


@pytest.mark.slow
def test_grading_a_folder_reports_counterexamples_diagnoses_and_runnable_snippets(tmp_path: Path) -> None:
    """attention-check on a folder (a sqrt(D) notebook and a template; checkpoints skipped), on the laws matching
    -k doubling: exit 1, a CSV row per function, and for each FAIL a counterexample and a snippet that exits
    non-zero under python."""
    folder = tmp_path / "class"
    folder.mkdir()
    for kind in ("sqrt_D", "template"):
        write_notebook(folder / f"{kind}.ipynb", kind)
    (folder / ".ipynb_checkpoints").mkdir()
    write_notebook(folder / ".ipynb_checkpoints" / "sqrt_D-checkpoint.ipynb", "template")
    command = [sys.executable, "-m", "properties.checker.cli", "class", "--only", "semantics", "-k", "doubling",
               "--jobs", "2", "--csv", "grades.csv", "--json", "grades.json"]  # fmt: skip
    completed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    grades = {(row["file"], row["function"]): row for row in csv.DictReader((tmp_path / "grades.csv").open())}
    assert len(grades) == 6  # three functions of two notebooks; the checkpoint is skipped
    sqrt_d = grades[(str(Path("class") / "sqrt_D.ipynb"), "scaled_dot_product_self_attention")]
    assert sqrt_d["verdict"] == "FAIL" and "1/sqrt(D) = 1/sqrt(X.shape[0])" in sqrt_d["diagnosis"]
    assert grades[(str(Path("class") / "template.ipynb"), "self_attention")]["state"] == "template"
    failures = [law for run in json.loads((tmp_path / "grades.json").read_text())["runs"]
                for law in run["laws"] if law["status"] == "FAIL"]  # fmt: skip
    assert failures and all(law["counterexample"] and law["reproduce"] for law in failures)
    (tmp_path / "replay.py").write_text(failures[0]["reproduce"])
    replay = subprocess.run([sys.executable, "replay.py"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert replay.returncode != 0 and "LawViolation" in replay.stderr, replay.stderr


def test_an_empty_assertion_names_its_file_and_line() -> None:
    try:
        raise AssertionError()  # as a student's bare `assert` raises it (no pytest rewriting there)
    except AssertionError as error:
        message = describe(error)
    assert message.startswith(f"AssertionError at {__file__}:") and "raise AssertionError()" in message


def test_a_conventions_fail_is_shown_but_counted_only_when_strict() -> None:
    """Another convention for a query that sees no key is reported, not counted, unless --strict-conventions."""
    law = LawVerdict("test_a_query_that_sees_no_key_gets_a_zero_column", "conventions", "m", "implementation",
                     status="FAIL")  # fmt: skip
    subject = Subject("f", "m:f", "scaled", laws=[law, LawVerdict("other", "semantics", "m", "implementation",
                                                                  status="PASS")])  # fmt: skip
    assert subject.verdict == "PASS" and subject.category("conventions") == "FAIL"
    subject.uncounted = ()
    assert subject.verdict == "FAIL"


def test_the_courses_softmax_cols_is_recognised_whatever_its_layout(tmp_path: Path) -> None:
    """softmax_cols exactly as notebook 12.1 gives it is `given` (comments, spacing and a docstring aside); one the
    student changed (here: shifted by the column maximum) is theirs."""
    assert extract(write_notebook(tmp_path / "solved.ipynb", "solved")).given == ("softmax_cols",)
    notebook = json.loads((tmp_path / "solved.ipynb").read_text())
    cells = ["".join(cell["source"]) for cell in notebook["cells"]]
    index = next(i for i, cell in enumerate(cells) if cell.startswith("def softmax_cols"))
    respaced = cells[index].replace("  # Sum over columns\n", "").replace("axis = 0", "axis=0")
    shifted = cells[index].replace("np.exp(data_in)", "np.exp(data_in - data_in.max(axis=0))")
    for source, given in ((respaced, ("softmax_cols",)), (shifted, ())):
        cells[index] = source.replace("(data_in):", '(data_in):\n  """Softmax of each column."""', 1)
        (tmp_path / "edited.ipynb").write_text(json.dumps(notebook_of(cells)))
        assert extract(tmp_path / "edited.ipynb").given == given


def test_failures_of_the_courses_softmax_cols_are_shown_not_counted() -> None:
    """The course's softmax_cols overflows; its FAILs and the overflow FAILs of the attention functions that call it
    are attributed to it: shown with the diagnosis, not counted (unless --strict-conventions). The same overflow in
    a softmax_cols the student wrote counts."""
    overflow = LawVerdict(SOFTMAX_OVERFLOW_LAW, "robustness", "m", "softmax", status="FAIL")
    caller = LawVerdict("test_large_logits_give_finite_outputs", "robustness", "m", "implementation", status="FAIL",
                        mistake="notebook_softmax")  # fmt: skip
    passed = LawVerdict("test_other", "semantics", "m", "implementation", status="PASS")
    for given in (True, False):
        subjects = [Subject("softmax_cols", "f:softmax_cols", "softmax", laws=[copy.copy(overflow), copy.copy(passed)],
                            given=given),
                    Subject("scaled", "f:scaled", "scaled", calls_softmax_cols=True,
                            laws=[copy.copy(caller), copy.copy(passed)])]  # fmt: skip
        graded = merged([Graded("f.ipynb", subjects=subjects)])
        assert [s.verdict for s in graded.subjects] == (["PASS", "PASS"] if given else ["FAIL", "FAIL"])
        assert "softmax_cols" in (graded.subjects[1].laws[0].diagnosis or "")
        row = next(r for r in rows([graded]) if r["function"] == "scaled")
        assert ("not counted" in row["diagnosis"]) == given and row["score"] == ("1.000" if given else "0.500")
        for subject in graded.subjects:
            subject.uncounted = ()
        assert [s.verdict for s in graded.subjects] == ["FAIL", "FAIL"]


def test_a_folder_gives_its_notebooks_and_the_py_files_that_define_a_notebook_function(tmp_path: Path) -> None:
    write_notebook(tmp_path / "a.ipynb", "solved")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("import numpy as np\n\n\ndef  softmax_cols (x):\n    return x\n")
    (tmp_path / "helpers.py").write_text("def softmax(x):\n    return x\n")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    write_notebook(tmp_path / ".ipynb_checkpoints" / "a-checkpoint.ipynb", "solved")
    jobs, unknown = jobs_for([str(tmp_path)])
    assert [Path(job.file).relative_to(tmp_path) for job in jobs] == [Path("a.ipynb"), Path("sub/b.py")]
    assert not unknown


def test_a_snippet_replays_a_law_that_has_explicit_examples() -> None:
    """A law with its own @example cases replays one counterexample: it raises on the broken implementation
    and passes once the implementation is correct."""
    law = long_laws.test_long_sequences_attention_columns_are_probability_distributions
    one, zero = np.ones((1, 1)), np.zeros((1, 1))
    problem = AttentionProblem(np.array([[0.0, 1.0, 3.0]]), one, one, one, zero, zero, zero)
    with pytest.raises(LawViolation):
        exec(snippet(law, {"implementation": b.broken(b.softmax_over_rows), "problem": problem}), {})
    exec(snippet(law, {"implementation": REFERENCE["scaled"], "problem": problem}), {})


@pytest.mark.meta
def test_reproduction_snippet_replays_a_row_convention_counterexample() -> None:
    """attention-check's snippet rebuilds the kernel (SdpaImplementation, its Convention) and the BatchedProblem
    from their reprs, and fails the law again; its rerun command carries --convention sdpa."""
    kernel = b.broken_kernel(b.kernel_keys_of_first_batch_element, Convention(dtype="float32"))
    one, zero = np.ones((1, 1)), np.zeros((1, 1))
    slots = tuple((AttentionProblem(np.array([[float(i), 1.0]]), one, one, one, zero, zero, zero),) for i in (1, 3))
    law = test_sdpa.test_every_batch_element_and_head_is_attention_over_its_own_rows
    code = snippet(law, {"kernel": kernel, "problem": BatchedProblem(slots)})
    with pytest.raises(LawViolation, match=r"out\[1, 0\]"):
        exec(code, {})
    row = LawVerdict(law.__name__, "semantics", law.__module__, "kernel")
    command = rerun(row, Subject("kernel", kernel.name, "scaled"), ("--convention", "sdpa", "--dtype=float32"))
    assert command.endswith("--convention sdpa --dtype=float32")


def test_nothing_checked_is_not_a_pass() -> None:
    """A function whose counted laws all skipped is NOT CHECKED, with the skip reasons aggregated; a conventions
    PASS alone does not make a PASS; any counted PASS does, and any counted FAIL fails."""

    def law(name: str, status: str, category: str = "semantics", reason: str = "") -> LawVerdict:
        return LawVerdict(name, category, "m", "implementation", status=status, reason=reason)

    skipped = [law("a", "SKIP", reason="needs mask="), law("b", "SKIP", reason="needs mask="),
               law("c", "SKIP", reason="needs the attentions")]  # fmt: skip
    subject = Subject("f", "m:f", "scaled", laws=skipped)
    assert subject.verdict == "NOT CHECKED"
    assert subject.not_checked == "every selected law skipped: needs mask= (2 laws); needs the attentions (1 law)"
    subject.laws.append(law("d", "PASS", "conventions"))
    assert subject.verdict == "NOT CHECKED" and subject.not_checked
    subject.uncounted = ()
    assert subject.verdict == "PASS" and not subject.not_checked
    assert Subject("f", "m:f", "scaled").verdict == "NOT CHECKED"
    assert Subject("f", "m:f", "scaled", laws=[*skipped, law("e", "FAIL")]).verdict == "FAIL"
    assert Subject.from_json(subject.to_json()) == subject


WRONG_AXIS = """import numpy as np


def scaled_dot_product_self_attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k):
    Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
    logits = K.T @ Q / np.sqrt(omega_q.shape[0])
    A = np.exp(logits - logits.max(axis=1, keepdims=True))
    return V @ (A / A.sum(axis=1, keepdims=True))
"""


@pytest.mark.slow
def test_a_selection_that_checks_nothing_exits_3_not_checked(tmp_path: Path) -> None:
    """--only conventions on a function without mask=: NOT CHECKED in the table, the CSV and the JSON, with the
    reason, and exit code 3 (not 0, not FAIL's 1)."""
    (tmp_path / "wrong_axis.py").write_text(WRONG_AXIS)
    command = [sys.executable, "-m", "properties.checker.cli", "wrong_axis.py:scaled_dot_product_self_attention",
               "--only", "conventions", "--csv", "grades.csv", "--json", "grades.json"]  # fmt: skip
    completed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 3, completed.stdout + completed.stderr
    assert "attention-check: NOT CHECKED (no counted law was selected" in completed.stdout
    (row,) = csv.DictReader((tmp_path / "grades.csv").open())
    assert row["verdict"] == "NOT CHECKED" and "takes no keyword argument(s) mask" in row["not_checked"]
    report = json.loads((tmp_path / "grades.json").read_text())
    assert report["verdict"] == report["runs"][0]["verdict"] == "NOT CHECKED" and report["schema"] == 3


@pytest.mark.slow
def test_plain_pytest_says_when_every_law_skipped(tmp_path: Path) -> None:
    """Under plain pytest, a run whose laws all skipped says NOT CHECKED in its summary."""
    (tmp_path / "wrong_axis.py").write_text(WRONG_AXIS)
    target = f"{tmp_path / 'wrong_axis.py'}:scaled_dot_product_self_attention"
    command = [sys.executable, "-m", "pytest", "--pyargs", "properties.test_conventions", "-p", "properties.plugin",
               "-p", "no:cacheprovider", "-k", "sees_no_key", "--impl", target]  # fmt: skip
    completed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert "attention-properties: NOT CHECKED" in completed.stdout, completed.stdout
    assert "every one of the 1 laws selected skipped" in completed.stdout


@pytest.mark.slow
def test_the_rerun_command_of_a_gradient_law_carries_the_backward_and_fails_again() -> None:
    """A gradient FAIL's rerun command names the backward (--backward TARGET, or --gradients), without which the
    backward fixture skips; run as printed, it fails the law again. Other laws' commands do not carry it."""
    from properties.checker.grading import backward_arguments

    backward = backward_arguments("properties.catalogues.mistakes:backward_without_the_rowsum_term", False, False,
                                  ("--convention", "sdpa"))  # fmt: skip
    subject = Subject("kernel", "attention.rows:scaled_dot_product_attention", "scaled")
    row = LawVerdict("test_the_key_gradients_sum_to_zero", "gradients", "properties.test_gradients", "backward")
    command = rerun(row, subject, ("--convention", "sdpa"), backward)
    assert command.endswith("--backward 'properties.catalogues.mistakes:backward_without_the_rowsum_term'")
    assert "--backward" not in rerun(
        dataclasses.replace(row, category="semantics"), subject, ("--convention", "sdpa"), backward
    )
    assert backward_arguments(None, True, False, ()) == ["--gradients"]
    assert backward_arguments(None, False, True, ()) == [
        "--backward",
        "attention:scaled_dot_product_self_attention_vjp",
    ]
    arguments = [a.strip("'") for a in command.split()[1:]]
    ran = subprocess.run([sys.executable, "-m", "pytest", *arguments, "-q", "-p", "no:cacheprovider"],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert ran.returncode == 1 and "sum over keys of d_key" in ran.stdout, ran.stdout[-2000:]


COURSE_TEMPLATE = '''import numpy as np


def scaled_dot_product_self_attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k):
    """The course's cell, unfilled."""
    # YOUR CODE HERE
    raise NotImplementedError()
    return X_prime, attentions


def old_template(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k):
    X_prime = np.zeros_like(X)
    return X_prime


def started(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k):
    if X.shape[1] == 0:
        raise NotImplementedError("empty inputs")
    return omega_v @ X + beta_v
'''


@pytest.mark.parametrize(
    ("function", "state"),
    [("scaled_dot_product_self_attention", "template"), ("old_template", "template"), ("started", "implemented")],
)
def test_a_template_given_as_file_function_is_a_template(tmp_path: Path, function: str, state: str) -> None:
    """file.py:function is judged as the same function in a notebook or a file given whole: a body that raises
    NotImplementedError before any return (or the older zeros_like form) is a template, no run of the battery;
    a function that raises only on some inputs is implemented."""
    from properties.checker.records import WorkerJob
    from properties.checker.worker import subjects_of_target

    (tmp_path / "course.py").write_text(COURSE_TEMPLATE)
    target = f"{tmp_path / 'course.py'}:{function}"
    (subject,) = subjects_of_target(WorkerJob(target, None, target))
    assert subject.state == state
    assert (subject.error == "still the notebook's template") == (state == "template")


def test_a_rows_counterexample_is_summarised_by_the_shapes_of_q_k_v() -> None:
    """A FAIL of the flash or row convention prints the shapes of its problem's q, k, v (inline or in an .npz)."""
    from properties.checker.cli import rows_of

    problem = {"q": np.zeros((1, 2, 1, 3)).tolist(), "k": {"npz": "a.npz", "key": "k", "shape": [1, 1100, 1, 3]},
               "v": np.zeros((1, 1100, 1, 2)).tolist(), "B": 1}  # fmt: skip
    example = {"arguments": {"case": [problem, [0, 1]]}}
    assert rows_of(example) == {"q": [1, 2, 1, 3], "k": [1, 1100, 1, 3], "v": [1, 1100, 1, 2]}
    assert rows_of({"arguments": {"case": [{"X": [[1.0]]}, 3]}}) is None
