"""Grading on a Dask cluster: `attention-check PATHS --scheduler ADDRESS`.

Each file's job is `grading.grade_one`, the very function the local pool calls, submitted to a
`dask.distributed` Client: on the Dask worker it still starts the file's own worker process with the time,
memory and output limits, so a looping or crashing submission costs its own row and never a Dask worker. The
results come back as the same `Graded` records, in the order of the jobs, for the same CSV, JSON and report.
Files are read by path on the Dask workers: the cluster must see the same file system (or a shared folder).
dask is the optional extra `cluster`; dask-jobqueue's SLURMCluster or PBSCluster give a scheduler address too.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from properties.checker.grading import Graded, Job, Options, grade_one

NEEDS_DASK = "attention-check: --scheduler needs dask.distributed: pip install 'attention-properties[cluster]'"


def grade_on_cluster(
    jobs: Sequence[Job],
    options: Options,
    address: str | Any,
    progress: Callable[[Graded], None] = lambda graded: None,
    connect_timeout: float = 30.0,
) -> list[Graded]:
    """Grade every job on the Dask cluster at `address` (a scheduler address, or a Client / LocalCluster);
    `progress` is called as each finishes. A job the cluster loses (its Dask worker died twice) is reported in
    its row as an error, like a crash of a local worker."""
    try:  # imported as Any: dask.distributed is untyped, and absent without the extra
        distributed: Any = importlib.import_module("dask.distributed")
    except ImportError as error:
        raise SystemExit(NEEDS_DASK) from error
    own = not isinstance(address, distributed.Client)
    try:
        client: Any = distributed.Client(address, timeout=connect_timeout) if own else address
    except OSError as error:  # includes TimeoutError: nothing listens there, or not a Dask scheduler
        raise SystemExit(f"attention-check: cannot reach the Dask scheduler at {address}: {error}") from error
    try:
        run = uuid.uuid4().hex[:8]
        futures = [
            client.submit(grade_one, job, options, key=f"attention-check-{run}-{index}", pure=False, retries=1)
            for index, job in enumerate(jobs)
        ]
        position = {future.key: index for index, future in enumerate(futures)}
        graded: list[Graded | None] = [None] * len(jobs)
        for future in distributed.as_completed(futures):
            index = position[future.key]
            try:
                result: Graded = future.result()
            except Exception as error:  # the Dask worker died or the task could not run there
                result = Graded(jobs[index].file, error=f"the Dask cluster lost this job: {type(error).__name__}: "
                                f"{error}")  # fmt: skip
            graded[index] = result
            progress(result)
        return [g for g in graded if g is not None]
    finally:
        if own:
            client.close()
