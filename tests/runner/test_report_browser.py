"""The report's HTML page in a real browser (headless Chromium): it loads without a console error,
every plot image decodes, no element is wider than the page at 1280 px, and a screenshot is taken.

The report is rendered from real result records: tests/fixtures/report/ (three runs of one short
unetpp bench: onnxruntime fp32, openvino int8, torch bf16 that is INVALID), the real schema 1.3
baseline in benchmarks/baselines/ and tests/fixtures/result_example.json (a failed batch size) --
long labels, UNSTABLE badges, a precision plot, nested runtime settings with long paths.

The page is checked by a copy of it with a small script injected at the top of <head>: it records
script errors, resource errors and console.error/warn calls from the start, and on `load` opens
every <details>, measures the page and each element against the viewport and the plots'
naturalWidth, and writes its findings as JSON into <pre id="check">; `chromium --dump-dom` prints
the resulting DOM. Chromium's own console log (--enable-logging=stderr) is read too: any CONSOLE
line is a failure. Skipped when no Chromium binary is on PATH.
"""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from runner.report import write_report

ROOT = Path(__file__).resolve().parents[2]
RECORDS = [*sorted((ROOT / "tests" / "fixtures" / "report").glob("*.json")),
           ROOT / "benchmarks" / "baselines" / "unetpp-onnxruntime-20261122T131602Z.json",
           ROOT / "tests" / "fixtures" / "result_example.json"]
BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(name)), None)
WIDTH, HEIGHT = 1280, 2000

pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium binary on PATH (chromium, chromium-browser or "
                                                        "google-chrome; Debian: apt-get install chromium): the "
                                                        "report page is not checked in a browser")

CHECK = """<script>
(() => {
  const errors = [];
  window.addEventListener("error", e => {
    const t = e.target;
    errors.push(t && t !== window ? `resource failed: <${t.tagName.toLowerCase()}> ${(t.src || t.href || "").slice(0, 80)}`
                                  : `script error: ${e.message}`);
  }, true);
  window.addEventListener("securitypolicyviolation", e => errors.push(`CSP: ${e.violatedDirective}`));
  for (const level of ["error", "warn"]) {
    const original = console[level];
    console[level] = (...args) => { errors.push(`console.${level}: ${args.join(" ")}`); original.apply(console, args); };
  }
  window.addEventListener("load", () => {
    document.querySelectorAll("details").forEach(d => { d.open = true; });
    const page = document.documentElement.clientWidth;
    const wide = [];
    for (const el of document.body.querySelectorAll("*")) {
      const r = el.getBoundingClientRect();
      if (r.width && (r.right > page + 0.5 || r.left < -0.5)) {
        wide.push(`<${el.tagName.toLowerCase()} class="${el.className}"> ${Math.round(r.left)}-${Math.round(r.right)} px: `
                  + (el.textContent || el.getAttribute("alt") || "").trim().slice(0, 60));
      }
    }
    const out = document.createElement("pre");
    out.id = "check";
    out.textContent = JSON.stringify({
      errors, wide: wide.slice(0, 20), page, innerWidth: window.innerWidth,
      scrollWidth: document.documentElement.scrollWidth,
      images: [...document.images].map(i => ({alt: i.alt, complete: i.complete, naturalWidth: i.naturalWidth})),
      links: [...document.querySelectorAll("a[href]")].map(a => a.href)});
    document.body.appendChild(out);
  });
})();
</script>"""


def _chromium(profile: Path, *args: str) -> subprocess.Popen:
    """A headless Chromium at WIDTH x HEIGHT with its own profile folder (no lock shared with
    another browser), its stdout and stderr piped."""
    return subprocess.Popen([BROWSER, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
                             f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    results = tmp_path_factory.mktemp("results")
    for i, path in enumerate(RECORDS):
        shutil.copy(path, results / f"{i}_{path.name}")
    return write_report(results, tmp_path_factory.mktemp("report"))


def test_report_page_loads_cleanly_and_fits_the_page(report: dict, tmp_path: Path):
    page = report["html"]
    checked = page.with_name("report.checked.html")  # beside it: the same relative links
    text = page.read_text()
    assert text.count("<head>") == 1
    checked.write_text(text.replace("<head>", "<head>\n" + CHECK, 1))

    shot = tmp_path / "report.png"
    # both at once (the test takes the slower one's time): the checked copy's DOM with Chromium's
    # console log on stderr, and a screenshot of the page itself
    procs = {"dom": _chromium(tmp_path / "profile-dom", "--enable-logging=stderr", "--v=0",
                              "--virtual-time-budget=10000", "--dump-dom", checked.as_uri()),
             "shot": _chromium(tmp_path / "profile-shot", "--hide-scrollbars", f"--screenshot={shot}", page.as_uri())}
    out = {name: p.communicate(timeout=90) for name, p in procs.items()}
    assert procs["dom"].returncode == 0, out["dom"][1][-2000:]
    assert procs["shot"].returncode == 0, out["shot"][1][-2000:]

    # the screenshot: a PNG file with something in it
    assert shot.is_file() and shot.stat().st_size > 10_000, out["shot"]
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    dom, log = out["dom"]
    found = re.search(r'<pre id="check">(.*?)</pre>', dom, re.S)
    assert found, f"the check script left no result (did the page load?): {dom[-500:]}"
    check = json.loads(html.unescape(found.group(1)))
    # no console error: none seen by the page, none in Chromium's console log
    assert check["errors"] == []
    assert [line for line in log.splitlines() if ":CONSOLE" in line] == []
    # every plot image loaded (the three plots of the one model: throughput, latency, precision)
    assert len(check["images"]) == len(report["plots"]) == 3
    assert all(img["complete"] and img["naturalWidth"] > 0 for img in check["images"]), check["images"]
    # nothing wider than the page: no horizontal scroll, no element past the viewport's edge
    assert check["innerWidth"] == WIDTH
    assert check["scrollWidth"] <= check["innerWidth"], check["wide"]
    assert check["wide"] == []
    # the CSV link points at the CSV written beside the page
    csv_links = [unquote(urlparse(link).path) for link in check["links"] if link.endswith(".csv")]
    assert csv_links == [str(report["csv"])] and report["csv"].is_file()


def test_page_names_precision_and_units(report: dict):
    """What a reader sees on the page: every run label carries its precision; the settings are a
    key: value list, not JSON; latency columns say per batch or per sample."""
    text = report["html"].read_text()
    for label in ("onnxruntime cpu fp32 (", "openvino cpu int8", "torch cpu bf16 [INVALID]"):
        assert label in text
    assert '<span class="k">INFERENCE_PRECISION_HINT</span>: f32' in text  # openvino's config, nested
    assert "{&#34;" not in text and '{"' not in text  # no JSON object rendered into a cell
    assert "<th>p50 ms/batch</th>" in text and "<th>p50 ms/sample</th>" in text
