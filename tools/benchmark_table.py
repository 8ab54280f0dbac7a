"""The benchmark table of docs/benchmarks.md from one run's JSON (pytest-benchmark's --benchmark-json):

    pytest regression --benchmark-only -k "test_benchmark_attention or test_benchmark_exp" --benchmark-json=run.json
    python tools/benchmark_table.py run.json --load "$(cut -d' ' -f1-3 /proc/loadavg)"

One markdown row per timing group (dtype, N): the floor, the limit (floor + exp) and the FLOP floor in ms, then
each implementation's median over the limit and over the FLOP floor; above it one line naming the run's date,
machine, BLAS (name, version, threads) and measured rates. No dependency beyond the standard library.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

IMPLEMENTATIONS = ("full", "blockwise", "naive", "impl")


def table(run: dict[str, Any], load: str) -> list[str]:
    """The header line and the markdown table of one run."""
    groups: dict[str, dict[str, Any]] = {}
    for bench in run["benchmarks"]:
        info = bench["extra_info"]
        if "flop_floor_ms" not in info:
            continue
        row = groups.setdefault(bench["group"], {"dtype": info["dtype"], "N": info["N"], "medians": {}})
        row["flop"] = info["flop_floor_ms"] / 1e3
        name = "exp" if info["implementation"] == "exp" else bench["params"]["name"]
        row["medians"][name] = bench["stats"]["median"]
    machine, blas = run["machine_info"], run["machine_info"].get("blas", {})
    threads = blas.get("threads") or "the BLAS's default"
    rates = "; ".join(
        f"{dtype}: GEMM {r['gemm_GFLOP_per_s']:.1f} GFLOP/s, np.exp {r['exp_per_ns']:.3f}/ns"
        for dtype, r in run.get("attention_rates", {}).items()
    )
    lines = [
        f"Medians measured on {run['datetime'][:10]} ({machine.get('cpu', {}).get('brand_raw', machine['machine'])}, "
        f"{blas.get('cores')} cores, {machine['system']}; BLAS {blas.get('name')} {blas.get('version')}, threads: "
        f"{threads} ({blas.get('threads_from')}); load average {load}; rates {rates}):",
        "",
    ]
    names = [n for n in IMPLEMENTATIONS if any(n in row["medians"] for row in groups.values())]
    head = ["dtype", "N", "floor (ms)", "limit (ms)", "FLOP floor (ms)"]
    head += [f"{n} / {what}" for n in names for what in ("limit", "FLOP floor")]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in sorted(groups.values(), key=lambda r: (r["dtype"], r["N"])):
        medians = row["medians"]
        if "floor" not in medians or "exp" not in medians:
            continue
        limit = medians["floor"] + medians["exp"]
        cells = [row["dtype"], str(row["N"]), f"{medians['floor'] * 1e3:.2f}", f"{limit * 1e3:.2f}"]
        cells.append(f"{row['flop'] * 1e3:.2f}")
        for n in names:
            median = medians.get(n)
            cells += [
                "" if median is None else f"{median / limit:.2f}",
                "" if median is None else f"{median / row['flop']:.2f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="the run's --benchmark-json file")
    parser.add_argument("--load", default="not recorded", help="the machine's load average during the run")
    arguments = parser.parse_args()
    print("\n".join(table(json.loads(arguments.json.read_text()), arguments.load)))


if __name__ == "__main__":
    main()
