"""The class report (`attention-check DIR --html FILE`) and the notebook check's rich display, as HTML.

One self-contained file: its style and its sorting script are inline, its pictures are PNG data URIs, and it
names no address to fetch, so it opens offline and can be mailed. Built from the per-file, per-function records
of the JSON report (`cli.as_json`), read through one adapter, `runs_from_json`.
"""

from __future__ import annotations

import html
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from properties.checker.grading import score
from properties.checker.pictures import (
    MISSING_MATPLOTLIB,
    Comparison,
    compare,
    differs,
    have_matplotlib,
    heatmaps,
    problem_arrays,
)
from properties.helpers.options import CATEGORIES

PICTURED_KINDS = ("scaled", "unscaled")  # the functions whose counterexamples are AttentionProblems


@dataclass
class Run:
    """One (file, function) of a report: its verdict and laws, as the JSON report gives them."""

    index: int
    file: str
    function: str
    target: str
    kind: str
    state: str
    verdict: str
    error: str
    laws: list[dict[str, Any]]
    score: float
    pictures: dict[str, str] = field(default_factory=dict)  # law -> PNG data URI
    comparisons: dict[str, Comparison] = field(default_factory=dict)  # law -> what the pictures show

    @property
    def anchor(self) -> str:
        return f"run-{self.index}"

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [law for law in self.laws if law["status"] == "FAIL"]

    @property
    def diagnoses(self) -> list[str]:
        """The distinct diagnoses of its FAIL rows, in order."""
        return list(dict.fromkeys(law["diagnosis"] for law in self.failed if law["diagnosis"]))

    def category(self, category: str) -> str:
        statuses = {law["status"] for law in self.laws if law["category"] == category}
        return next((s for s in ("FAIL", "PASS", "SKIP") if s in statuses), "-")


def runs_from_json(data: Mapping[str, Any], uncounted: Sequence[str] = ("conventions",)) -> list[Run]:
    """The adapter: the JSON report's `runs` as Runs (the one place that reads the JSON's keys)."""
    runs = []
    for index, run in enumerate(data["runs"]):
        laws = list(run.get("laws") or [])
        runs.append(
            Run(
                index=index, file=run["file"], function=run.get("function") or "-", target=run.get("target") or "",
                kind=run.get("kind") or "-", state=run.get("state") or "not graded", verdict=run["verdict"],
                error=run.get("error") or "", laws=laws, score=score(laws, uncounted),
            )
        )  # fmt: skip
    return runs


def short(diagnosis: str) -> str:
    """A diagnosis's first clause (before its explanation), for charts and tables."""
    return diagnosis.split(";")[0].split(": the output")[0].strip()


def title(law: str) -> str:
    return law.removeprefix("test_").replace("_", " ")


def add_pictures(run: Run, limit: int = 1, memory_mb: int = 4096, tried: int = 6) -> None:
    """Draw the heatmaps of up to `limit` FAIL rows of `run` whose counterexample can be pictured. Up to `tried`
    counterexamples are re-run in one isolated worker, and only those on which the function's matrix differs
    from the reference's are drawn (a law that fails on a problem it derives, such as the doubled D_q, may find
    the drawn problem itself computed right), the largest N first, for a readable picture."""
    if run.kind not in PICTURED_KINDS or not run.target or run.error:  # stopped by an error: it would again
        return
    candidates = [(law, arrays) for law in run.failed if (arrays := problem_arrays(law["counterexample"] or {}))]
    candidates.sort(key=lambda pair: -pair[1][0].shape[1])
    candidates = candidates[:tried]
    comparisons = compare(run.target, run.kind, [arrays for _, arrays in candidates], memory_mb=memory_mb)
    for (law, _), comparison in zip(candidates, comparisons, strict=False):
        run.comparisons[law["law"]] = comparison
    drawn = 0
    for (law, _), comparison in zip(candidates, comparisons, strict=False):
        if drawn < limit and differs(comparison).any():
            uri = heatmaps(comparison)
            if uri is not None:
                run.pictures[law["law"]] = uri
                drawn += 1


STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2430; margin: 0;
       background: #f6f7f9; }
main { max-width: 1280px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 10px; }
h3 { font-size: 15px; margin: 0 0 8px; } .meta { color: #5b6575; margin: 0 0 18px; }
.card { background: #fff; border: 1px solid #dde1e7; border-radius: 8px; padding: 14px 18px; margin: 0 0 14px; }
.tiles { display: flex; gap: 12px; flex-wrap: wrap; margin-bottom: 6px; }
.tile { background: #fff; border: 1px solid #dde1e7; border-radius: 8px; padding: 10px 16px; min-width: 120px; }
.tile b { display: block; font-size: 22px; } .tile span { color: #5b6575; font-size: 12px; }
table { border-collapse: collapse; width: 100%; background: #fff; }
.scroll { overflow-x: auto; }
#runs td, #runs th { font-size: 12.5px; padding: 5px 6px; } #runs th { white-space: normal; }
#runs td.mistake { min-width: 200px; } #runs td.state { max-width: 110px; }
#runs code { font-size: 11.5px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #e7eaef; vertical-align: top; }
th { background: #eef1f5; font-weight: 600; font-size: 13px; white-space: nowrap; }
th.sortable { cursor: pointer; user-select: none; } th.sortable::after { content: " \\2195"; color: #8a94a6; }
th[aria-sort="ascending"]::after { content: " \\2191"; color: #1d2430; }
th[aria-sort="descending"]::after { content: " \\2193"; color: #1d2430; }
.PASS { color: #1a7f37; font-weight: 600; } .FAIL { color: #c62828; font-weight: 600; }
.SKIP, .none { color: #8a94a6; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; }
.badge.PASS { background: #dafbe1; } .badge.FAIL { background: #ffebe9; }
.bars { display: grid; grid-template-columns: minmax(260px, 46%) 1fr; gap: 6px 12px; align-items: center; }
.bar { background: #e7eaef; border-radius: 4px; height: 16px; position: relative; }
.bar i { display: block; height: 100%; border-radius: 4px; background: #d9534f; }
.bar.good i { background: #2da44e; }
.label { font-size: 13px; } .count { color: #5b6575; font-size: 12px; white-space: nowrap; }
.detail { background: #fff; border: 1px solid #dde1e7; border-radius: 8px; padding: 14px 18px; margin: 14px 0; }
.detail:target { border-color: #0969da; box-shadow: 0 0 0 3px #cfe3ff; }
pre { background: #f3f4f6; padding: 8px 10px; border-radius: 6px; overflow-x: auto; font-size: 12px; }
.fail-row td { font-size: 13px; } .diagnosis { color: #8a4b00; }
img.heatmap { max-width: 100%; border: 1px solid #e7eaef; border-radius: 6px; margin: 6px 0; }
.note { color: #5b6575; font-size: 12px; } a { color: #0969da; }
"""

SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th.sortable").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[column];
        var value = cell.getAttribute("data-sort");
        return value !== null ? parseFloat(value) : cell.textContent.trim().toLowerCase();
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x !== typeof y) { x = String(x); y = String(y); }
        return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def e(text: object) -> str:
    return html.escape(str(text), quote=True)


def status(text: str) -> str:
    return f'<span class="{e(text) if text in ("PASS", "FAIL", "SKIP") else "none"}">{e(text)}</span>'


def bar_rows(items: Sequence[tuple[str, int, int]], good: bool = False) -> str:
    """A bar chart in HTML: one row per (label, count, of), the bar's length count / of."""
    cells = []
    for label, count, total in items:
        width = 100 * count / total if total else 0
        cells.append(
            f'<div class="label">{e(label)}</div><div><div class="bar{" good" if good else ""}" '
            f'title="{count} of {total}"><i style="width:{width:.1f}%"></i></div>'
            f'<span class="count">{count} of {total}</span></div>'
        )
    return '<div class="bars">' + "".join(cells) + "</div>"


def matrix_text(value: Any) -> str:
    """A nested list as rows of numbers (4 significant digits)."""
    if isinstance(value, list) and value and isinstance(value[0], list):
        return "\n".join("  ".join(f"{x:>10.4g}" if isinstance(x, float | int) else str(x) for x in row)
                         for row in value)  # fmt: skip
    return str(value)


def counterexample_html(example: Mapping[str, Any] | None) -> str:
    if not example:
        return ""
    if "N" not in example:
        return f"<details><summary>counterexample</summary><pre>{e(example.get('arguments', example))}</pre></details>"
    shapes = f"D={example['D']}, D_q={example['D_q']}, D_v={example['D_v']}, N={example['N']}"
    arrays = "".join(
        f"<b>{name}</b><pre>{e(matrix_text(example[name]))}</pre>"
        for name in ("X", "omega_q", "omega_k", "omega_v", "beta_q", "beta_k", "beta_v")
        if name in example
    )
    others = {k: v for k, v in (example.get("arguments") or {}).items() if k not in ("problem", "case")}
    extra = f"<b>other arguments</b><pre>{e(others)}</pre>" if others else ""
    return f"<details><summary>counterexample: {e(shapes)}</summary>{arrays}{extra}</details>"


def run_detail(run: Run, pictures_note: str = "") -> str:
    """One (file, function): its state, error, FAIL rows with diagnosis, counterexample, pictures and replay."""
    parts = [
        f'<section class="detail" id="{e(run.anchor)}"><h3>'
        + (f"{e(run.file)} &mdash; " if run.file != run.function else "")
        + f"<code>{e(run.function)}</code> "
        f'<span class="badge {e(run.verdict)}">{e(run.verdict)}</span></h3>',
        f'<p class="meta">{e(run.kind)} &middot; {e(run.state)} &middot; score {run.score:.2f} &middot; '
        + " &middot; ".join(f"{c} {status(run.category(c))}" for c in CATEGORIES)
        + "</p>",
    ]
    if run.laws:
        counts = Counter(law["status"] for law in run.laws)
        tally = f"{len(run.laws)} laws: {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP"
        parts.append(f'<p class="note">{tally} (a SKIP needs what the function does not give, such as attentions)</p>')
    if run.error:
        parts.append(f"<pre>{e(run.error)}</pre>")
    if run.error and run.failed:  # FAILs of a function stopped by an error: folded, they only repeat it
        parts.append(f"<details><summary>its {len(run.failed)} FAIL rows</summary>")
    for law in run.failed:
        parts.append(f'<div class="card"><h3><span class="FAIL">FAIL</span> {e(title(law["law"]))} '
                     f'<span class="note">[{e(law["category"])}]</span></h3>')  # fmt: skip
        if law.get("statement"):
            parts.append(f'<p class="note">law: {e(law["statement"])}</p>')
        parts.append(f"<p>{e(law['reason'])}</p>")
        if law.get("diagnosis"):
            parts.append(f'<p class="diagnosis"><b>diagnosis:</b> {e(law["diagnosis"])}</p>')
        if law.get("attributed"):
            parts.append(f'<p class="note">not counted: the code that fails is {e(law["attributed"])}</p>')
        parts.append(counterexample_html(law.get("counterexample")))
        uri = run.pictures.get(law["law"])
        if uri:
            comparison = run.comparisons[law["law"]]
            what = "attention matrix" if comparison.name == "attentions" else "output X′ (no attentions returned)"
            parts.append(
                f'<p class="note">The {e(what)} on this counterexample: yours, the bundled reference\'s, and the '
                f'difference (cells that differ outlined in red).</p><img class="heatmap" alt="heatmaps of the '
                f'returned and the correct {e(comparison.name)} for {e(title(law["law"]))}" src="{uri}">'
            )
        elif law["law"] in run.comparisons and run.comparisons[law["law"]].error:
            parts.append(f'<p class="note">no picture: {e(run.comparisons[law["law"]].error)}</p>')
        if law.get("reproduce"):
            parts.append(f"<details><summary>replay snippet</summary><pre>{e(law['reproduce'])}</pre></details>")
        parts.append("</div>")
    if run.error and run.failed:
        parts.append("</details>")
    if pictures_note and run.failed:
        parts.append(f'<p class="note">{e(pictures_note)}</p>')
    parts.append("</section>")
    return "\n".join(parts)


def page(title_text: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title_text)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
        f"<body><main>{body}</main><script>{SORT_SCRIPT}</script></body></html>\n"
    )


def diagnosis_counts(runs: Sequence[Run]) -> tuple[list[tuple[str, int, int]], int]:
    """(diagnosis, files with it, files) by frequency; a file counts once per diagnosis."""
    files = list(dict.fromkeys(run.file for run in runs))
    per_file: dict[str, set[str]] = {file: set() for file in files}
    for run in runs:
        per_file[run.file].update(short(d) for d in run.diagnoses)
    counts = Counter(d for found in per_file.values() for d in found)
    return [(d, n, len(files)) for d, n in counts.most_common()], len(files)


def not_graded_counts(runs: Sequence[Run]) -> list[tuple[str, int, int]]:
    """(what stopped the grading, files, files): templates, missing functions, loops, crashes, ..."""
    files = list(dict.fromkeys(run.file for run in runs))
    per_file: dict[str, set[str]] = {file: set() for file in files}
    for run in runs:
        if run.state != "implemented":
            per_file[run.file].add(f"{run.function}: {run.state.split(':')[0]}")
        elif run.error:
            per_file[run.file].add(f"{run.function}: {run.error.splitlines()[0][:90]}")
    counts = Counter(d for found in per_file.values() for d in found)
    return [(d, n, len(files)) for d, n in counts.most_common()]


def law_rates(runs: Sequence[Run]) -> list[tuple[str, str, int, int]]:
    """(law, category, passed, ran) for every law that ran (PASS or FAIL) somewhere, the least passed first; a
    function stopped by an error (memory, a crash) is left out: its laws' FAILs say only that it stopped."""
    passed: Counter[str] = Counter()
    ran: Counter[str] = Counter()
    category: dict[str, str] = {}
    for run in (run for run in runs if not run.error):
        for law in run.laws:
            if law["status"] in ("PASS", "FAIL"):
                ran[law["law"]] += 1
                passed[law["law"]] += law["status"] == "PASS"
                category[law["law"]] = law["category"]
    return sorted(((law, category[law], passed[law], ran[law]) for law in ran),
                  key=lambda row: (row[2] / row[3], row[0]))  # fmt: skip


def class_report(
    data: Mapping[str, Any],
    uncounted: Sequence[str] = ("conventions",),
    pictures: bool = True,
    memory_mb: int = 4096,
    workers: int = 2,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> str:
    """The class report as one HTML page, from the JSON report's data (`cli.as_json`). With `pictures` (and
    matplotlib) each failing function gets a heatmap of its first picturable counterexample."""
    runs = runs_from_json(data, uncounted)
    base = os.path.commonpath([os.path.dirname(run.file) for run in runs]) if len({r.file for r in runs}) > 1 else ""
    for run in runs:  # shown below their common folder, named once in the header
        run.file = os.path.relpath(run.file, base) if base else run.file
    drawing = pictures and have_matplotlib()
    if drawing:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(lambda run: add_pictures(run, 1, memory_mb), [run for run in runs if run.failed]))
    if not pictures:
        note = "pictures were not asked for (a row convention, or --html without pictures)"
    else:
        note = "" if drawing else MISSING_MATPLOTLIB
    files = data.get("files") or []
    passed_files = sum(file["verdict"] == "PASS" for file in files)
    functions = list(dict.fromkeys(run.function for run in runs if run.function != "-"))
    tiles = [(len(files), "files"), (passed_files, "files pass"), (len(files) - passed_files, "files fail")]
    tiles += [(f"{sum(r.verdict == 'PASS' for r in runs if r.function == f)} / "
               f"{sum(r.function == f for r in runs)}", f"{f} pass") for f in functions]  # fmt: skip
    settings_text = f"profile {data.get('profile')}, " + ("derandomised" if data.get("seed") is None else
                                                          f"seed {data.get('seed')}")  # fmt: skip
    if data.get("only"):
        settings_text += f", only {', '.join(data['only'])}"
    body = [
        "<h1>attention-check: class report</h1>",
        f'<p class="meta">{len(files)} files{f" in {e(base)}" if base else ""}, {len(runs)} functions &middot; '
        f"{e(settings_text)} &middot; "
        f"{now().strftime('%Y-%m-%d %H:%M UTC')}</p>",
        '<section id="summary"><h2>The class at a glance</h2><div class="tiles">'
        + "".join(f'<div class="tile"><b>{e(v)}</b><span>{e(t)}</span></div>' for v, t in tiles)
        + "</div>",
    ]
    if note:
        body.append(f'<p class="note" id="pictures-note">{e(note)}</p>')
    diagnoses, _ = diagnosis_counts(runs)
    body.append('<div class="card" id="diagnoses"><h3>Most frequent mistakes (diagnoses)</h3>')
    body.append(bar_rows(diagnoses) if diagnoses else '<p class="note">no FAIL matched a known mistake</p>')
    body.append("</div>")
    stopped = not_graded_counts(runs)
    if stopped:
        body.append('<div class="card" id="not-graded"><h3>Not graded: templates, missing functions, errors</h3>')
        body.append(bar_rows(stopped) + "</div>")
    body.append("</section>")
    rates = law_rates(runs)
    body.append('<section id="laws"><h2>Pass rate of each law</h2><div class="card">')
    body.append(
        '<table class="sortable"><thead><tr><th class="sortable">law</th><th class="sortable">category</th>'
        '<th class="sortable">passed</th><th>pass rate</th></tr></thead><tbody>'
        + "".join(
            f'<tr><td>{e(title(law))}</td><td>{e(category)}</td><td data-sort="{p / n:.4f}">{p} of {n}</td>'
            f'<td><div class="bar good" title="{p} of {n}"><i style="width:{100 * p / n:.1f}%"></i></div></td></tr>'
            for law, category, p, n in rates
        )
        + "</tbody></table>"
        if rates
        else '<p class="note">no law ran</p>'
    )
    body.append("</div></section>")
    head = ["file", "function", "state", "verdict", "score", *CATEGORIES, "mistake"]
    body.append('<section id="students"><h2>Every file and function</h2><p class="note">Click a column to sort; '
                "click a file for its details.</p>")  # fmt: skip
    body.append(
        '<div class="scroll"><table class="sortable" id="runs"><thead><tr>'
        + "".join(f'<th class="sortable">{e(h)}</th>' for h in head)
        + "</tr></thead><tbody>"
    )
    for run in runs:
        first = run.error.split("\n")[0]
        mistake = "; ".join(short(d) for d in run.diagnoses) or (first if len(first) <= 110 else first[:109] + "…")
        body.append(
            f'<tr><td><a href="#{e(run.anchor)}">{e(run.file)}</a></td><td><code>{e(run.function)}</code></td>'
            f'<td class="state">{e(run.state.split(":")[0])}</td><td>{status(run.verdict)}</td>'
            f'<td data-sort="{run.score:.4f}">{run.score:.2f}</td>'
            + "".join(f"<td>{status(run.category(c))}</td>" for c in CATEGORIES)
            + f'<td class="mistake">{e(mistake)}</td></tr>'
        )
    body.append("</tbody></table></div></section>")
    body.append('<section id="details"><h2>Details</h2>')
    body += [run_detail(run) for run in runs]
    body.append('<p><a href="#summary">back to the summary</a></p></section>')
    return page("attention-check: class report", "\n".join(body))
