"""One file's laws split between workers (the idle cores' share, grading.grade): each part runs whole laws, the
parts cover every law once, and their verdicts, merged, are those of one whole run in the same order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from properties.checker import grading
from properties.checker.examples import write_notebook
from properties.checker.grading import Graded, Job, LawVerdict, Options, Subject, grade_one, merged
from properties.checker.worker import KeepShard

pytestmark = pytest.mark.meta


@dataclass
class Item:
    """What KeepShard reads of a pytest item: its law's name (a parametrized law has several items)."""

    name: str
    originalname: str


def items_of(laws: dict[str, int]) -> list[Any]:
    return [Item(f"{law}[{i}]", law) for law, params in laws.items() for i in range(params)]


def parts_of(items: list[Any], shards: int) -> list[list[Any]]:
    parts = []
    for shard in range(shards):
        kept, deselected = list(items), list[Any]()
        hook = SimpleNamespace(pytest_deselected=lambda items, out=deselected: out.extend(items))
        KeepShard(shard, shards).pytest_collection_modifyitems(SimpleNamespace(hook=hook), kept)  # type: ignore[arg-type]
        assert len(kept) + len(deselected) == len(items)
        parts.append(kept)
    return parts


@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_parts_are_contiguous_runs_of_whole_laws_of_equal_size(shards: int) -> None:
    items = items_of({f"test_law_{i}": 1 + i % 3 for i in range(10)})
    parts = parts_of(items, shards)
    assert [item for part in parts for item in part] == items  # every item once, in collection order
    laws = [{item.originalname for item in part} for part in parts]
    assert all(not (a & b) for i, a in enumerate(laws) for b in laws[i + 1 :])  # a law's items in one part
    assert max(map(len, laws)) - min(map(len, laws)) <= 1


def verdict(law: str, status: str = "PASS", mistake: str | None = None) -> LawVerdict:
    return LawVerdict(law=law, category="semantics", module="properties.test_x", subject="implementation",
                      status=status, mistake=mistake)  # fmt: skip


def part(*laws: list[LawVerdict], error: str = "") -> Graded:
    softmax, scaled = laws
    return Graded("f.ipynb", error=error, subjects=[
        Subject("softmax_cols", "f.ipynb:softmax_cols", "softmax", laws=softmax, done=True),
        Subject("scaled", "f.ipynb:scaled", "scaled", calls_softmax_cols=True, laws=scaled, done=True),
    ])  # fmt: skip


def test_merged_parts_concatenate_each_functions_laws_and_keep_the_first_error() -> None:
    first = part([verdict("a")], [verdict("b"), verdict("c")])
    second = part([verdict("d")], [verdict("e", "FAIL")], error="did not finish within 1 s")
    graded = merged([first, second])
    assert [[law.law for law in s.laws] for s in graded.subjects] == [["a", "d"], ["b", "c", "e"]]
    assert graded.error == "did not finish within 1 s" and graded.verdict == "FAIL"


def test_the_softmax_overflow_note_reaches_laws_of_the_other_part() -> None:
    overflow = verdict(grading.SOFTMAX_OVERFLOW_LAW, "FAIL")
    graded = merged([part([overflow], []), part([], [verdict("b", "FAIL", mistake="overflow")])])
    assert "softmax_cols" in (graded.subjects[1].laws[0].diagnosis or "")


def test_one_file_on_two_cores_is_split_in_two(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []

    def fake(job: Job, options: Options, shard: int = 0, shards: int = 1, draws_dir: str | None = None) -> Graded:
        assert draws_dir is not None and Path(draws_dir).is_dir()  # the run's shared draws
        calls.append((shard, shards))
        return part([verdict(f"s{shard}")], [])

    monkeypatch.setattr(grading, "grade_one", fake)
    (graded,) = grading.grade([Job("f.ipynb", "f.ipynb", None)], Options(), 2, lambda _: None)
    assert sorted(calls) == [(0, 2), (1, 2)]
    assert [law.law for law in graded.subjects[0].laws] == ["s0", "s1"]
    calls.clear()
    grading.grade([Job("f.ipynb", "f.ipynb", None)] * 2, Options(), 2, lambda _: None)
    assert calls == [(0, 1), (0, 1)]
    calls.clear()
    grading.grade([Job("f.ipynb", "f.ipynb", None)], Options(), 64, lambda _: None)
    assert sorted(calls) == [(shard, grading.MAX_SHARDS) for shard in range(grading.MAX_SHARDS)]


@pytest.mark.slow
def test_two_parts_give_the_verdicts_of_one_whole_run(tmp_path: Path) -> None:
    """On the sqrt(D) notebook (three functions, FAILs with diagnoses, the softmax overflow note)."""
    notebook = write_notebook(tmp_path / "sqrt_D.ipynb", "sqrt_D")
    job = Job(notebook.name, str(notebook), None)
    options = Options(only=("semantics", "robustness"), timeout=600)
    whole = grade_one(job, options)
    halves = merged([grade_one(job, options, shard, 2) for shard in range(2)])
    assert [s.to_json() for s in halves.subjects] == [s.to_json() for s in whole.subjects]
    assert any(law.status == "FAIL" for s in whole.subjects for law in s.laws)
