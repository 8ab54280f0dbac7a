"""attention-check --scheduler: the per-file jobs on a Dask cluster (an in-process LocalCluster here; CI also
starts a real `dask scheduler` and two `dask worker` processes), giving the same verdicts as a local run."""

from __future__ import annotations

import json
import re
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from properties.checker.cli import main
from properties.checker.cluster import grade_on_cluster
from properties.checker.examples import write_notebook
from properties.checker.grading import Options, jobs_for
from tests.checker.conftest import CLASS_LAWS, GradedClass

pytestmark = [pytest.mark.meta, pytest.mark.slow]  # subprocesses: run by pytest -m slow (CI)
distributed = pytest.importorskip("dask.distributed", reason="dask.distributed (the extra 'cluster') is not installed")


@pytest.fixture(scope="module")
def scheduler() -> Generator[str, None, None]:
    """A LocalCluster of two single-threaded workers (threads: each job starts its own worker process anyway)."""
    local = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=None
    )
    with local as cluster:
        yield cluster.scheduler_address


def verdicts(data: dict[str, Any]) -> list[tuple[str, str, str, list[tuple[str, str]]]]:
    return [(Path(run["file"]).name, run["function"], run["verdict"],
             sorted((law["law"], law["status"]) for law in run["laws"])) for run in data["runs"]]  # fmt: skip


def test_the_cluster_gives_the_local_verdicts(graded_class: GradedClass, scheduler: str, tmp_path: Path) -> None:
    files = [str(graded_class.folder / name) for name in ("sqrt_D.ipynb", "template.ipynb")]  # a FAIL and no run
    output = tmp_path / "cluster.json"
    code = main([*files, "-k", CLASS_LAWS, "--scheduler", scheduler, f"--json={output}"])
    assert code == 1
    local = [run for run in verdicts(graded_class.data) if run[0] in ("sqrt_D.ipynb", "template.ipynb")]
    assert verdicts(json.loads(output.read_text())) == local and len(local) == 6


def test_a_looping_file_is_stopped_on_the_cluster_and_the_others_graded(scheduler: str, tmp_path: Path) -> None:
    write_notebook(tmp_path / "looping.ipynb", "looping")
    write_notebook(tmp_path / "template.ipynb", "template")
    jobs, _ = jobs_for([str(tmp_path)])
    seen: list[str] = []
    graded = grade_on_cluster(jobs, Options(timeout=15, laws=CLASS_LAWS), scheduler, lambda g: seen.append(g.file))
    assert [Path(g.file).name for g in graded] == ["looping.ipynb", "template.ipynb"]  # the jobs' order
    assert sorted(seen) == sorted(g.file for g in graded)
    looping = next(s for s in graded[0].subjects if s.function == "scaled_dot_product_self_attention")
    assert "did not finish within 15 s" in graded[0].error and looping.verdict == "FAIL"
    assert {s.state for s in graded[1].subjects} == {"implemented", "template"}


def test_an_unreachable_scheduler_is_an_error(tmp_path: Path) -> None:
    jobs, _ = jobs_for([str(write_notebook(tmp_path / "template.ipynb", "template"))])
    with pytest.raises(SystemExit, match=re.escape("cannot reach the Dask scheduler at tcp://127.0.0.1:1")):
        grade_on_cluster(jobs, Options(), "tcp://127.0.0.1:1", connect_timeout=2)
