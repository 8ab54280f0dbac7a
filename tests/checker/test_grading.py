"""The grading worker on a counterexample with large arrays: the fixed N = 1100 problem with a 1100 x 1100 bias
(24 MB of JSON and 19 MB of snippet when inline) is stored compactly, and the worker's own files never count
against the output limit meant for the code under test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from properties.checker.grading import Job, Options, grade_one

pytestmark = pytest.mark.meta

# Correct, except that the bias reaches only the first slab of 1024 queries (a kernel that adds it slab by slab
# and forgets the second): only problems with N > 1024 show it, such as the fixed N = 1100 examples.
SECOND_SLAB_WITHOUT_BIAS = """import numpy as np


def attention(X, omega_v, omega_q, omega_k, beta_v, beta_q, beta_k, *, bias=None):
    Q, K, V = omega_q @ X + beta_q, omega_k @ X + beta_k, omega_v @ X + beta_v
    logits = K.T @ Q / np.sqrt(omega_q.shape[0])
    if bias is not None:
        logits[:, :1024] += np.asarray(bias)[:, :1024]
    A = np.exp(logits - logits.max(axis=0, initial=-np.inf))
    A /= A.sum(axis=0)
    return V @ A, A
"""
LAW = "test_large_logits_keep_outputs_the_values_times_the_softmax_of_the_logits"


@pytest.mark.slow
def test_a_counterexample_of_n_1100_is_stored_compactly_and_replays(tmp_path: Path) -> None:
    (tmp_path / "slabs.py").write_text(SECOND_SLAB_WITHOUT_BIAS)
    arrays = tmp_path / "report-arrays"
    options = Options(laws=LAW, only=("robustness",), timeout=600, arrays_dir=str(arrays))
    graded = grade_one(Job("slabs.py:attention", None, f"{tmp_path / 'slabs.py'}:attention"), options)
    assert not graded.error, graded.error
    (law,) = [law for law in graded.subjects[0].laws if law.law == LAW]
    assert law.status == "FAIL" and law.arrays and Path(law.arrays).parent == arrays
    assert law.counterexample is not None and law.counterexample["N"] == 1100
    assert law.counterexample["arguments"]["case"][1]["bias"]["npz"] == law.arrays  # the bias, by reference
    assert len(json.dumps(law.counterexample)) < 200_000
    assert law.reproduce is not None and len(law.reproduce.splitlines()) < 100 and len(law.reproduce) < 200_000
    stored = np.load(law.arrays)
    assert any(stored[key].shape == (1100, 1100) for key in stored.files)
    (tmp_path / "replay.py").write_text(law.reproduce)
    replay = subprocess.run([sys.executable, "replay.py"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert replay.returncode != 0 and "LawViolation" in replay.stderr, replay.stderr[-2000:]


def test_laws_under_which_the_function_exhausted_memory_are_not_checked() -> None:
    """A MemoryError is the grader's limit, not a law's FAIL, and not the refusal of an empty input that the
    conventions law accepts: those laws become SKIPs, the function errs with "exhausts memory", and the laws it ran
    within the limit keep their verdicts."""
    from properties.checker.grading import score, set_aside_exhausted_memory
    from properties.checker.records import LawVerdict, Subject

    def law(name: str, category: str, status: str, reason: str = "", seen: dict[str, int] | None = None) -> LawVerdict:
        return LawVerdict(name, category, "properties.test_x", "implementation", status=status, reason=reason,
                          seen=seen or {})  # fmt: skip

    subject = Subject("f", "f.py:f", "scaled", laws=[
        law("test_a", "semantics", "FAIL", "f raised MemoryError: Unable to allocate 11.9 GiB"),
        law("test_b", "conventions", "PASS", seen={"raises MemoryError on an empty input": 20}),
        law("test_c", "semantics", "PASS"),
        law("test_d", "golden", "FAIL", "the golden values differ"),
    ])  # fmt: skip
    set_aside_exhausted_memory(subject, 4096)
    assert subject.error == "exhausts memory (limit 4096 MB): MemoryError"
    assert [law.status for law in subject.laws] == ["SKIP", "SKIP", "PASS", "FAIL"]
    assert subject.laws[0].reason == "not checked: the function exhausted the memory limit (4096 MB)"
    assert subject.category("conventions") == "SKIP" and subject.verdict == "FAIL"
    assert score(subject.laws) == 0.5
    untouched = Subject("g", "g.py:g", "scaled", laws=[law("test_a", "semantics", "FAIL", "wrong")])
    set_aside_exhausted_memory(untouched, 4096)
    assert untouched.error == "" and untouched.laws[0].status == "FAIL"


@pytest.mark.slow
def test_a_checked_file_gets_no_bytecode_beside_it_and_the_battery_keeps_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker writes the battery's assertion-rewritten bytecode while pytest collects it (worker.BatteryBytecode)
    and none for the code under test (PYTHONDONTWRITEBYTECODE): no __pycache__ appears in a student's folder."""
    import properties

    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)  # the worker's own setting, not the caller's

    (tmp_path / "mine.py").write_text(SECOND_SLAB_WITHOUT_BIAS)
    options = Options(only=("golden",), timeout=600)
    graded = grade_one(Job("mine.py:attention", None, f"{tmp_path / 'mine.py'}:attention"), options)
    assert not graded.error, graded.error
    assert not (tmp_path / "__pycache__").exists()
    cache = Path(properties.__file__).parent / "__pycache__"
    if cache.exists() and os.access(cache, os.W_OK):
        assert any("pytest" in path.name for path in cache.glob("test_*.pyc"))
