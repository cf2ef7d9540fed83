"""Turn a folder of result JSONs into a guide-style report: report.md, report.html and plots.

The report follows the Ascend ModelZoo inference guides: per model an accuracy table
(ours vs the reference value, delta, relative drop, pass; under it every figure of each
protocol, e.g. a guide's running average next to the final value), per-class IoU tables (one
per protocol that has per-class figures: classes as rows, runs as columns), throughput tables
with batch sizes as rows and runs as columns (plus across-runs ratio columns and a "best batch"
row), latency and pipeline-stage tables per run, a throughput-vs-batch-size plot, and the export
facts. When a model's runs include a reduced precision (bf16, fp16, int8), a precision table
(runtime x precision x batch size: throughput, the run's interleaved speed-up over fp32, the ratio
to the same runtime's fp32 run across runs, accuracy delta and fidelity to fp32, fraction of that
precision's own GEMM peak, pass) and an accuracy-vs-throughput plot (one point per
runtime:precision) follow.

The content is built once as a list of blocks (headings, paragraphs, tables, images) and
rendered twice: to Markdown and to a single self-contained HTML page (plots embedded as
base64 PNGs; the PNG files are also written next to the page).

Each run's status is a badge (OK, INVALID, FAILED: zoo.checks.status_of, so a record from before
schema 1.10 that said ok over a failed verify is INVALID too); an invalid run's label carries
[INVALID] in every table and plot, its accuracy cells say so and its reason is a warning: its
figures are never shown as a sound run's. Records are read through runner.validate (schema and
the record checker's rules: a record that breaks one stops the report, exit 2).

Every throughput carries its uncertainty: "41.2 ±1.1%" is the relative half-width of its 95%
interval (perf[].interval, schema 1.11); a record without one shows "±?" (or, from the older
stop-when-stable timing, "(spread 1.2%)": the windows' spread, not an interval). A figure whose
interval is not stable carries [UNSTABLE] in every table and plot, and the run's summary lists
them. A speed-up is only ever the same-run interleaved ratio (reduced_precision.fp32_baseline
.speedup with its speedup_interval); ratios between two runs are labelled "across runs", their
uncertainty both runs' relative half-widths added in quadrature.

    python -m runner.report RESULTS_DIR [--out DIR]
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from runner.validate import ResultError, load_results
from zoo.checks import invalid_reason, status_of

STAGE_ORDER = ("read", "preprocess", "infer", "postprocess")
SCOPES = (("infer_only", "inference only (runtime call on a resident batch)"),
          ("pipeline", "pipeline (read + preprocess + infer + postprocess over the dataset)"))
DASH = "—"
NUMBER = re.compile(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?%?( ±(\d+(\.\d+)?%|\?))?( \(.*\))?( \[UNSTABLE\])?"
                    r"|—|failed \[\d+\]")  # right-aligned in HTML
BADGES = {"ok": "OK", "invalid": "INVALID", "failed": "FAILED"}
INVALID = " [INVALID]"
UNSTABLE = "UNSTABLE"
UNSTABLE_MARK = f" [{UNSTABLE}]"  # after a figure whose interval is not stable (a badge in HTML)
UNCERTAINTY_NOTE = ("±: relative half-width of the throughput's 95% confidence interval over its timing windows "
                    "(perf[].interval, schema 1.11); ±?: no interval (a record before 1.11, or fewer than 3 windows); "
                    "(spread x%): a record before 1.11 timed until stable: the spread of its last windows, not an "
                    "interval; [UNSTABLE]: the interval is wider than its tolerance or has too few windows")
ACROSS_RUNS_NOTE = ("across runs: the ratio of two figures measured in different runs (not a speed-up, which is only "
                    "the same-run interleaved ratio); its ± is both figures' relative half-widths added in quadrature "
                    "(±? when either has no interval), [UNSTABLE] when either figure is")


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


# A block is one of: ("h1"|"h2"|"h3", text), ("p", text), ("warn", text),
# ("table", Table), ("img", alt, file name, png bytes).
Block = tuple


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
    """'±1.1%' from a relative half-width; '±?' when there is none (never a made-up one)."""
    if half_width is None:
        return "±?"
    pct = 100 * half_width
    return f"±{pct:.1f}%" if pct >= 0.1 or pct == 0 else f"±{pct:.2f}%"


def _unc_text(u: dict) -> str:
    if u["kind"] == "spread" and u["spread"] is not None:
        return f"(spread {_pct(u['spread'])})"
    return _pm(u["half_width"])


def _mark(*unstable) -> str:
    return UNSTABLE_MARK if any(s is False for s in unstable) else ""


def _tput_cell(p: dict, extra: str = "") -> str:
    """A throughput with its uncertainty: '41.2 ±1.1%', '41.2 ±?', '41.2 (spread 1.2%)'; `extra`
    (e.g. ' (bs 16)') after it; [UNSTABLE] last when its interval is not stable."""
    u = _uncertainty(p)
    return f"{_f(p.get('throughput'), 1)} {_unc_text(u)}{extra}{_mark(u['stable'])}"


def _ratio_cell(a: dict | None, b: dict | None) -> str:
    """a's throughput over b's, measured in different runs: the ratio with both relative
    half-widths added in quadrature (±? when either has no interval)."""
    ta, tb = (a or {}).get("throughput"), (b or {}).get("throughput")
    if ta is None or not tb:
        return DASH
    ua, ub = _uncertainty(a), _uncertainty(b)
    hw = (math.hypot(ua["half_width"], ub["half_width"])
          if ua["half_width"] is not None and ub["half_width"] is not None else None)
    return f"{ta / tb:.2f} {_pm(hw)}{_mark(ua['stable'], ub['stable'])}"


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
            out.append(("warn", f"{label}: {UNSTABLE}: " + "; ".join(items)))
        kinds = {_uncertainty(p)["kind"] for p in run["perf"] if p["status"] == "ok"}
        if kinds - {"interval"}:
            how = (" or with the window spread of its stop-when-stable timing" if "spread" in kinds else "")
            out.append(("p", f"{label}: no confidence interval in this record (schema {run['schema_version']}, "
                             f"before 1.11): its throughputs are shown ±?{how}"))
    return out


def _compact(value) -> str:
    if isinstance(value, list):
        return ",".join(_compact(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


# ---------------------------------------------------------------- content

def _labels(runs: list[dict]) -> list[str]:
    """`<runtime> <device type>` (`... <precision>` when the runs differ in precision, `... N shards`
    for a sharded run), with the run_id added when two runs would share a label."""
    several = len({r["precision"] for r in runs}) > 1
    base = [f"{r['runtime']['name']} {r['device']['type']}" + (f" {r['precision']}" if several else "")
            + (f" {r['sharding']['count']} shards" if r.get("sharding") else "") for r in runs]
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


def _perf_table(runs, labels, scope: str, title: str) -> Table | None:
    blocks = [{p["batch_size"]: p for p in r["perf"] if p["scope"] == scope} for r in runs]
    batch_sizes = sorted({bs for b in blocks for bs in b})
    if not batch_sizes:
        return None
    ratios = [f"{labels[i]}/{labels[0]} across runs" for i in range(1, len(runs))]
    notes: list[str] = []

    def ok(i, bs):
        p = blocks[i].get(bs)
        return p if p and p["status"] == "ok" and p.get("throughput") is not None else None

    rows = []
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
        cells += [_ratio_cell(ok(i, bs), ok(0, bs)) for i in range(1, len(runs))]
        rows.append([str(bs)] + cells)

    best = []
    for i in range(len(runs)):
        found = [ok(i, bs) for bs in batch_sizes if ok(i, bs)]
        best.append(max(found, key=lambda p: p["throughput"]) if found else None)  # ties: the smaller batch
    rows.append(["best batch"] + [_tput_cell(b, f" (bs {b['batch_size']})") if b else DASH for b in best]
                + [_ratio_cell(best[i], best[0]) for i in range(1, len(runs))])
    notes += [UNCERTAINTY_NOTE] + ([f"ratio columns: each run's throughput over the first run's; {ACROSS_RUNS_NOTE}"]
                                   if ratios else [])
    return Table(f"Throughput, {title} [samples/s]", ["batch size"] + labels + ratios, rows, notes)


def _latency_table(run, label) -> Table | None:
    rows, notes = [], []
    for p in sorted(run["perf"], key=lambda p: (p["batch_size"], p["scope"])):
        if p["status"] != "ok":
            notes.append(f"[{len(notes) + 1}] batch {p['batch_size']} {p['scope']}: {p.get('error') or 'no reason given'}")
            rows.append([str(p["batch_size"]), p["scope"], f"failed [{len(notes)}]"] + [DASH] * 5)
            continue
        lat = p.get("latency_ms") or {}
        rows.append([str(p["batch_size"]), p["scope"]] + [_f(lat.get(k), 2) for k in
                                                          ("mean", "median", "p90", "p99", "max")]
                    + [str(lat["count"]) if "count" in lat else DASH])
    if not rows:
        return None
    return Table(f"Latency per batch, {label} [ms]",
                 ["batch size", "scope", "mean", "median", "p90", "p99", "max", "calls"], rows, notes)


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
             "throughput ±: as in the throughput tables (95% interval; ±? none; [UNSTABLE] not within its tolerance)"]
    return Table(f"Pipeline stages, {label} (share of summed stage time)",
                 ["batch size", "throughput", "workers"] + [f"{s} %" for s in stages] + ["pipeline/infer"]
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


def _new_axes():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=110)
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
    """Per run and batch size (infer_only): min-max range, p50 / p90 / p99 markers; a batch size
    whose throughput interval is not stable carries [UNSTABLE] under its label."""
    fig, ax = _new_axes()
    xt, xl, x = [], [], 0
    for i, (run, label) in enumerate(zip(runs, labels)):
        for p in sorted((p for p in run["perf"] if p["scope"] == "infer_only" and p["status"] == "ok"),
                        key=lambda p: p["batch_size"]):
            lat = p.get("latency_ms") or {}
            if not lat:
                continue
            per = p["batch_size"]
            ax.vlines(x, lat["min"] / per, lat["max"] / per, color=f"C{i % 10}", linewidth=2)
            for key, marker in (("median", "o"), ("p90", "^"), ("p99", "v")):
                ax.plot([x], [lat[key] / per], marker=marker, color=f"C{i % 10}", linestyle="none",
                        label=key if x == 0 else None)
            xt.append(x)
            unstable = _uncertainty(p)["stable"] is False
            xl.append(f"{label}\nbs{per}" + ("\n" + UNSTABLE_MARK.strip() if unstable else ""))
            x += 1
    if not xt:
        return None
    ax.set_xticks(xt, xl, fontsize="x-small")
    ax.set_ylabel("latency per sample [ms] (min-max, p50, p90, p99)")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return fig


# ---------------------------------------------------------------- precision (schema 1.7)

PRECISION_ORDER = ("fp32", "bf16", "fp16", "int8", "mixed")


def _unit(precision: str) -> str:
    return "GOP/s" if precision == "int8" else "GFLOP/s"


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
    its 95% interval (speedup_interval, schema 1.11): '2.50 ±1.2% (2.47-2.53)'. An older record's
    speedup (or, before it had one, its infer-only throughput over the fp32 pass it timed
    itself) was not interleaved: shown so, without an interval."""
    base = (run.get("reduced_precision") or {}).get("fp32_baseline") or {}
    si, speedup = base.get("speedup_interval"), base.get("speedup")
    if si and speedup is not None:
        span = (f" ({si['low']:.2f}-{si['high']:.2f})" if si.get("low") is not None and si.get("high") is not None
                else "")
        return f"{speedup:.2f} {_pm(si.get('half_width'))}{span}{_mark(si.get('stable'))}"
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
    names = [f"{r['runtime']['name']} {r['device']['type']}" for r in runs]
    keys = [(n, r["precision"]) for n, r in zip(names, runs)]
    names = [f"{n} ({r['run_id']})" if keys.count(k) > 1 else n for n, k, r in zip(names, keys, runs)]
    names = [n + (INVALID if status_of(r) == "invalid" else "") for n, r in zip(names, runs)]
    rows, notes = [], []
    for i in order:
        run = runs[i]
        ref = fp32.get((run["runtime"]["name"], run["device"]["type"]))
        rows += _precision_rows(run, names[i], ref)
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
    header = ["runtime", "precision", "batch size", "infer/s", "pipeline/s", "speed-up vs fp32",
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


def _precision_plot(runs, title: str) -> bytes | None:
    return _png(_precision_figure(runs, title))


def _precision_figure(runs, title: str):
    """Accuracy (or, when a run judged itself by fidelity -- no trained weights -- the fidelity to
    fp32) against the infer-only throughput at the best batch size: one labelled point per
    runtime:precision, its 95% interval as a horizontal bar and [UNSTABLE] in its label when the
    interval is not stable. None when every run is fp32."""
    if all(r["precision"] == "fp32" for r in runs):
        return None
    fidelity = any((r.get("reduced_precision") or {}).get("criterion") == "fidelity_to_fp32" for r in runs)
    fig, ax = _new_axes()
    runtimes = sorted({r["runtime"]["name"] for r in runs})
    drawn = 0
    for run in runs:
        best, y = _best_infer(run), _quality(run, fidelity)
        if best is None or y is None:
            continue
        color = f"C{runtimes.index(run['runtime']['name']) % 10}"
        marker = {"fp32": "o", "bf16": "s", "fp16": "D", "int8": "^"}.get(run["precision"], "x")
        x, u = best["throughput"], _uncertainty(best)
        ax.plot([x], [y], marker=marker, color=color, linestyle="none")
        xerr = _yerr([(x, x, u["low"], u["high"])])
        if xerr:
            ax.errorbar([x], [y], xerr=xerr, fmt="none", ecolor=color, capsize=3)
        ax.annotate(f"{run['runtime']['name']}:{run['precision']} (bs {best['batch_size']}){_mark(u['stable'])}",
                    (x, y), textcoords="offset points", xytext=(5, 5), fontsize="x-small")
        drawn += 1
    if not drawn:
        return None
    metric = runs[0]["accuracy"][0] if runs[0]["accuracy"] else {}
    ax.set_xlabel("throughput at the best batch size, infer only [samples/s]")
    ax.set_ylabel("fidelity to fp32 predictions" if fidelity else f"{metric.get('name', '')} {metric.get('metric', 'accuracy')}")
    ax.set_xlim(left=0)
    ax.margins(x=0.2, y=0.2)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
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
        out.append(("warn", f"{text}; LIMITED RUN {subset}: numbers are not comparable to the full set")
                   if subset else ("p", f"{text}; full run"))
    return out


def _run_facts(run, label) -> str:
    exp = run["export"]
    if exp is None:
        export = "no export"
    else:
        par = exp["parity"]
        export = (f"export opset {exp['opset']}, checker {exp['checker']}, parity max_rel_diff "
                  f"{par['max_rel_diff']:.2g} ({par['candidate']} vs {par['reference']}, bs {par['batch_size']}, "
                  f"{'passed' if par['passed'] else 'FAILED'})")
    ver = run.get("verify")  # schema 1.6: the runtime under test against PyTorch
    if ver:
        export += (f"; verify {ver['candidate']} vs PyTorch: max_rel_diff {ver['max_rel_diff']:.2g}, "
                   f"{ver.get('decision_flips', 0)} decision flips, {'passed' if ver['passed'] else 'FAILED'}")
    settings = ", ".join(f"{k}={_compact(v)}" for k, v in run["runtime"]["settings"].items()) or "defaults"
    dev = run["device"]
    cores = f" ({dev['cores']} cores)" if dev.get("cores") else ""
    return (f"{label}: {run['runtime']['name']} {run['runtime']['version']}, {run['precision']}, "
            f"{dev['name']}{cores}; {export}; settings: {settings}")


def _plot(runs, labels, title: str) -> bytes | None:
    return _png(_throughput_figure(runs, labels, title))


def _throughput_figure(runs, labels, title: str):
    """Throughput against batch size per run and scope, each point's 95% interval as an error bar;
    a point whose interval is not stable is labelled UNSTABLE."""
    from matplotlib.ticker import NullLocator

    fig, ax = _new_axes()
    ticks = set()
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
                    color=f"C{i % 10}", label=f"{label}, {scope}")
            yerr = _yerr(pts)
            if yerr:
                ax.errorbar([x for x, *_ in pts], [y for _, y, *_ in pts], yerr=yerr, fmt="none",
                            ecolor=f"C{i % 10}", capsize=3)
            for p in blocks:
                if _uncertainty(p)["stable"] is False:
                    ax.annotate(UNSTABLE, (p["batch_size"], p["throughput"]), textcoords="offset points",
                                xytext=(4, -10), fontsize="x-small", color="#b35c00")
    if not ticks:
        return None
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_ylim(bottom=0)
    ax.set_xlabel("batch size")
    ax.set_ylabel("throughput [samples/s]")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return fig


def _model_section(name: str, runs: list[dict]) -> list[Block]:
    labels = _labels(runs)
    m = runs[0]["model"]
    variants = sorted({r["model"]["variant"] for r in runs})
    blocks: list[Block] = [("h2", f"{name}: {m['title']}"),
                           ("p", f"{len(runs)} run(s); variant {', '.join(variants) or DASH}")]
    blocks += [("warn", f"{label}: run {_badge(r)}: {r['error'] or invalid_reason(r) or 'no reason given'}"
                        + ("; its figures are shown marked, not as a sound run's" if status_of(r) == "invalid" else ""))
               for r, label in zip(runs, labels) if status_of(r) != "ok"]
    blocks += _timing_lines(runs, labels)
    blocks += _provenance_lines(runs, labels)
    blocks += [("h3", "Accuracy"), ("table", _accuracy_table(runs, labels))]
    blocks += [("table", t) for t in _per_class_tables(runs, labels)]
    blocks.append(("h3", "Performance"))
    for scope, title in SCOPES:
        table = _perf_table(runs, labels, scope, title)
        if table:
            blocks.append(("table", table))
    png = _plot(runs, labels, f"{name}: throughput vs batch size")
    if png:
        blocks.append(("img", f"{name} throughput vs batch size", f"{name}_throughput.png", png))
    png = _latency_plot(runs, labels, f"{name}: latency distribution (infer only)")
    if png:
        blocks.append(("img", f"{name} latency distribution", f"{name}_latency.png", png))
    for run, label in zip(runs, labels):
        blocks += [("table", t) for t in (_latency_table(run, label), _cost_table(run, label),
                                          _stage_table(run, label), _op_table(run, label)) if t]
    table = _precision_table(runs, labels)
    if table:
        blocks += [("h3", "Precision"), ("table", table)]
        png = _precision_plot(runs, f"{name}: accuracy vs throughput per runtime:precision")
        if png:
            blocks.append(("img", f"{name} accuracy vs throughput", f"{name}_precision.png", png))
    blocks += [("h3", "Export and runtime settings")] + [("p", _run_facts(r, l)) for r, l in zip(runs, labels)]
    return blocks


def build_report(records: list[dict], source: str) -> list[Block]:
    by_model: dict[str, list[dict]] = {}
    for rec in records:
        by_model.setdefault(rec["model"]["name"], []).append(rec)
    overview = Table("Runs", ["model", "run_id", "runtime", "device", "precision", "status", "speed figures",
                              "started"],
                     [[r["model"]["name"], r["run_id"], f"{r['runtime']['name']} {r['runtime']['version']}",
                       f"{r['device']['type']} ({r['device']['name']})", r["precision"], _badge(r), _timing_badge(r),
                       r["timestamps"]["started"]] for r in records],
                     ["speed figures: stable (95% CI) when every throughput's 95% interval is within its tolerance; "
                      "UNSTABLE when one is not (the model's section lists them); before schema 1.11 there is no "
                      "interval"])
    blocks: list[Block] = [("h1", "Inference report"),
                           ("p", f"{len(records)} result file(s) from {source}; {len(by_model)} model(s). "
                                 "Throughput in samples/s with the relative half-width of its 95% interval (±; ±? "
                                 "when the record has none; [UNSTABLE] when it is wider than its tolerance). A "
                                 "speed-up is only the same-run interleaved ratio (precision table); ratios between "
                                 "two runs are labelled across runs."),
                           ("table", overview)]
    for name in sorted(by_model):
        blocks += _model_section(name, by_model[name])
    return blocks


# ---------------------------------------------------------------- rendering

def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + rest[0])
        elif kind == "p":
            out.append(rest[0])
        elif kind == "warn":
            out.append(f"> **{rest[0]}**")
        elif kind == "img":
            out.append(f"![{rest[0]}]({rest[1]})")
        else:
            t: Table = rest[0]
            lines = [f"**{t.title}**", "",
                     "| " + " | ".join(map(_md_cell, t.header)) + " |",
                     "|" + "|".join("---" for _ in t.header) + "|"]
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in t.rows]
            if t.notes:
                lines += [""] + [f"{_md_cell(n)}  " for n in t.notes]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
caption{text-align:left;font-weight:600;padding:.3em 0}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}td.n{text-align:right}
th{background:#f0f0f0}
.warn{background:#fff4d6;border-left:4px solid #e0a000;padding:.4em .8em}
.notes{font-size:.85em;color:#555;margin-top:-1em}img{max-width:100%}
.badge{font-weight:700;padding:0 .4em;border-radius:3px;color:#fff;background:#2a7d2a}
.badge.INVALID,.badge.FAILED{background:#c0392b}.badge.UNSTABLE{background:#b35c00}"""


def _html_cell(c: str) -> str:
    e = html.escape
    if c in BADGES.values() or c == UNSTABLE:
        return f'<td><span class="badge {c}">{c}</span></td>'
    if c.endswith(UNSTABLE_MARK):  # a figure whose interval is not stable: the figure, then the badge
        cls = ' class="n"' if NUMBER.fullmatch(c) else ""
        return f'<td{cls}>{e(c[:-len(UNSTABLE_MARK)])} <span class="badge {UNSTABLE}">{UNSTABLE}</span></td>'
    return f'<td class="n">{e(c)}</td>' if NUMBER.fullmatch(c) else f"<td>{e(c)}</td>"


def to_html(blocks: list[Block]) -> str:
    e = html.escape
    body = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{e(rest[0])}</{kind}>")
        elif kind in ("p", "warn"):
            body.append(f'<p class="{kind}">{e(rest[0])}</p>')
        elif kind == "img":
            data = base64.b64encode(rest[2]).decode("ascii")
            body.append(f'<p><img alt="{e(rest[0])}" src="data:image/png;base64,{data}"></p>')
        else:
            t: Table = rest[0]
            head = "".join(f"<th>{e(h)}</th>" for h in t.header)
            rows = "".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in t.rows)
            body.append(f"<table><caption>{e(t.title)}</caption><thead><tr>{head}</tr></thead>"
                        f"<tbody>{rows}</tbody></table>")
            if t.notes:
                body.append('<p class="notes">' + "<br>".join(e(n) for n in t.notes) + "</p>")
    title = next((rest[0] for kind, *rest in blocks if kind == "h1"), "Report")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
            f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


# ---------------------------------------------------------------- entry points

def write_report(results_dir: Path, out_dir: Path | None = None) -> dict:
    """Write report.md, report.html and <model>_throughput.png into out_dir (default: results_dir).

    Returns {"markdown": Path, "html": Path, "plots": [Path, ...]}. Raises ResultError when a
    result file is invalid (naming it) or when the folder holds no results.
    """
    results_dir = Path(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else results_dir
    records = load_results(results_dir)
    if not records:
        raise ResultError(f"{results_dir}: no result files (*.json with kind 'zoo.result') to report on")
    blocks = build_report(records, str(results_dir))
    from zoo.fileutil import atomic_write_bytes, atomic_write_text  # each file whole or not at all
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    for kind, *rest in blocks:
        if kind == "img":
            plots.append(out_dir / rest[1])
            atomic_write_bytes(plots[-1], rest[2])
    md, page = out_dir / "report.md", out_dir / "report.html"
    atomic_write_text(md, to_markdown(blocks))
    atomic_write_text(page, to_html(blocks))
    return {"markdown": md, "html": page, "plots": plots}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.report", description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path, help="folder with result JSONs (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: RESULTS_DIR)")
    args = parser.parse_args(argv)
    try:
        written = write_report(args.results_dir, args.out)
    except ResultError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in [written["markdown"], written["html"], *written["plots"]]:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
