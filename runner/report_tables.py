"""The report's tables (runner/report.py's part): each a Table of text cells, built from result records.

Per model: accuracy vs reference (with every figure of each protocol), per-class IoU, throughput
per scope (batch sizes as rows, runs as columns, a "best batch" row) and its ratios across runs;
per run: latency, cost and stability, pipeline stages, operator profile; and the precision table.
A throughput cell carries its uncertainty in the terminal's words (zoo.stats.figure /
block_figure), UNSTABLE last when its interval is not stable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from runner.report_data import (
    DASH,
    UNSTABLE,
    UNSTABLE_MARK,
    _comparable,
    _failed,
    _fp32_runs,
    _mark,
    _ok_block,
    _p50,
    _pct,
    _precision_delta,
    _subset,
    _tput,
    _uncertainty,
)
from zoo.checks import status_of
from zoo.runtimes import PRECISIONS, rate_unit
from zoo.stats import block_figure, figure

STAGE_ORDER = ("read", "preprocess", "infer", "postprocess")
BADGES = {"ok": "OK", "invalid": "INVALID", "failed": "FAILED"}
UNCERTAINTY_NOTE = ("±: relative half-width of the throughput's 95% confidence interval over its timing windows "
                    "(perf[].interval, schema 1.11); a figure without ±: its record has no interval (before 1.11); "
                    "±? (n windows): too few windows for an interval; (spread x%): a record before 1.11 timed until "
                    "stable: the spread of its last windows, not an interval; UNSTABLE after a figure: its interval is "
                    "wider than its tolerance or has too few windows")
ACROSS_RUNS_NOTE = ("across runs: the ratio of two figures measured in different runs (not a speed-up, which is only "
                    "the same-run interleaved ratio); its ± is both figures' relative half-widths added in quadrature "
                    "(no ± when either has no interval), UNSTABLE when either figure is")


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- cells

def _f(value, digits: int) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def _verdict(passed) -> str:
    return {True: "pass", False: "FAIL"}.get(passed, "n/a")


def _badge(run: dict) -> str:
    status = status_of(run)
    return BADGES.get(status, status.upper())


def _pm(half_width) -> str:
    """'±1.1%' from a relative half-width (as zoo.stats.figure writes it); '±?' when there is none
    (never a made-up one)."""
    return "±?" if half_width is None else f"±{half_width:.1%}"


def _unc_text(u: dict) -> str:
    if u["kind"] == "spread" and u["spread"] is not None:
        return f"(spread {_pct(u['spread'])})"
    return _pm(u["half_width"])


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


# ---------------------------------------------------------------- tables

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


# ---------------------------------------------------------------- precision (schema 1.7)

# the registry's precisions (zoo.runtimes), then a record's "mixed"
PRECISION_ORDER = (*PRECISIONS, "mixed")
_unit = rate_unit


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
