"""Turn a folder of result JSONs into a guide-style report: report.md, report.html and plots.

The report follows the Ascend ModelZoo inference guides: per model an accuracy table
(ours vs the reference value, delta, relative drop, pass; under it every figure of each
protocol, e.g. a guide's running average next to the final value), per-class IoU tables (one
per protocol that has per-class figures: classes as rows, runs as columns), throughput tables
with batch sizes as rows and runs as columns (and a "best batch" row; each run over the first in a
table of across-runs ratios beside it), a throughput-vs-batch-size plot, a latency-per-sample plot
(one horizontal row per run and batch size), latency, cost and pipeline-stage tables per run, and
each run's export and runtime settings as a nested key: value list. When a model's runs include a
reduced precision (bf16, fp16, int8), a precision table (run x batch size: throughput, the run's
interleaved speed-up over fp32, the ratio to the same runtime's fp32 run across runs, accuracy
delta and fidelity to fp32, fraction of that precision's own GEMM peak, pass) and an
accuracy-vs-throughput plot (one point per run, its axis spanning the published value with a
margin of a few points, each point's delta to fp32 in the legend) follow.

The content is built once as a list of blocks (headings, paragraphs, tables, images, settings
lists) in Python and rendered twice through the jinja2 templates in runner/templates/: to
Markdown (report.md.j2) and to a single self-contained HTML page (report.html.j2, autoescaped;
plots embedded as base64 PNGs; the PNG files are also written next to the page). Beside them,
report.csv holds every run x batch size x scope as one row (the page links to it).

Every run is labelled `<runtime> <device type> <precision>` (`... x2 shards` for a sharded run) in
every table and plot. Latencies are stated per batch (the tables' `ms/batch` columns) and per
sample (`ms/sample` = per batch / batch size: the latency plot and the tables' `ms/sample` columns).

Each run's status is a badge (OK, INVALID, FAILED: zoo.checks.status_of, so a record from before
schema 1.10 that said ok over a failed verify is INVALID too); an invalid run's label carries
[INVALID] in every table and plot, its accuracy cells say so and its reason is a warning: its
figures are never shown as a sound run's. Records are read through runner.validate (schema and
the record checker's rules: a record that breaks one stops the report, exit 2).

Every throughput carries its uncertainty in the terminal's words (zoo.stats.figure / block_figure):
"41.2 ±1.1%" is the relative half-width of its 95% interval (perf[].interval, schema 1.11),
"6.4 ±12.2% UNSTABLE" one wider than its tolerance, "6.4 ±? (2 windows) UNSTABLE" one with too few
windows for an interval; a record without an interval shows the bare figure (or, from the older
stop-when-stable timing, "41.2 (spread 1.2%)": the windows' spread, not an interval). A figure
whose interval is not stable carries UNSTABLE in every table (a badge in HTML) and plot (ringed in
the throughput plot), and the run's summary lists them. A speed-up is only ever the same-run
interleaved ratio (reduced_precision.fp32_baseline.speedup with its speedup_interval); ratios between two runs are labelled "across runs", their
uncertainty both runs' relative half-widths added in quadrature.

    python -m runner.report RESULTS_DIR [--out DIR] [--csv PATH]

The report is in parts, one job each:

    runner/report_data.py    the records read: uncertainties, labels, fp32 deltas; report.csv
    runner/report_tables.py  the tables (text cells)
    runner/report_plots.py   the plots (matplotlib, PNG bytes)
    runner/report.py         the blocks of the report, their rendering (Markdown, HTML), main
"""
from __future__ import annotations

import argparse
import base64
import os
import re
import sys
from pathlib import Path

import jinja2

from runner.report_data import (
    CSV_NAME,
    DASH,
    UNSTABLE,
    UNSTABLE_MARK,
    _labels,
    _shards,
    _subset,
    _uncertainty,
    to_csv,
)
from runner.report_plots import _latency_plot, _plot, _precision_plot
from runner.report_tables import (
    BADGES,
    Table,
    _accuracy_table,
    _badge,
    _cost_table,
    _latency_table,
    _op_table,
    _per_class_tables,
    _perf_tables,
    _precision_table,
    _stage_table,
    _timing_badge,
    _unstable_items,
)
from runner.validate import ResultError, find_results, load_result
from zoo.checks import invalid_reason, status_of

# names of the parts that tests and callers reach through runner.report
from runner.report_data import CSV_COLUMNS, csv_rows  # noqa: F401
from runner.report_plots import PRECISION_MARKERS, _latency_figure, _precision_figure, _throughput_figure  # noqa: F401
from runner.report_tables import PRECISION_ORDER  # noqa: F401

SCOPES = (("infer_only", "inference only (runtime call on a resident batch)"),
          ("pipeline", "pipeline (read + preprocess + infer + postprocess over the dataset)"))
NUMBER = re.compile(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?%?( ±(\d+(\.\d+)?%|\?))?( \(.*\))?( UNSTABLE)?"
                    r"|—|failed \[\d+\]")  # right-aligned in HTML
TEMPLATES = Path(__file__).resolve().parent / "templates"


# A block is a dict with a "kind": {"kind": "h1"|"h2"|"h3"|"p"|"warn", "text"}, {"kind": "table",
# "table": Table}, {"kind": "img", "alt", "file", "png": bytes}, {"kind": "facts", "label",
# "items": [{"key", "value", "children", "collapsed"?}]} (a run's export and settings as a nested
# key: value list), {"kind": "csv", "href"} (the link to report.csv).
Block = dict


def _block(kind: str, text: str) -> Block:
    return {"kind": kind, "text": text}


def _timing_lines(runs, labels) -> list[Block]:
    """Per run: a warning listing its UNSTABLE figures; a line when its figures have no interval."""
    out: list[Block] = []
    for run, label in zip(runs, labels):
        items = _unstable_items(run)
        if items:
            out.append(_block("warn", f"{label}: {UNSTABLE}: " + "; ".join(items)))
        kinds = {_uncertainty(p)["kind"] for p in run["perf"] if p["status"] == "ok"}
        if kinds - {"interval"}:
            how = (" or with the window spread of its stop-when-stable timing" if "spread" in kinds else "")
            out.append(_block("p", f"{label}: no confidence interval in this record (schema {run['schema_version']}, "
                                   f"before 1.11): its throughputs are shown without ±{how}"))
    return out


def _scalar(value) -> str:
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _items(value: dict) -> list[dict]:
    """A settings dict as a nested key: value list: a dict (or a list holding dicts) becomes the
    children of its key, a list of plain values one comma-separated value, an empty one 'none'."""
    out = []
    for key, v in value.items():
        if isinstance(v, dict) and v:
            out.append({"key": str(key), "value": None, "children": _items(v)})
        elif isinstance(v, list) and any(isinstance(x, (dict, list)) for x in v):
            out.append({"key": str(key), "value": None,
                        "children": _items({str(i + 1): x for i, x in enumerate(v)})})
        elif isinstance(v, (list, dict)):
            out.append({"key": str(key), "value": ", ".join(_scalar(x) for x in v) or "none", "children": []})
        else:
            out.append({"key": str(key), "value": _scalar(v), "children": []})
    return out


# ---------------------------------------------------------------- content

def _verification(w: dict) -> str:
    """How the weights were checked: schema 1.5 lists the checks; before it only `verified`."""
    if not w.get("verified"):
        return " (not verified: no expected checksum)"
    checks = w.get("checks") or []
    if checks and all(c["kind"] == "sha256-prefix" for c in checks):
        # a few hex digits catch a damaged or mixed-up file, not a forged one: say so
        return f" (verified by sha256 prefix {', '.join(sorted({c['value'] for c in checks}))} only)"
    return " (verified)"


def _provenance_lines(runs, labels) -> list[Block]:
    groups: dict[tuple, list[str]] = {}
    for run, label in zip(runs, labels):
        w, ds = run["provenance"]["weights"], run["provenance"]["dataset"]
        groups.setdefault((w["sha256"][:12], _verification(w), ds["name"], ds.get("split"),
                           ds["num_samples"], _subset(run, ds["num_samples"])), []).append(label)
    out = []
    for (sha, verification, name, split, n, subset), members in groups.items():
        who = f"{', '.join(members)}: " if len(groups) > 1 else ""
        text = (f"{who}weights sha256 {sha}{verification}; dataset {name}"
                f"{f' ({split})' if split else ''}, {n} samples")
        out.append(_block("warn", f"{text}; LIMITED RUN {subset}: numbers are not comparable to the full set")
                   if subset else _block("p", f"{text}; full run"))
    return out


def _run_facts(run, label, file: str | None = None) -> Block:
    """A run's export, verification, device and runtime settings as a nested key: value list."""
    exp, dev = run["export"], run["device"]
    items = [{"key": "runtime", "value": f"{run['runtime']['name']} {run['runtime']['version']}", "children": []},
             {"key": "precision", "value": run["precision"], "children": []}]
    if run.get("sharding"):
        items.append({"key": "shards", "value": str(_shards(run)), "children": []})
    isa = ", ".join((dev.get("details") or {}).get("isa") or [])
    items.append({"key": "device", "value": f"{dev['type']}: {dev['name']}"
                  + (f" ({dev['cores']} cores)" if dev.get("cores") else "") + (f"; ISA {isa}" if isa else ""),
                  "children": []})
    if exp is None:
        export = "no export"
    else:
        par = exp["parity"]
        export = (f"opset {exp['opset']}, checker {exp['checker']}, parity max_rel_diff "
                  f"{par['max_rel_diff']:.2g} ({par['candidate']} vs {par['reference']}, bs {par['batch_size']}, "
                  f"{'passed' if par['passed'] else 'FAILED'})")
    items.append({"key": "export", "value": export, "children": []})
    ver = run.get("verify")  # schema 1.6: the runtime under test against PyTorch
    if ver:
        items.append({"key": "verify", "value": f"{ver['candidate']} vs PyTorch: max_rel_diff {ver['max_rel_diff']:.2g}, "
                                                f"{ver.get('decision_flips', 0)} decision flips, "
                                                f"{'passed' if ver['passed'] else 'FAILED'}", "children": []})
    settings = _items(run["runtime"]["settings"])
    items.append({"key": "settings", "value": None if settings else "defaults", "children": settings,
                  "collapsed": True})  # HTML: a disclosure (the runtime's settings can run to dozens of lines)
    if file:
        items.append({"key": "result file", "value": file, "children": []})
    return {"kind": "facts", "label": label, "items": items}


def _img(alt: str, file: str, png: bytes | None) -> list[Block]:
    return [{"kind": "img", "alt": alt, "file": file, "png": png}] if png else []


def _model_section(name: str, runs: list[dict], files: list[str | None]) -> list[Block]:
    labels = _labels(runs)
    m = runs[0]["model"]
    variants = sorted({r["model"]["variant"] for r in runs})
    blocks: list[Block] = [_block("h2", f"{name}: {m['title']}"),
                           _block("p", f"{len(runs)} run(s); variant {', '.join(variants) or DASH}")]
    blocks += [_block("warn", f"{label}: run {_badge(r)}: {r['error'] or invalid_reason(r) or 'no reason given'}"
                              + ("; its figures are shown marked, not as a sound run's"
                                 if status_of(r) == "invalid" else ""))
               for r, label in zip(runs, labels) if status_of(r) != "ok"]
    blocks += _timing_lines(runs, labels)
    blocks += _provenance_lines(runs, labels)
    blocks += [_block("h3", "Accuracy"), {"kind": "table", "table": _accuracy_table(runs, labels)}]
    blocks += [{"kind": "table", "table": t} for t in _per_class_tables(runs, labels)]
    blocks.append(_block("h3", "Performance"))
    for scope, title in SCOPES:
        blocks += [{"kind": "table", "table": t} for t in _perf_tables(runs, labels, scope, title)]
    blocks += _img(f"{name} throughput vs batch size", f"{name}_throughput.png",
                   _plot(runs, labels, f"{name}: throughput [samples/s] vs batch size"))
    blocks += _img(f"{name} latency per sample", f"{name}_latency.png",
                   _latency_plot(runs, labels, f"{name}: latency per sample [ms], infer only"))
    for run, label in zip(runs, labels):
        blocks += [{"kind": "table", "table": t} for t in (_latency_table(run, label), _cost_table(run, label),
                                                            _stage_table(run, label), _op_table(run, label)) if t]
    table = _precision_table(runs, labels)
    if table:
        blocks += [_block("h3", "Precision"), {"kind": "table", "table": table}]
        blocks += _img(f"{name} accuracy vs throughput", f"{name}_precision.png",
                       _precision_plot(runs, labels, f"{name}: accuracy vs throughput per run"))
    blocks.append(_block("h3", "Export and runtime settings"))
    blocks += [_run_facts(r, label, f) for r, label, f in zip(runs, labels, files)]
    return blocks


def build_report(records: list[dict], source: str, files: list[str] | None = None,
                 csv_href: str | None = None) -> list[Block]:
    """The report's blocks; `files` (the records' paths, in order) are named in each run's facts,
    `csv_href` (the CSV's path relative to the page) is linked under the title."""
    files = files or [None] * len(records)
    by_model: dict[str, list[tuple[dict, str | None]]] = {}
    for rec, file in zip(records, files):
        by_model.setdefault(rec["model"]["name"], []).append((rec, file))
    overview = Table("Runs", ["model", "run_id", "runtime", "device", "precision", "status", "speed figures",
                              "started"],
                     [[r["model"]["name"], r["run_id"], f"{r['runtime']['name']} {r['runtime']['version']}",
                       f"{r['device']['type']} ({r['device']['name']})", r["precision"], _badge(r), _timing_badge(r),
                       r["timestamps"]["started"]] for r in records],
                     ["speed figures: stable (95% CI) when every throughput's 95% interval is within its tolerance; "
                      "UNSTABLE when one is not (the model's section lists them); before schema 1.11 there is no "
                      "interval"])
    blocks: list[Block] = [_block("h1", "Inference report"),
                           _block("p", f"{len(records)} result file(s) from {source}; {len(by_model)} model(s). "
                                       "Throughput in samples/s with the relative half-width of its 95% interval "
                                       "(±; no ± when the record has none; UNSTABLE when it is wider than its "
                                       "tolerance). Latency in ms, per batch (one call) and per sample (per batch / "
                                       "batch size), as each column and axis says. A speed-up is only the same-run "
                                       "interleaved ratio (precision table); ratios between two runs are labelled "
                                       "across runs.")]
    if csv_href:
        blocks.append({"kind": "csv", "href": csv_href})
    blocks.append({"kind": "table", "table": overview})
    for name in sorted(by_model):
        blocks += _model_section(name, [r for r, _ in by_model[name]], [f for _, f in by_model[name]])
    return blocks


# ---------------------------------------------------------------- rendering

def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _html_cell(c: str) -> dict:
    """A table cell for the HTML template: its text, whether it is a number (right-aligned) and
    the badge it shows (a status word alone, or UNSTABLE after a figure)."""
    if c in BADGES.values() or c == UNSTABLE:
        return {"text": "", "numeric": False, "badge": c}
    numeric = bool(NUMBER.fullmatch(c))
    if c.endswith(UNSTABLE_MARK):
        return {"text": c[:-len(UNSTABLE_MARK)], "numeric": numeric, "badge": UNSTABLE}
    return {"text": c, "numeric": numeric, "badge": None}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",),
                                                                 default_for_string=False),
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(md_cell=_md_cell, html_cell=_html_cell,
                       b64=lambda data: base64.b64encode(data).decode("ascii"))
    return env


def to_markdown(blocks: list[Block]) -> str:
    return _environment().get_template("report.md.j2").render(blocks=blocks).rstrip("\n") + "\n"


def to_html(blocks: list[Block]) -> str:
    title = next((b["text"] for b in blocks if b["kind"] == "h1"), "Report")
    return _environment().get_template("report.html.j2").render(blocks=blocks, title=title)


# ---------------------------------------------------------------- entry points

def write_report(results_dir: Path, out_dir: Path | None = None, csv_path: Path | None = None) -> dict:
    """Write report.md, report.html, report.csv (or `csv_path`) and the plots (<model>_throughput.png,
    _latency.png, _precision.png) into out_dir (default: results_dir).

    Returns {"markdown": Path, "html": Path, "csv": Path, "plots": [Path, ...]}. Raises ResultError
    when a result file is invalid (naming it) or when the folder holds no results.
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir
    paths = find_results(results_dir)
    records = [load_result(p) for p in paths]
    if not records:
        raise ResultError(f"{results_dir}: no result files (*.json with kind 'zoo.result') to report on")
    files = [str(p) for p in paths]
    csv_path = Path(csv_path) if csv_path is not None else out_dir / CSV_NAME
    href = Path(os.path.relpath(csv_path.resolve(), out_dir.resolve())).as_posix()
    blocks = build_report(records, str(results_dir), files, href)
    from zoo.fileutil import atomic_write_bytes, atomic_write_text  # each file whole or not at all
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    plots = []
    for b in blocks:
        if b["kind"] == "img":
            plots.append(out_dir / b["file"])
            atomic_write_bytes(plots[-1], b["png"])
    md, page = out_dir / "report.md", out_dir / "report.html"
    atomic_write_text(csv_path, to_csv(records, files))
    atomic_write_text(md, to_markdown(blocks))
    atomic_write_text(page, to_html(blocks))
    return {"markdown": md, "html": page, "csv": csv_path, "plots": plots}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.report", description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path, help="folder with result JSONs (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: RESULTS_DIR)")
    parser.add_argument("--csv", type=Path, default=None,
                        help=f"where to write the CSV of every run (default: OUT/{CSV_NAME})")
    args = parser.parse_args(argv)
    try:
        written = write_report(args.results_dir, args.out, args.csv)
    except ResultError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in [written["markdown"], written["html"], written["csv"], *written["plots"]]:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
