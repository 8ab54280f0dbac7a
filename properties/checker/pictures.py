"""Pictures of a FAIL: the matrix a function returned on a counterexample beside the bundled reference's.

The function under test runs again on the counterexample's arrays, in its own worker process with the grading
limits (`python -m properties.checker.pictures JOB RESULT`): it may loop or exhaust memory, and the caller (a
report, a notebook's kernel) must survive it. The heatmaps are drawn with matplotlib (the optional extra
`pictures`) as PNG data URIs, so that a report is one self-contained file; without matplotlib `heatmaps`
returns None and the reports say that pictures are missing.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from properties.helpers.problems import ARGUMENT_ORDER

MAX_PICTURED_N = 8  # a picture of an N x N matrix stays readable (and annotated) up to here
PICTURE_TIMEOUT = 60.0  # seconds for one function on its counterexamples (the battery ran it many times faster)
# A cell is marked as different when |returned - correct| > MARK_RELATIVE * (1 + max |correct|). A correct float64
# computation of these small problems (N <= 8, D <= a few) differs from the reference by a few N * eps ~ 1e-15
# of the magnitudes; 1e-9 marks no rounding difference and every real one a reader could see in two digits.
MARK_RELATIVE = 1e-9


def have_matplotlib() -> bool:
    """Whether the optional extra `pictures` (matplotlib) is installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


MISSING_MATPLOTLIB = "pictures need matplotlib (pip install 'attention-properties[pictures]'): this report has none"


@dataclass(frozen=True)
class Comparison:
    """One counterexample: what the function returned and what the bundled reference returns on it."""

    name: str  # "attentions" or "X_prime": the matrix compared
    returned: np.ndarray | None  # None when the function raised or returned another shape
    correct: np.ndarray
    error: str = ""  # what went wrong calling the function, if anything


def problem_arrays(counterexample: Mapping[str, Any]) -> list[np.ndarray] | None:
    """The seven arrays of a counterexample as in the JSON (nested lists); None when it holds no problem that
    can be pictured (no problem, N = 0, or N > MAX_PICTURED_N)."""
    if not counterexample or not all(name in counterexample for name in ARGUMENT_ORDER):
        return None
    N = counterexample.get("N")
    if not isinstance(N, int) or not 1 <= N <= MAX_PICTURED_N:
        return None
    arrays = [np.array(counterexample[name], dtype=np.float64) for name in ARGUMENT_ORDER]
    columns = [name.startswith("beta") and a.ndim == 1 for name, a in zip(ARGUMENT_ORDER, arrays, strict=True)]
    return [a.reshape(-1, 1) if column else a for a, column in zip(arrays, columns, strict=True)]


def _split(output: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(X_prime, attentions) of a function's output: a pair, or X_prime alone."""
    if isinstance(output, tuple | list) and len(output) == 2:
        return np.asarray(output[0], dtype=np.float64), np.asarray(output[1], dtype=np.float64)
    return np.asarray(output, dtype=np.float64), None


def _compare(function: Any, reference: Any, arrays: list[np.ndarray]) -> dict[str, Any]:
    correct_X_prime, correct_attentions = _split(reference(*(a.copy() for a in arrays)))
    assert correct_attentions is not None  # the reference returns both
    try:
        returned_X_prime, returned_attentions = _split(function(*(a.copy() for a in arrays)))
    except Exception as error:
        return {"name": "attentions", "returned": None, "correct": correct_attentions.tolist(),
                "error": f"raised {type(error).__name__}: {error}"}  # fmt: skip
    if returned_attentions is not None and returned_attentions.shape == correct_attentions.shape:
        return {"name": "attentions", "returned": returned_attentions.tolist(), "correct": correct_attentions.tolist()}
    if returned_X_prime.shape == correct_X_prime.shape:
        return {"name": "X_prime", "returned": returned_X_prime.tolist(), "correct": correct_X_prime.tolist()}
    return {"name": "X_prime", "returned": None, "correct": correct_X_prime.tolist(),
            "error": f"returned shape {returned_X_prime.shape}, expected {correct_X_prime.shape}"}  # fmt: skip


def work(job: dict[str, Any], result: Path) -> None:
    """The worker: run the function on each problem of `job` and write the comparisons to `result`."""
    from properties.checker.grading import limit_resources

    limit_resources(job["memory_mb"])
    import attention
    from properties.helpers.loading import load_function

    reference = attention.self_attention if job["kind"] == "unscaled" else attention.scaled_dot_product_self_attention
    function = load_function(job["target"])
    compared = []
    for problem in job["problems"]:
        arrays = [np.array(problem[i], dtype=np.float64) for i in range(len(ARGUMENT_ORDER))]
        compared.append(_compare(function, reference, arrays))
    result.write_text(json.dumps(compared))


def compare(
    target: str, kind: str, problems: Sequence[list[np.ndarray]], timeout: float = PICTURE_TIMEOUT,
    memory_mb: int = 4096,
) -> list[Comparison]:  # fmt: skip
    """Run `target` on each problem in a worker process (time and memory limited) beside the reference;
    [] when the worker fails (a loop, a crash, memory), since a picture is never worth hanging for."""
    if not problems:
        return []
    with tempfile.TemporaryDirectory(prefix="attention-pictures-") as scratch:
        job_file, result = Path(scratch) / "job.json", Path(scratch) / "result.json"
        payload = {"target": target, "kind": kind, "memory_mb": memory_mb,
                   "problems": [[a.tolist() for a in arrays] for arrays in problems]}  # fmt: skip
        job_file.write_text(json.dumps(payload))
        environment = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        try:
            subprocess.run(
                [sys.executable, "-m", "properties.checker.pictures", str(job_file), str(result)],
                cwd=scratch, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL, timeout=timeout, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return []
        if not result.exists():
            return []
        compared = json.loads(result.read_text())
    returned = [None if c["returned"] is None else np.array(c["returned"]) for c in compared]
    return [
        Comparison(c["name"], r, np.array(c["correct"]), c.get("error", ""))
        for c, r in zip(compared, returned, strict=True)
    ]


def differs(comparison: Comparison) -> np.ndarray:
    """The cells where the returned matrix differs from the correct one (beyond MARK_RELATIVE)."""
    if comparison.returned is None:
        return np.ones(comparison.correct.shape, dtype=bool)
    scale = 1.0 + float(np.max(np.abs(comparison.correct), initial=0.0))
    with np.errstate(invalid="ignore"):
        close = np.abs(comparison.returned - comparison.correct) <= MARK_RELATIVE * scale
    return np.asarray(~close, dtype=bool)


def heatmaps(comparison: Comparison) -> str | None:
    """Three heatmaps as one PNG data URI: what the function returned, the reference's, and their difference
    with the differing cells outlined; None without matplotlib."""
    if not have_matplotlib():
        return None
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    correct = comparison.correct
    returned = comparison.returned
    marked = differs(comparison)
    symbol = "attentions" if comparison.name == "attentions" else "X′"
    panels: list[tuple[str, np.ndarray | None, str]] = [
        (f"returned {symbol}", returned, "viridis"),
        (f"correct {symbol} (reference)", correct, "viridis"),
        ("returned − correct", None if returned is None else returned - correct, "coolwarm"),
    ]
    rows, columns = correct.shape
    cell = 0.55
    figure = Figure(figsize=(3 * max(1.8, columns * cell + 0.9), max(1.6, rows * cell + 0.9)), dpi=110)
    finite = [m[np.isfinite(m)] for m in (returned, correct) if m is not None]
    low = min((float(m.min()) for m in finite if m.size), default=0.0)
    high = max((float(m.max()) for m in finite if m.size), default=1.0)
    for index, (title, matrix, colours) in enumerate(panels):
        axes = figure.add_subplot(1, 3, index + 1)
        axes.set_title(title, fontsize=9)
        axes.set_xticks(range(columns))
        axes.set_yticks(range(rows))
        axes.tick_params(labelsize=7)
        if matrix is None:
            axes.text(0.5, 0.5, comparison.error or "nothing returned", ha="center", va="center", fontsize=7,
                      wrap=True, transform=axes.transAxes)  # fmt: skip
            axes.set_xlim(-0.5, columns - 0.5)
            axes.set_ylim(rows - 0.5, -0.5)
            continue
        if colours == "coolwarm":
            # Rounding-sized differences stay white: the scale is the correct matrix's unless a cell is marked.
            scale = 1.0 + float(np.max(np.abs(correct), initial=0.0))
            bound = (float(np.max(np.abs(np.nan_to_num(matrix)), initial=0.0)) if marked.any() else scale) or 1.0
            axes.imshow(np.nan_to_num(matrix), cmap=colours, vmin=-bound, vmax=bound)
        else:
            axes.imshow(np.nan_to_num(matrix), cmap=colours, vmin=low, vmax=high if high > low else low + 1)
        if rows * columns <= 64:
            for (i, j), value in np.ndenumerate(matrix):
                box = {"boxstyle": "round,pad=0.1", "facecolor": "white", "alpha": 0.6, "linewidth": 0}
                axes.text(j, i, f"{value:.2g}", ha="center", va="center", fontsize=7, color="black", bbox=box)
        if index != 1:
            for i, j in zip(*np.nonzero(marked), strict=True):
                axes.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def main(argv: Sequence[str] | None = None) -> None:
    """The worker's entry point: python -m properties.checker.pictures JOB RESULT."""
    job, result = argv if argv is not None else sys.argv[1:]
    work(json.loads(Path(job).read_text()), Path(result))


if __name__ == "__main__":
    main()
