"""Grade the example class locally and on a real Dask cluster on localhost (called by .ci/run).

Starts `dask scheduler` on 127.0.0.1 at a free port and two `dask worker` processes (one thread each), grades
the class of properties/checker/examples.py through `attention-check --scheduler` (run as `python -m
properties.checker.cli`: the checker of this interpreter, whatever script is on PATH), checks that its CSV gives the
verdicts of the local run, prints both times and throughputs (files per core-minute), and stops the processes.
Usage: python .ci/cluster.py [--copies N] [KIND ...]  (default: every example kind, once).
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from properties.checker.examples import KINDS, write_notebook

ARGUMENTS = ["--only", "semantics,golden", "--timeout", "60"]  # as .ci/end_to_end.py grades the class


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(port: int, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    sys.exit(f"the dask scheduler did not listen on 127.0.0.1:{port} within {seconds:.0f} s")


def grade(folder: Path, out: Path, extra: list[str]) -> tuple[float, list[dict[str, str]]]:
    start = time.monotonic()
    command = [sys.executable, "-m", "properties.checker.cli", str(folder), *ARGUMENTS, "--csv", str(out), *extra]
    completed = subprocess.run(command,
                               capture_output=True, text=True, check=False)  # fmt: skip
    elapsed = time.monotonic() - start
    if completed.returncode not in (0, 1) or not out.exists():
        sys.exit(f"attention-check {' '.join(extra)} exited {completed.returncode}:\n{completed.stdout[-3000:]}"
                 f"\n{completed.stderr[-3000:]}")  # fmt: skip
    return elapsed, list(csv.DictReader(out.open()))


def main() -> None:
    arguments = sys.argv[1:]
    copies = 1
    if arguments[:1] == ["--copies"]:
        copies, arguments = int(arguments[1]), arguments[2:]
    kinds = (arguments or list(KINDS)) * copies
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as scratch:
        here = Path(scratch)
        folder = here / "class"
        folder.mkdir()
        for index, kind in enumerate(kinds):
            write_notebook(folder / (f"{kind}.ipynb" if copies == 1 else f"{kind}_{index}.ipynb"), kind)
        local_time, local = grade(folder, here / "local.csv", ["--jobs", str(cores)])
        port = free_port()
        processes: list[subprocess.Popen[bytes]] = []
        log = (here / "dask.log").open("wb")
        try:
            processes.append(subprocess.Popen(["dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                               "--no-dashboard"], stdout=log, stderr=log))  # fmt: skip
            wait_for(port)
            address = f"tcp://127.0.0.1:{port}"
            for _ in range(2):
                processes.append(subprocess.Popen(["dask", "worker", address, "--nthreads", "1", "--host",
                                                   "127.0.0.1", "--no-dashboard"], stdout=log, stderr=log))  # fmt: skip
            time.sleep(3)  # the workers register
            cluster_time, cluster = grade(folder, here / "cluster.csv", ["--scheduler", address])
        finally:
            for process in reversed(processes):
                process.send_signal(signal.SIGINT)
            for process in reversed(processes):
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            log.close()

        def verdicts(rows: list[dict[str, str]]) -> list[tuple[str, ...]]:
            return [(r["file"], r["function"], r["state"], r["verdict"], r["score"], r["failed_laws"]) for r in rows]

        if verdicts(local) != verdicts(cluster):
            print((here / "dask.log").read_text()[-3000:])
            sys.exit(f"the cluster's CSV differs from the local run's:\n{verdicts(local)}\n{verdicts(cluster)}")
        files = len(kinds)
        for name, seconds in (("local", local_time), ("dask (scheduler + 2 workers, 1 thread each)", cluster_time)):
            rate = files / (seconds / 60 * cores)
            print(f"  {name}: {files} files in {seconds:.1f} s on {cores} cores: {rate:.2f} files per core-minute")
        print(f"  ok: the cluster's CSV ({len(cluster)} rows) gives the local run's verdicts and scores")


if __name__ == "__main__":
    main()
