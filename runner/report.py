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
"""
from __future__ import annotations

import argparse
import base64
import csv
import io
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from runner.validate import ResultError, find_results, load_result
from zoo.checks import invalid_reason, status_of
from zoo.runtimes import PRECISIONS, rate_unit
from zoo.stats import block_figure, figure

STAGE_ORDER = ("read", "preprocess", "infer", "postprocess")
SCOPES = (("infer_only", "inference only (runtime call on a resident batch)"),
          ("pipeline", "pipeline (read + preprocess + infer + postprocess over the dataset)"))
DASH = "—"
NUMBER = re.compile(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?%?( ±(\d+(\.\d+)?%|\?))?( \(.*\))?( UNSTABLE)?"
                    r"|—|failed \[\d+\]")  # right-aligned in HTML
BADGES = {"ok": "OK", "invalid": "INVALID", "failed": "FAILED"}
INVALID = " [INVALID]"
UNSTABLE = "UNSTABLE"
UNSTABLE_MARK = f" {UNSTABLE}"  # last in a figure whose interval is not stable (zoo.stats.figure; a badge in HTML)
UNCERTAINTY_NOTE = ("±: relative half-width of the throughput's 95% confidence interval over its timing windows "
                    "(perf[].interval, schema 1.11); a figure without ±: its record has no interval (before 1.11); "
                    "±? (n windows): too few windows for an interval; (spread x%): a record before 1.11 timed until "
                    "stable: the spread of its last windows, not an interval; UNSTABLE after a figure: its interval is "
                    "wider than its tolerance or has too few windows")
ACROSS_RUNS_NOTE = ("across runs: the ratio of two figures measured in different runs (not a speed-up, which is only "
                    "the same-run interleaved ratio); its ± is both figures' relative half-widths added in quadrature "
                    "(no ± when either has no interval), UNSTABLE when either figure is")
CSV_NAME = "report.csv"
TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


# A block is a dict with a "kind": {"kind": "h1"|"h2"|"h3"|"p"|"warn", "text"}, {"kind": "table",
# "table": Table}, {"kind": "img", "alt", "file", "png": bytes}, {"kind": "facts", "label",
# "items": [{"key", "value", "children", "collapsed"?}]} (a run's export and settings as a nested
# key: value list), {"kind": "csv", "href"} (the link to report.csv).
Block = dict


def _block(kind: str, text: str) -> Block:
    return {"kind": kind, "text": text}


# ---------------------------------------------------------------- formatting

def _f(value, digits: int) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def _pct(share) -> str:
    return DASH if share is None else f"{100 * share:.1f}%"


def _verdict(passed) -> str:
    return {True: "pass", False: "FAIL"}.get(passed, "n/a")


def _badge(run: dict) -> str:
    status = status_of(run)
    return BADGES.get(status, status.upper())


def _uncertainty(p: dict | None) -> dict:
    """How sure a perf block's throughput is: kind "interval" (schema 1.11 `interval`: relative 95%
    half-width, None below 3 windows), "spread" (an older record's stop-when-stable `stability`: the
    windows' spread, no interval) or None (neither); stable True/False/None and, when not, why."""
    p = p or {}
    iv, st = p.get("interval"), p.get("stability")
    if iv:
        return {"kind": "interval", "half_width": iv.get("half_width"), "spread": None, "stable": iv.get("stable"),
                "reason": iv.get("reason"), "windows": iv.get("windows"), "low": iv.get("low"), "high": iv.get("high")}
    if st:
        reason = None if st.get("stable") is not False else (
            f"window means not within {_pct(st.get('tolerance'))} of their average (before schema 1.11)")
        return {"kind": "spread", "half_width": None, "spread": st.get("spread"), "stable": st.get("stable"),
                "reason": reason, "windows": st.get("windows"), "low": None, "high": None}
    return {"kind": None, "half_width": None, "spread": None, "stable": None, "reason": None, "windows": None,
            "low": None, "high": None}


def _pm(half_width) -> str:
    """'±1.1%' from a relative half-width (as zoo.stats.figure writes it); '±?' when there is none
    (never a made-up one)."""
    return "±?" if half_width is None else f"±{half_width:.1%}"


def _unc_text(u: dict) -> str:
    if u["kind"] == "spread" and u["spread"] is not None:
        return f"(spread {_pct(u['spread'])})"
    return _pm(u["half_width"])


def _mark(*unstable) -> str:
    return UNSTABLE_MARK if any(s is False for s in unstable) else ""


def _with(text: str, extra: str) -> str:
    """`extra` (e.g. ' (bs 16)') after a figure's text, before its closing UNSTABLE if any."""
    if text.endswith(UNSTABLE_MARK):
        return text[:-len(UNSTABLE_MARK)] + extra + UNSTABLE_MARK
    return text + extra


def _tput_cell(p: dict, extra: str = "") -> str:
    """A throughput with its uncertainty, the terminal's text (zoo.stats.block_figure): '41.2 ±1.1%',
    '6.4 ±12.2% UNSTABLE', '6.4 ±? (2 windows) UNSTABLE', '41.2' (no interval in the record); before
    schema 1.11, '41.2 (spread 1.2%)'; `extra` (e.g. ' (bs 16)') before a closing UNSTABLE."""
    if p.get("throughput") is None:
        return DASH
    u = _uncertainty(p)
    if u["kind"] == "spread":
        text = figure(p["throughput"]) + (f" (spread {_pct(u['spread'])})" if u["spread"] is not None else "")
        text += _mark(u["stable"])
    else:
        text = block_figure(p)
    return _with(text, extra)


def _ratio_cell(a: dict | None, b: dict | None) -> str:
    """a's throughput over b's, measured in different runs: the ratio with both relative
    half-widths added in quadrature (no ± when either has no interval)."""
    ta, tb = (a or {}).get("throughput"), (b or {}).get("throughput")
    if ta is None or not tb:
        return DASH
    ua, ub = _uncertainty(a), _uncertainty(b)
    if ua["half_width"] is None or ub["half_width"] is None:
        return figure(ta / tb, digits=2) + _mark(ua["stable"], ub["stable"])
    return figure(ta / tb, math.hypot(ua["half_width"], ub["half_width"]),
                  ua["stable"] is not False and ub["stable"] is not False, digits=2)


def _unstable_items(run: dict) -> list[str]:
    """'bs1 infer ±7.1%: why' for every figure of the run whose interval is not stable, and the
    in-run speed-up over fp32 when its interval is not."""
    items = []
    for p in sorted((p for p in run["perf"] if p["status"] == "ok"), key=lambda p: (p["batch_size"], p["scope"])):
        u = _uncertainty(p)
        if u["stable"] is False:
            scope = "infer" if p["scope"] == "infer_only" else p["scope"]
            items.append(f"bs{p['batch_size']} {scope} {_unc_text(u)}" + (f": {u['reason']}" if u["reason"] else ""))
    base = (run.get("reduced_precision") or {}).get("fp32_baseline") or {}
    si = base.get("speedup_interval") or {}
    if si.get("stable") is False:
        items.append(f"speed-up vs fp32 (bs {base.get('batch_size')}) {_pm(si.get('half_width'))}")
    return items


def _timing_badge(run: dict) -> str:
    """The run's speed figures in one word for the runs overview."""
    ok = [p for p in run["perf"] if p["status"] == "ok"]
    if not ok:
        return DASH
    if _unstable_items(run):
        return UNSTABLE
    kinds = {_uncertainty(p)["kind"] for p in ok}
    if kinds == {"interval"}:
        return "stable (95% CI)"
    return "spread only (before 1.11)" if "spread" in kinds else "no interval (before 1.11)"


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

def _shards(run: dict) -> int:
    return (run.get("sharding") or {}).get("count") or 1


def _labels(runs: list[dict]) -> list[str]:
    """`<runtime> <device type> <precision>` (`... x2 shards` for a sharded run), with the run_id
    added when two runs would share a label; the same label in every table and plot."""
    base = [f"{r['runtime']['name']} {r['device']['type']} {r['precision']}"
            + (f" x{_shards(r)} shard{'s' if _shards(r) != 1 else ''}" if r.get("sharding") else "") for r in runs]
    labels = [f"{b} ({r['run_id']})" if base.count(b) > 1 else b for b, r in zip(base, runs)]
    return [label + (INVALID if status_of(r) == "invalid" else "") for label, r in zip(labels, runs)]


def _subset(record: dict, n: int) -> str | None:
    """'(subset: n of expected)' when the numbers come from a limited run, else None."""
    ds = record["provenance"]["dataset"]
    expected, limit = ds.get("expected_samples"), ds.get("limit")
    if limit is None and (expected is None or n >= expected):
        return None
    return f"(subset: {n} of {expected})" if expected is not None else f"(subset: {n}, limit {limit})"


def _accuracy_table(runs, labels) -> Table:
    rows, notes = [], {}
    for run, label in zip(runs, labels):
        for acc in run["accuracy"]:
            ref = acc["reference"] or {}
            value, refv = acc["value"], ref.get("value")
            delta = ref.get("delta", None if refv is None else value - refv)
            drop = ref.get("relative_drop", None if not refv else (refv - value) / refv)
            ours = _f(value, 4) + (" (INVALID)" if status_of(run) == "invalid" else "")
            subset = _subset(run, acc["num_samples"])
            if subset:
                ours += " " + subset
            rows.append([label, acc["name"], acc["metric"], ours, _f(refv, 4), ref.get("source", DASH),
                         DASH if delta is None else f"{delta:+.4f}",
                         DASH if drop is None else f"{100 * drop:.2f}%",
                         "INVALID" if status_of(run) == "invalid" else _verdict(acc["passed"])])
            if acc.get("description"):
                notes.setdefault(acc["name"], f"{acc['name']}: {acc['description']}")
    tolerances = sorted({f"{100 * a['reference']['tolerance']:.2f}%" for r in runs for a in r["accuracy"]
                         if a["reference"] and "tolerance" in a["reference"]})
    if tolerances:
        notes[" pass"] = f"pass: relative drop within the tolerance ({', '.join(tolerances)})"
    header = ["runtime", "protocol", "metric", "ours", "reference", "reference source", "delta",
              "relative drop", "pass"]
    return Table("Accuracy vs reference", header, rows, list(notes.values()) + _figures_notes(runs, labels))


def _figure(key: str, value) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return DASH
    if key.startswith("num_") and float(value).is_integer():
        return str(int(value))
    return f"{value:.4f}"


def _figures_notes(runs, labels) -> list[str]:
    """Every figure of every accuracy block (`metrics`), one line per run and protocol, and what
    running_avg_* means when a block has them: the guide's reported figure (mean over the images
    of the running dataset-level value after each image) as opposed to the final value."""
    lines, running = [], False
    for run, label in zip(runs, labels):
        for acc in run["accuracy"]:
            figures = acc.get("metrics") or {}
            if not figures:
                continue
            running = running or any(k.startswith("running_avg_") for k in figures)
            lines.append(f"figures, {label}, {acc['name']}: "
                         + ", ".join(f"{k} {_figure(k, v)}" for k, v in figures.items()))
    if running:
        lines.append("running_avg_*: mean over the images of the running dataset-level value after "
                     "each image (what the guide's postprocess reports; depends on the image order); "
                     "the same names without running_avg_ are the final values over the whole dataset")
    return lines


def _per_class_tables(runs, labels) -> list[Table]:
    """One table per protocol with per-class entries: rows = classes (in the order the records
    list them), columns = the runs that have them (same labels as the other tables)."""
    protocols: list[str] = []
    for run in runs:
        for acc in run["accuracy"]:
            if acc.get("per_class") and acc["name"] not in protocols:
                protocols.append(acc["name"])
    tables = []
    for proto in protocols:
        columns, classes, notes = [], [], []
        for run, label in zip(runs, labels):
            acc = next((a for a in run["accuracy"] if a["name"] == proto and a.get("per_class")), None)
            if acc is None:
                continue
            values = {}
            for entry in acc["per_class"]:
                cls = str(entry.get("class", DASH))
                values[cls] = entry.get("iou")
                if cls not in classes:
                    classes.append(cls)
            columns.append((label, values))
            subset = _subset(run, acc["num_samples"])
            if subset:
                notes.append(f"{label}: {subset}, not comparable to the full set")
        rows = [[cls] + [_figure("iou", values.get(cls)) for _, values in columns] for cls in classes]
        tables.append(Table(f"Per-class IoU, protocol {proto}", ["class"] + [label for label, _ in columns],
                            rows, notes))
    return tables


def _perf_tables(runs, labels, scope: str, title: str) -> list[Table]:
    """The throughput table of a scope (batch sizes as rows, runs as columns, a "best batch" row)
    and, with more than one run, the table of each run's throughput over the first run's (across
    runs; apart, so that neither table outgrows the page)."""
    blocks = [{p["batch_size"]: p for p in r["perf"] if p["scope"] == scope} for r in runs]
    batch_sizes = sorted({bs for b in blocks for bs in b})
    if not batch_sizes:
        return []
    notes: list[str] = []

    def ok(i, bs):
        p = blocks[i].get(bs)
        return p if p and p["status"] == "ok" and p.get("throughput") is not None else None

    rows, ratio_rows = [], []
    for bs in batch_sizes:
        cells = []
        for i, label in enumerate(labels):
            p = blocks[i].get(bs)
            if p is None:
                cells.append(DASH)
            elif p["status"] != "ok":
                notes.append(f"[{len(notes) + 1}] {label}, batch {bs}: {p.get('error') or 'no reason given'}")
                cells.append(f"failed [{len(notes)}]")
            else:
                cells.append(_tput_cell(p))
        rows.append([str(bs)] + cells)
        ratio_rows.append([str(bs)] + [_ratio_cell(ok(i, bs), ok(0, bs)) for i in range(1, len(runs))])

    best = []
    for i in range(len(runs)):
        found = [ok(i, bs) for bs in batch_sizes if ok(i, bs)]
        best.append(max(found, key=lambda p: p["throughput"]) if found else None)  # ties: the smaller batch
    rows.append(["best batch"] + [_tput_cell(b, f" (bs {b['batch_size']})") if b else DASH for b in best])
    ratio_rows.append(["best batch"] + [_ratio_cell(best[i], best[0]) for i in range(1, len(runs))])
    tables = [Table(f"Throughput, {title} [samples/s]", ["batch size"] + labels, rows, notes + [UNCERTAINTY_NOTE])]
    if len(runs) > 1:
        tables.append(Table(f"Throughput ratio across runs, {title}: each run / {labels[0]}",
                            ["batch size"] + labels[1:], ratio_rows,
                            [f"each run's throughput over {labels[0]}'s at the same batch size (best batch: "
                             f"at each run's best); {ACROSS_RUNS_NOTE}"]))
    return tables


def _p50(lat: dict):
    return lat.get("p50", lat.get("median"))


def _latency_table(run, label) -> Table | None:
    """Per batch size and scope: the latency of one call (a batch) and, divided by the batch size,
    per sample (what the latency plot shows)."""
    rows, notes = [], []
    for p in sorted(run["perf"], key=lambda p: (p["batch_size"], p["scope"])):
        if p["status"] != "ok":
            notes.append(f"[{len(notes) + 1}] batch {p['batch_size']} {p['scope']}: {p.get('error') or 'no reason given'}")
            rows.append([str(p["batch_size"]), p["scope"], f"failed [{len(notes)}]"] + [DASH] * 8)
            continue
        lat, bs = p.get("latency_ms") or {}, p["batch_size"]
        batch = [lat.get("mean"), _p50(lat), lat.get("p90"), lat.get("p99"), lat.get("max")]
        sample = [None if v is None else v / bs for v in (_p50(lat), lat.get("p90"), lat.get("p99"))]
        rows.append([str(bs), p["scope"]] + [_f(v, 2) for v in batch + sample]
                    + [str(lat["count"]) if "count" in lat else DASH])
    if not rows:
        return None
    notes.append("ms/batch: one call's wall time (a batch of `batch size` samples); ms/sample: the same over the "
                 "batch size; calls: the timed calls")
    return Table(f"Latency per batch and per sample, {label} [ms]",
                 ["batch size", "scope", "mean ms/batch", "p50 ms/batch", "p90 ms/batch", "p99 ms/batch",
                  "max ms/batch", "p50 ms/sample", "p90 ms/sample", "p99 ms/sample", "calls"], rows, notes)


def _stage_table(run, label) -> Table | None:
    blocks = sorted((p for p in run["perf"] if p["scope"] == "pipeline" and p["status"] == "ok"),
                    key=lambda p: p["batch_size"])
    if not blocks:
        return None
    seen = [s for p in blocks for s in p.get("stages", {})]
    stages = [s for s in STAGE_ORDER if s in seen] + sorted({s for s in seen if s not in STAGE_ORDER})
    rows = [[str(p["batch_size"]), _tput_cell(p), str(p.get("workers", DASH))]
            + [_pct(p.get("stages", {}).get(s, {}).get("share")) for s in stages]
            + [_f(p.get("pipeline_vs_infer"), 2)] + _ceiling_cells(p) for p in blocks]
    notes = ["CPU ceiling/infer: the pipeline's throughput limit when the runtime's CPU time per sample "
             "(measured alone) and the read/preprocess/postprocess CPU time share the cores, over the "
             "infer-only throughput; below 1, overlapping cannot reach the infer-only rate on this machine.",
             "throughput ±: as in the throughput tables (95% interval; UNSTABLE when not within its tolerance)"]
    return Table(f"Pipeline stages, {label} (share of summed stage time)",
                 ["batch size", "throughput [samples/s]", "workers"] + [f"{s} %" for s in stages] + ["pipeline/infer"]
                 + ["infer CPU ms/sample", "other CPU ms/sample", "CPU ceiling/infer", "pipeline/ceiling"],
                 rows, notes)


def _ceiling_cells(p) -> list[str]:
    c = (p.get("cpu") or {}).get("ceiling")
    if not c:
        return [DASH] * 4
    return [_f(1000 * c["infer_cpu_s_per_sample"], 1), _f(1000 * c["other_cpu_s_per_sample"], 1),
            _f(c["vs_infer"], 2), _f(c.get("pipeline_vs_ceiling"), 2)]


def _op_table(run, label) -> Table | None:
    """`zoo run --profile`: where a call's time goes, per operator type and batch size."""
    rows = []
    for p in sorted((p for p in run["perf"] if p["scope"] == "infer_only" and p["status"] == "ok"),
                    key=lambda p: p["batch_size"]):
        prof = p.get("op_profile") or {}
        for r in prof.get("ops", []):
            rows.append([str(p["batch_size"]), r["op_type"], _f(r["ms_per_call"], 2), _pct(r["share"]),
                         _f(r["kernels_per_call"], 1),
                         _f(r.get("gflops"), 0) + (f" ({r['gflops_of']})" if r.get("gflops_of") else "")])
    if not rows:
        return None
    return Table(f"Operator profile, {label} (per call, the runtime's operator types after fusion)",
                 ["batch size", "operator", "ms", "share", "kernels", "GFLOP/s"], rows,
                 ["GFLOP/s: the ONNX graph's FLOPs of that operator type (Conv, ConvTranspose, Gemm/MatMul) over "
                  "its time; profiled in a session apart from the timed calls."])


def _cost_table(run, label) -> Table | None:
    """Achieved GFLOP/s per batch size against the fp32 peak measured in the same run, with how
    the timing ended and how sure the throughput is: its 95% interval (schema 1.11 `interval`:
    windows, half-width, stable, reason) or, in a record from 1.2 to 1.10, the stop-when-stable
    windows' spread (`stability`); older records have neither."""
    blocks = sorted((p for p in run["perf"] if p["scope"] == "infer_only" and p["status"] == "ok"),
                    key=lambda p: p["batch_size"])
    cost = (run.get("export") or {}).get("cost")
    peak = run["device"].get("fp32_peak")
    if not blocks or not (cost or any("interval" in p or "stability" in p for p in blocks)):
        return None
    rows, notes = [], []
    for p in blocks:
        u = _uncertainty(p)
        rows.append([str(p["batch_size"]), _tput_cell(p), _f(p.get("gflops"), 1),
                     _f(p.get("peak_gflops"), 0), _pct(p.get("peak_fraction")), _f(p.get("activation_gbytes_per_s"), 1),
                     _pct(p.get("bandwidth_fraction")), p.get("stopped_by", DASH),
                     DASH if u["windows"] is None else str(u["windows"]),
                     _pct(u["spread"]) if u["spread"] is not None else DASH,
                     {True: "yes", False: UNSTABLE}.get(u["stable"], DASH)])
        if u["stable"] is False and u["reason"]:
            notes.append(f"batch {p['batch_size']} {UNSTABLE}: {u['reason']}")
    if cost:
        notes.append(f"{cost['flops_per_sample'] / 1e9:.2f} GFLOP and {cost['params'] / 1e6:.2f} M parameters per "
                     f"sample ({cost.get('counted', 'from the ONNX graph')})")
    if peak:
        seen = peak.get("measurements")  # before 1.11: every reading of the run, the highest was the peak
        bound = (peak.get("isa_bound") or {}).get("gflops")
        notes.append(f"fp32 peak {peak['gflops']:.0f} GFLOP/s ({peak.get('kernel', peak['method'])}, {peak['threads']} "
                     "threads; " + (f"measured {min(seen):.0f}-{max(seen):.0f} in this run: the highest is the peak)"
                                    if seen else f"the best of {len(peak.get('candidates') or {}) or 1} kernels"
                                    + (", cached" if peak.get("cached") else "")
                                    + (f" {peak['measured_at'][:10]}" if peak.get("measured_at") else "") + ")")
                     + (f"; ISA bound {bound:.0f} GFLOP/s" if bound else "")
                     + (f"; memory copy {peak['memory']['gbytes_per_s']:.1f} GB/s ({peak['memory'].get('method', '')})"
                        if peak.get("memory") else ""))
    for p in blocks:
        if p.get("peak_note"):
            notes.append(f"batch {p['batch_size']} {p['scope']}: no fraction of peak: {p['peak_note']}")
    own = run["device"].get("precision_peak")
    if own:  # schema 1.7: a reduced-precision run's fractions are of its own precision's peak
        notes.append(f"{own['precision']} peak {own['gflops']:.0f} {_unit(own['precision'])} ({own.get('kernel', '')}): "
                     f"'peak used' and 'of peak' are of this precision's peak" if own.get("gflops") else
                     f"{own['precision']} peak unavailable ({own.get('unavailable', 'no reason given')}): no fraction")
    notes += ["samples/s ±: as in the throughput tables; windows: the complete timing windows the interval is "
              "over (before 1.11: the windows the stop-when-stable rule compared); window spread: (max - min) / "
              "mean of those windows, before 1.11 only; stable: the interval within its tolerance (before 1.11: "
              "the windows within theirs)"]
    return Table(f"Cost and stability, {label}", ["batch size", "samples/s", "GFLOP/s", "peak used", "of peak",
                                                   "activations GB/s", "of bandwidth", "stopped by", "windows",
                                                   "window spread", "stable"],
                 rows, notes)


def _new_axes(width: float = 7, height: float = 4):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig) -> bytes | None:
    if fig is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _yerr(points) -> list[list[float]] | None:
    """Error bars [below, above] from (x, y, low, high) points; 0 where a point has no interval."""
    if not any(lo is not None or hi is not None for _, _, lo, hi in points):
        return None
    return [[max(0.0, y - lo) if lo is not None else 0.0 for _, y, lo, _ in points],
            [max(0.0, hi - y) if hi is not None else 0.0 for _, y, _, hi in points]]


def _latency_plot(runs, labels, title: str) -> bytes | None:
    return _png(_latency_figure(runs, labels, title))


def _latency_figure(runs, labels, title: str):
    """Latency per sample (a call's latency over its batch size, as in the tables' ms/sample
    columns), infer only: one horizontal row per run and batch size, labelled `<run label>, bs N`
    (UNSTABLE after it when that throughput's interval is not stable): the min-max range as a line,
    p50 / p90 / p99 as markers, the axis from 0."""
    rows = []
    for i, (run, label) in enumerate(zip(runs, labels)):
        for p in sorted((p for p in run["perf"] if p["scope"] == "infer_only" and p["status"] == "ok"),
                        key=lambda p: p["batch_size"]):
            lat = p.get("latency_ms") or {}
            if _p50(lat) is None:
                continue
            bs = p["batch_size"]
            unstable = _uncertainty(p)["stable"] is False
            rows.append((f"{label}, bs {bs}" + (UNSTABLE_MARK if unstable else ""), f"C{i % 10}",
                         {k: lat[k] / bs for k in ("min", "max", "p90", "p99") if lat.get(k) is not None}
                         | {"p50": _p50(lat) / bs}))
    if not rows:
        return None
    from matplotlib.lines import Line2D

    markers = (("p50", "o"), ("p90", "s"), ("p99", "D"))
    fig, ax = _new_axes(8, 1.4 + 0.3 * len(rows))
    for y, (_, color, lat) in enumerate(rows):
        if "min" in lat and "max" in lat:
            ax.hlines(y, lat["min"], lat["max"], color=color, linewidth=2, alpha=0.6)
        for key, marker in markers:
            if key in lat:
                ax.plot([lat[key]], [y], marker=marker, color=color, linestyle="none", markersize=5,
                        markerfacecolor=color if key == "p50" else "white")
    grey = "0.35"  # the legend's keys in no run's colour
    keys = [Line2D([], [], color=grey, linewidth=2, alpha=0.6, label="min-max")] + [
        Line2D([], [], marker=m, color=grey, linestyle="none", markersize=5,
               markerfacecolor=grey if k == "p50" else "white", label=k) for k, m in markers]
    ax.set_yticks(range(len(rows)), [text for text, *_ in rows], fontsize="small")
    ax.set_ylim(len(rows) - 0.5, -0.5)  # the first run on top
    ax.set_xlim(left=0)
    ax.set_xlabel("latency per sample [ms] (one call's latency / batch size)")
    ax.set_title(title, pad=24)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(handles=keys, fontsize="small", loc="lower left", bbox_to_anchor=(0, 1.0), ncol=4, frameon=False,
              borderaxespad=0.2)
    return fig


# ---------------------------------------------------------------- precision (schema 1.7)

# the registry's precisions (zoo.runtimes), then a record's "mixed"; each with its plot marker
PRECISION_ORDER = (*PRECISIONS, "mixed")
PRECISION_MARKERS = dict(zip(PRECISIONS, "osD^"))
_unit = rate_unit


def _ok_block(run: dict, scope: str, bs: int) -> dict | None:
    return next((p for p in run["perf"] if p["scope"] == scope and p["batch_size"] == bs and p["status"] == "ok"), None)


def _tput(run: dict | None, scope: str, bs: int) -> float | None:
    p = _ok_block(run, scope, bs) if run else None
    return p.get("throughput") if p else None


def _failed(run: dict, scope: str, bs: int) -> bool:
    return any(p["scope"] == scope and p["batch_size"] == bs and p["status"] != "ok" for p in run["perf"])


def _fp32_runs(runs: list[dict]) -> dict[tuple, dict]:
    """(runtime, device type) -> that runtime's fp32 run in the result set (the latest started)."""
    out: dict[tuple, dict] = {}
    for r in sorted((r for r in runs if r["precision"] == "fp32" and status_of(r) == "ok"),
                    key=lambda r: r["timestamps"]["started"]):
        out[(r["runtime"]["name"], r["device"]["type"])] = r
    return out


def _comparable(run: dict, fp32: dict | None) -> bool:
    """The same weights over the same samples: accuracies that may be subtracted."""
    if fp32 is None:
        return False
    a, b = run["provenance"], fp32["provenance"]
    return (a["weights"]["sha256"] == b["weights"]["sha256"]
            and a["dataset"]["name"] == b["dataset"]["name"]
            and a["dataset"]["num_samples"] == b["dataset"]["num_samples"])


def _precision_delta(run: dict, fp32: dict | None) -> tuple[list[dict], str | None]:
    """(per protocol {name, metric, value, fp32, delta, relative_drop, passed}, where from): the
    run's own reduced_precision.delta (its fp32 pass over the same samples), else computed from
    the same runtime's fp32 record when it used the same weights and samples."""
    rp = run.get("reduced_precision")
    if rp and rp.get("delta"):
        return rp["delta"], "run"
    if not _comparable(run, fp32):
        return [], None
    by_name = {a["name"]: a for a in fp32["accuracy"]}
    out = []
    for a in run["accuracy"]:
        ref = by_name.get(a["name"])
        if ref is None:
            continue
        drop = (ref["value"] - a["value"]) / abs(ref["value"]) if ref["value"] else None
        tol = (a.get("reference") or {}).get("tolerance")
        out.append({"name": a["name"], "metric": a["metric"], "value": a["value"], "fp32": ref["value"],
                    "delta": a["value"] - ref["value"], "relative_drop": drop,
                    "passed": None if tol is None or drop is None else drop <= tol})
    return out, "result set"


def _delta_cell(delta: list[dict]) -> str:
    return "; ".join(f"{d['name']} {d['delta']:+.4f}" + (f" ({100 * d['relative_drop']:.2f}% drop)"
                                                          if d.get("relative_drop") is not None else "")
                     for d in delta) or DASH


def _precision_verdict(run: dict, delta: list[dict]) -> str:
    rp = run.get("reduced_precision")
    if rp:
        return f"{_verdict(rp['passed'])} ({rp['criterion']})"
    verdicts = [d["passed"] for d in delta if d.get("passed") is not None]
    return f"{_verdict(all(verdicts))} (accuracy delta, result set)" if verdicts else DASH


def _speedup_cell(run: dict) -> str:
    """The run's speed-up over fp32 (the one definition): reduced_precision.fp32_baseline.speedup,
    the reduced-precision and fp32 runtimes timed in interleaved windows in the same process, with
    its 95% interval (speedup_interval, schema 1.11), in zoo.stats.figure's words: '2.50 ±1.2% (2.47-2.53)'. An older record's
    speedup (or, before it had one, its infer-only throughput over the fp32 pass it timed
    itself) was not interleaved: shown so, without an interval."""
    base = (run.get("reduced_precision") or {}).get("fp32_baseline") or {}
    si, speedup = base.get("speedup_interval"), base.get("speedup")
    if si and speedup is not None:
        span = (f" ({si['low']:.2f}-{si['high']:.2f})" if si.get("low") is not None and si.get("high") is not None
                else "")
        return _with(figure(speedup, si.get("half_width"), si.get("stable") is not False, digits=2), span)
    if speedup is None and "speedup" not in base:
        infer, fp32 = _tput(run, "infer_only", base.get("batch_size")), base.get("throughput_samples_per_s")
        speedup = infer / fp32 if infer is not None and fp32 else None
    return DASH if speedup is None else f"{speedup:.2f} (not interleaved)"


def _precision_rows(run: dict, label: str, fp32: dict | None) -> list[list[str]]:
    """One row per batch size of `run`: throughputs; on the row of the in-run fp32 baseline's batch
    size the speed-up over fp32 (same run, interleaved); the ratios to the same runtime's fp32 run
    in the result set (across runs); and, on the row of the batch size its accuracy was measured
    at, delta, fidelity and verdict."""
    reduced = run["precision"] != "fp32"
    rp = run.get("reduced_precision") or {}
    base = rp.get("fp32_baseline") or {}
    delta, _ = _precision_delta(run, fp32) if reduced else ([], None)
    acc_bs = base.get("batch_size") or next((a["batch_size"] for a in run["accuracy"]), None)
    rows = []
    for bs in sorted({p["batch_size"] for p in run["perf"]}):
        infer, pipe = _ok_block(run, "infer_only", bs), _ok_block(run, "pipeline", bs)
        shown = [_tput_cell(p) if p and p.get("throughput") is not None else
                 "failed" if _failed(run, scope, bs) else DASH
                 for p, scope in ((infer, "infer_only"), (pipe, "pipeline"))]
        speedup = _speedup_cell(run) if reduced and base and base.get("batch_size") == bs else DASH
        p = infer or {}
        frac = _pct(p.get("peak_fraction")) + f" of {run['precision']}" if p.get("peak_fraction") is not None else DASH
        first = bs == acc_bs
        fid = "; ".join(f"{f['metric']} {f['value']:.4f}" for f in rp.get("fidelity") or []) or DASH
        across = [_ratio_cell(mine, _ok_block(fp32, scope, bs) if fp32 else None) if reduced else
                  "base" if mine and mine.get("throughput") is not None else DASH
                  for mine, scope in ((infer, "infer_only"), (pipe, "pipeline"))]
        rows.append([label, run["precision"], str(bs), *shown, speedup, *across,
                     _delta_cell(delta) if reduced and first else DASH,
                     fid if reduced and first else DASH, frac,
                     _precision_verdict(run, delta) if reduced and first else DASH])
    return rows


def _precision_table(runs, labels) -> Table | None:
    """Runtime x precision x batch size (only when some run is not fp32): throughput, the speed-up
    over fp32 (the run's own, timed interleaved with fp32 in the same process), the ratio to the
    same runtime's fp32 run in this result set (across runs: not called a speed-up), the accuracy
    delta to fp32, the fidelity to fp32's predictions, the fraction of the precision's own GEMM
    peak, pass/fail."""
    if all(r["precision"] == "fp32" for r in runs):
        return None
    fp32 = _fp32_runs(runs)
    order = sorted(range(len(runs)), key=lambda i: (runs[i]["runtime"]["name"], runs[i]["device"]["type"],
                                                   PRECISION_ORDER.index(runs[i]["precision"])
                                                   if runs[i]["precision"] in PRECISION_ORDER else 99))
    rows, notes = [], []
    for i in order:
        run = runs[i]
        ref = fp32.get((run["runtime"]["name"], run["device"]["type"]))
        rows += _precision_rows(run, labels[i], ref)
        if run["precision"] != "fp32":
            if ref is None:
                notes.append(f"{labels[i]}: no {run['runtime']['name']} fp32 run in this result set")
            elif not run.get("reduced_precision") and not _comparable(run, ref):
                notes.append(f"{labels[i]}: the fp32 run used other weights or samples: no accuracy delta")
            si = ((run.get("reduced_precision") or {}).get("fp32_baseline") or {}).get("speedup_interval")
            if si:
                notes.append(f"{labels[i]}: speed-up vs fp32 over {si.get('rounds', DASH)} interleaved rounds "
                             f"({si.get('method', 'no method given')})")
            own = run["device"].get("precision_peak") or {}
            if own.get("gflops"):
                notes.append(f"{labels[i]}: {own['precision']} peak {own['gflops']:.0f} {_unit(own['precision'])} "
                             f"({own.get('kernel', '')})")
    notes += ["speed-up vs fp32: the run's infer-only throughput over fp32's, the two runtimes timed in "
              "interleaved windows in the same process (reduced_precision.fp32_baseline.speedup; ± and range: its "
              "95% interval, speedup_interval); on the row of that batch size only. (not interleaved): a record "
              "before schema 1.11, its fp32 pass timed apart from its own figures: no interval",
              "x fp32 run, infer / pipeline (across runs): this run's throughput over the same runtime's fp32 run "
              f"in this result set at the same batch size; {ACROSS_RUNS_NOTE}",
              UNCERTAINTY_NOTE,
              "accuracy delta (vs fp32), fidelity (the fp32 predictions as ground truth) and pass: on the row of "
              "the batch size the accuracy was measured at; delta from the run's own fp32 pass, else from the "
              "fp32 run in this result set (same weights and samples)",
              "of peak: infer-only GFLOP/s (int8: GOP/s) over the GEMM peak of the run's own precision, "
              "measured in the run (device.precision_peak; fp32: device.fp32_peak)"]
    header = ["run", "precision", "batch size", "infer [samples/s]", "pipeline [samples/s]", "speed-up vs fp32",
              "x fp32 run, infer (across runs)", "x fp32 run, pipeline (across runs)", "accuracy delta vs fp32",
              "fidelity", "of peak", "pass"]
    return Table("Precision: throughput, speed-up over fp32, accuracy", header, rows, notes)


def _best_infer(run: dict) -> dict | None:
    """The infer-only block with the highest throughput (ties: the smaller batch)."""
    ok = sorted((p for p in run["perf"] if p["scope"] == "infer_only" and p["status"] == "ok" and "throughput" in p),
                key=lambda p: p["batch_size"])
    return max(ok, key=lambda p: p["throughput"]) if ok else None


def _quality(run: dict, fidelity: bool) -> float | None:
    """The plot's y: the first protocol's accuracy, or the fidelity to fp32 (fp32 runs: 1)."""
    if not fidelity:
        return run["accuracy"][0]["value"] if run["accuracy"] else None
    if run["precision"] == "fp32":
        return 1.0
    fid = (run.get("reduced_precision") or {}).get("fidelity") or []
    return fid[0]["value"] if fid else None


def _precision_plot(runs, labels, title: str) -> bytes | None:
    return _png(_precision_figure(runs, labels, title))


def _quality_delta(run: dict, fp32: dict | None, fidelity: bool) -> float | None:
    """The plot point's difference to fp32: its first protocol's accuracy delta (the run's own fp32
    pass, else the same runtime's fp32 run in the result set), or its fidelity - 1."""
    if run["precision"] == "fp32":
        return None
    if fidelity:
        y = _quality(run, True)
        return None if y is None else y - 1.0
    if not run["accuracy"]:
        return None
    delta, _ = _precision_delta(run, fp32)
    return next((d["delta"] for d in delta if d["name"] == run["accuracy"][0]["name"]), None)


def _precision_figure(runs, labels, title: str):
    """Accuracy (or, when a run judged itself by fidelity -- no trained weights -- the fidelity to
    fp32) against the infer-only throughput at the best batch size: one point per run (colour: the
    runtime, marker: the precision), its 95% interval as a horizontal bar; the legend names each
    point by its run label with the batch size, the value and its delta to fp32 (UNSTABLE when the
    throughput's interval is not). The y axis does not exaggerate: it spans the points and the
    published reference (dashed) with a margin of 3 points below and 1 above (0.03 and 0.01 of a
    fraction). None when every run is fp32."""
    if all(r["precision"] == "fp32" for r in runs):
        return None
    fidelity = any((r.get("reduced_precision") or {}).get("criterion") == "fidelity_to_fp32" for r in runs)
    fp32 = _fp32_runs(runs)
    runtimes = sorted({r["runtime"]["name"] for r in runs})
    points = []
    for run, label in zip(runs, labels):
        best, y = _best_infer(run), _quality(run, fidelity)
        if best is None or y is None:
            continue
        delta = _quality_delta(run, fp32.get((run["runtime"]["name"], run["device"]["type"])), fidelity)
        u = _uncertainty(best)
        text = (f"{label} (bs {best['batch_size']}): {y:.4f}" + (f", {delta:+.4f} vs fp32" if delta is not None else "")
                + _mark(u["stable"]))
        points.append((run, best["throughput"], y, u, text))
    if not points:
        return None
    fig, ax = _new_axes(8, 4.5)
    for run, x, y, u, text in points:
        color = f"C{runtimes.index(run['runtime']['name']) % 10}"
        marker = PRECISION_MARKERS.get(run["precision"], "x")
        ax.plot([x], [y], marker=marker, color=color, linestyle="none", markersize=7, label=text)
        xerr = _yerr([(x, x, u["low"], u["high"])])
        if xerr:
            ax.errorbar([x], [y], xerr=xerr, fmt="none", ecolor=color, capsize=3)
    ys = [y for _, _, y, _, _ in points]
    metric = runs[0]["accuracy"][0] if runs[0]["accuracy"] else {}
    published = None if fidelity else (metric.get("reference") or {}).get("value")
    if published is not None:
        ax.axhline(published, color="0.4", linestyle="--", linewidth=1, label=f"published {published:.4f}")
        ys.append(published)
    margin = 0.03 if max(ys) <= 1.0 else 3.0  # a fraction, or a percentage
    ax.set_ylim(min(ys) - margin, max(ys) + margin / 3)
    ax.set_xlim(left=0, right=1.15 * max(x + ((u["high"] or x) - x) for _, x, _, u, _ in points))
    ax.set_xlabel("throughput at the best batch size, infer only [samples/s]")
    ax.set_ylabel("fidelity to fp32 predictions" if fidelity
                  else f"{metric.get('name', '')} {metric.get('metric', 'accuracy')}".strip())
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    return fig


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


def _plot(runs, labels, title: str) -> bytes | None:
    return _png(_throughput_figure(runs, labels, title))


def _throughput_figure(runs, labels, title: str):
    """Throughput against batch size per run and scope, each point's 95% interval as an error bar;
    a point whose interval is not stable is ringed (one legend entry says UNSTABLE: rings, unlike
    a word at each point, do not pile up where several runs' points meet)."""
    from matplotlib.ticker import NullLocator

    fig, ax = _new_axes(8, 4.5)
    ticks, unstable = set(), []
    for i, (run, label) in enumerate(zip(runs, labels)):
        for scope, style, marker in (("infer_only", "-", "o"), ("pipeline", "--", "s")):
            blocks = sorted((p for p in run["perf"]
                             if p["scope"] == scope and p["status"] == "ok" and "throughput" in p),
                            key=lambda p: p["batch_size"])
            if not blocks:
                continue
            pts = [(p["batch_size"], p["throughput"], _uncertainty(p)["low"], _uncertainty(p)["high"]) for p in blocks]
            ticks.update(bs for bs, *_ in pts)
            ax.plot([x for x, *_ in pts], [y for _, y, *_ in pts], linestyle=style, marker=marker,
                    color=f"C{i % 10}", label=f"{label}, {scope.replace('_', ' ')}")
            yerr = _yerr(pts)
            if yerr:
                ax.errorbar([x for x, *_ in pts], [y for _, y, *_ in pts], yerr=yerr, fmt="none",
                            ecolor=f"C{i % 10}", capsize=3)
            unstable += [(p["batch_size"], p["throughput"]) for p in blocks if _uncertainty(p)["stable"] is False]
    if not ticks:
        return None
    if unstable:
        ax.plot([x for x, _ in unstable], [y for _, y in unstable], linestyle="none", marker="o", markersize=13,
                markerfacecolor="none", markeredgecolor="#b35c00", markeredgewidth=1.5,
                label=f"{UNSTABLE} (ringed): interval not within its tolerance")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_ylim(bottom=0)
    ax.set_xlabel("batch size")
    ax.set_ylabel("throughput [samples/s]")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    return fig


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


# ---------------------------------------------------------------- CSV of every run

CSV_COLUMNS = ("model", "run_id", "run_status", "runtime", "runtime_version", "precision", "shards", "device_type",
               "device", "isa", "batch_size", "scope", "status", "throughput_samples_per_s", "interval_low",
               "interval_high", "interval_half_width", "stable", "latency_p50_ms_per_batch",
               "latency_p90_ms_per_batch", "latency_p99_ms_per_batch", "latency_p50_ms_per_sample",
               "latency_p90_ms_per_sample", "latency_p99_ms_per_sample", "accuracy_protocol", "accuracy_metric",
               "accuracy_value", "accuracy_published", "error", "file")


def csv_rows(records: list[dict], files: list[str | None] | None = None) -> list[dict]:
    """One row per run x batch size x scope (a run without perf blocks: one row without them):
    the run's facts, the throughput with its 95% interval (low, high, relative half-width; before
    schema 1.11 none) and stable (the interval's, or the older stop-when-stable windows'), the
    latency p50/p90/p99 per batch and per sample, the first accuracy protocol with its published
    value. Empty cells where a figure does not exist."""
    files = files or [None] * len(records)
    rows = []
    for run, file in zip(records, files):
        acc = run["accuracy"][0] if run["accuracy"] else {}
        dev = run["device"]
        common = {"model": run["model"]["name"], "run_id": run["run_id"], "run_status": status_of(run),
                  "runtime": run["runtime"]["name"], "runtime_version": run["runtime"]["version"],
                  "precision": run["precision"], "shards": _shards(run), "device_type": dev["type"],
                  "device": dev["name"], "isa": " ".join((dev.get("details") or {}).get("isa") or []),
                  "accuracy_protocol": acc.get("name"), "accuracy_metric": acc.get("metric"),
                  "accuracy_value": acc.get("value"), "accuracy_published": (acc.get("reference") or {}).get("value"),
                  "file": file}
        blocks = sorted(run["perf"], key=lambda p: (p["batch_size"], p["scope"])) or [None]
        for p in blocks:
            row = dict(common)
            if p is not None:
                u, lat, bs = _uncertainty(p), p.get("latency_ms") or {}, p["batch_size"]
                batch = {"p50": _p50(lat), "p90": lat.get("p90"), "p99": lat.get("p99")}
                row.update(batch_size=bs, scope=p["scope"], status=p["status"], error=p.get("error"),
                           throughput_samples_per_s=p.get("throughput"), interval_low=u["low"],
                           interval_high=u["high"], interval_half_width=u["half_width"], stable=u["stable"])
                for k, v in batch.items():
                    row[f"latency_{k}_ms_per_batch"] = v
                    row[f"latency_{k}_ms_per_sample"] = None if v is None else v / bs
            rows.append(row)
    return rows


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return round(value, 6) if isinstance(value, float) else value


def to_csv(records: list[dict], files: list[str | None] | None = None) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(records, files):
        writer.writerow({k: _csv_value(row.get(k)) for k in CSV_COLUMNS})
    return buf.getvalue()


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
