"""The class report and a notebook check as a person sees them: opened in headless Chromium (the distribution's
package; skipped where none is installed), the DOM read back after the page's own script ran, and screenshots
saved in the test's tmp_path (and copied into $ATTENTION_SCREENSHOTS when it names a folder)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from properties.checker.html import runs_from_json
from properties.checker.notebook_check import check
from properties.checker.pictures import have_matplotlib
from tests.checker.conftest import GradedClass
from tests.checker.test_notebook_check import CELL, LAWS, SQRT_D, cell_function

pytestmark = [pytest.mark.meta, pytest.mark.slow]  # subprocesses: run by pytest -m slow (CI)
BROWSER = next((found for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
                if (found := shutil.which(name))), None)  # fmt: skip
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no Chromium installed (apt-get install -y chromium)")
PNG = b"\x89PNG\r\n\x1a\n"

# Appended to a copy of a page: what a person would see and do, recorded into the DOM for --dump-dom to return.
PROBE = """
<script>
(function () {
  var probe = {images: [], sorted: {}, target: null};
  document.querySelectorAll("img").forEach(function (img) {
    probe.images.push({data: img.src.indexOf("data:image/png;base64,") === 0, width: img.naturalWidth});
  });
  var link = document.querySelector('a[href="#LINK"]');
  if (link) {
    link.click();
    var target = document.querySelector(":target");
    probe.target = {hash: location.hash, id: target && target.id, text: target ? target.textContent : ""};
  }
  var table = document.getElementById("runs");
  if (table) {
    var heads = Array.prototype.map.call(table.tHead.rows[0].cells, function (th) { return th.textContent.trim(); });
    ["score", "verdict", "score"].forEach(function (name, step) {
      table.tHead.rows[0].cells[heads.indexOf(name)].click();
      probe.sorted[name + step] = Array.prototype.map.call(table.tBodies[0].rows, function (row) {
        return row.cells[heads.indexOf(name)].textContent.trim();
      });
    });
  }
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(probe);
  document.body.appendChild(out);
})();
</script>
"""


def chromium(arguments: list[str], page: Path, scratch: Path) -> str:
    """Run headless Chromium on a local file; its stdout (the DOM for --dump-dom)."""
    assert BROWSER is not None
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={scratch / 'profile'}", "--virtual-time-budget=5000", *arguments,
               page.as_uri()]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def screenshot(page: Path, name: str, size: str, scratch: Path) -> Path:
    """A screenshot of `page`, saved in `scratch` and copied to $ATTENTION_SCREENSHOTS when set."""
    shot = scratch / name
    assert BROWSER is not None
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={scratch / 'profile'}", "--virtual-time-budget=5000", f"--window-size={size}",
               f"--screenshot={shot}", page.as_uri()]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert completed.returncode == 0 and shot.read_bytes().startswith(PNG), completed.stderr[-2000:]
    folder = os.environ.get("ATTENTION_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(folder) / name)
    return shot


def probed(page: Path, link: str, scratch: Path) -> dict[str, object]:
    copy = scratch / f"probe-{page.name}"
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE.replace("LINK", link) + "</body>"))
    dom = chromium(["--dump-dom"], copy, scratch)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.DOTALL)
    assert found is not None, dom[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<"))  # type: ignore[no-any-return]


@needs_browser
def test_the_class_report_in_a_browser(graded_class: GradedClass, tmp_path: Path) -> None:
    runs = runs_from_json(graded_class.data)
    sqrt_D = next(run for run in runs if "sqrt_D" in run.file and run.kind == "scaled")
    probe = probed(graded_class.html, sqrt_D.anchor, tmp_path)
    target = probe["target"]
    assert isinstance(target, dict) and target["hash"] == f"#{sqrt_D.anchor}" and target["id"] == sqrt_D.anchor
    assert "sqrt_D.ipynb" in target["text"] and "matches attention scaled by 1/sqrt(D)" in target["text"]
    sorted_ = probe["sorted"]
    assert isinstance(sorted_, dict)
    scores = [float(s) for s in sorted_["score0"]]
    assert scores == sorted(scores) and scores != sorted(scores, reverse=True)  # a click sorts ascending
    assert sorted_["verdict1"] == sorted(sorted_["verdict1"])  # FAIL rows first
    assert [float(s) for s in sorted_["score2"]] == sorted(scores)  # a click on another column starts ascending
    images = probe["images"]
    assert isinstance(images, list)
    if have_matplotlib():
        assert images and all(image["data"] and image["width"] > 0 for image in images)  # decoded, not broken
    dom = chromium(["--dump-dom"], graded_class.html, tmp_path)
    assert "The class at a glance" in dom and "files fail" in dom and "Most frequent mistakes" in dom
    summary = screenshot(graded_class.html, "class-report.png", "1280,2200", tmp_path)
    # The details, as the link reaches them (headless screenshots do not scroll to a fragment: the summary,
    # the law table and the rows are hidden in a copy instead).
    details = tmp_path / "details.html"
    hide = "<style>#summary, #laws, #students { display: none; }</style></head>"
    details.write_text(graded_class.html.read_text(encoding="utf-8").replace("</head>", hide), encoding="utf-8")
    detail = screenshot(details, "class-report-details.png", "1280,2600", tmp_path)
    assert summary.stat().st_size > 20_000 and detail.stat().st_size > 20_000


@needs_browser
def test_a_notebook_check_in_a_browser(tmp_path: Path) -> None:
    function = cell_function("browser", CELL.format(scale=SQRT_D), "scaled_dot_product_self_attention")
    result = check(function, laws=LAWS)
    page = tmp_path / "notebook-check.html"
    page.write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{result._repr_html_()}</body>'
                    "</html>", encoding="utf-8")  # fmt: skip
    probe = probed(page, "none", tmp_path)
    images = probe["images"]
    assert isinstance(images, list)
    if have_matplotlib():
        assert images and all(image["data"] and image["width"] > 0 for image in images)
    dom = chromium(["--dump-dom"], page, tmp_path)
    assert "FAIL" in dom and "diagnosis:" in dom and "counterexample: D=" in dom
    shot = screenshot(page, "notebook-check.png", "1000,1400", tmp_path)
    assert shot.stat().st_size > 20_000
