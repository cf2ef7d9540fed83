"""A result record's summary for the terminal, in the manner of OpenVINO's benchmark_app and
MLPerf LoadGen's summary: what ran (model, runtime, executed precision, device, threads, ISA),
accuracy against the published figure, and per batch size the count, duration, throughput with
its 95% interval (zoo.stats.figure), latency percentiles and what stopped the measurement; the
count of unstable figures (their reasons at DEBUG level, and always in the record) and the
verdict last, where the eye lands. Every line fits 100 columns (the result's path aside)."""
from __future__ import annotations

import logging
import os
import textwrap

from tabulate import tabulate

from zoo.checks import invalid_reason, status_of
from zoo.stats import block_figure

STOP = {"stable": "stable", "iterations": "call cap", "time_budget": "time budget", "dataset_end": "one pass"}
WIDTH = 100  # every line of the summary fits a terminal this wide (the result's path aside)


def perf_table(rec: dict) -> str:
    """Batch size x scope: samples/s with its 95% interval (zoo.stats.figure), calls (infer) or
    samples (pipeline), seconds, latency p50/p90/p99 per batch (ms), what stopped it; a failed
    one says FAILED (failures() says why)."""
    rows = []
    for p in rec["perf"]:
        scope = "infer" if p["scope"] == "infer_only" else "pipeline"
        if p["status"] != "ok":
            rows.append([p["batch_size"], scope, "FAILED"] + [""] * 6)
            continue
        lat = p["latency_ms"]
        count = p.get("iterations") if p["scope"] == "infer_only" else p.get("num_samples")
        rows.append([p["batch_size"], scope, block_figure(p), count, f"{p['wall_s']:.1f}",
                     f"{lat['median']:.1f}", f"{lat['p90']:.1f}", f"{lat['p99']:.1f}",
                     STOP.get(p.get("stopped_by"), p.get("stopped_by") or "-")])
    return tabulate(rows, headers=["bs", "scope", "samples/s", "count", "time\ns", "p50\nms", "p90\nms", "p99\nms",
                                   "stopped by"],
                    colalign=("right", "left", "left", "right", "right", "right", "right", "right", "left"),
                    disable_numparse=True)


def failures(rec: dict) -> list[str]:
    """Why each failed batch size failed, a line each (folded to WIDTH)."""
    return [line for p in rec["perf"] if p["status"] != "ok"
            for line in _wrapped(f"  FAILED bs{p['batch_size']} {p['scope']}: "
                                 + " ".join((p.get("error") or "no error recorded").split()))]


def unstable(rec: dict) -> list[str]:
    """One line per figure whose interval did not reach its tolerance, with the record's reason."""
    out = []
    for p in rec["perf"]:
        iv = p.get("interval")
        if p["status"] == "ok" and iv and not iv["stable"]:
            out.append(f"UNSTABLE: bs{p['batch_size']} {p['scope']}: {iv['reason']}")
    base = ((rec.get("reduced_precision") or {}).get("fp32_baseline") or {})
    si = base.get("speedup_interval")
    if si and not si["stable"]:
        out.append(f"UNSTABLE: speed-up over fp32: {si.get('reason') or 'interval above the tolerance'}")
    return out


def _debug() -> bool:
    """The reasons of each unstable figure are shown at DEBUG (ZOO_LOG_LEVEL=DEBUG: -v, --debug)."""
    return (os.environ.get("ZOO_LOG_LEVEL", "").upper() == "DEBUG"
            or logging.getLogger("zoo").isEnabledFor(logging.DEBUG))


def _folded(why: list[str], reasons: bool) -> list[str]:
    """The unstable figures: one line (the table marks which), each reason only with `reasons`."""
    if not why:
        return []
    many = f"{len(why)} figure{'s' if len(why) != 1 else ''}"
    if reasons:
        return [line for w in why for line in _wrapped("  " + w)]
    return [f"  {many} UNSTABLE: reasons with -v and in the record; a longer --time-budget narrows them"]


def _wrapped(line: str) -> list[str]:
    """A line folded to WIDTH columns, its continuation indented under its text."""
    indent = " " * (len(line) - len(line.lstrip()) + 2)
    return textwrap.wrap(line, WIDTH, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False) or [line]


def lines(rec: dict, path, reasons: bool | None = None) -> list[str]:
    """The summary's lines, each within WIDTH columns (the result's path aside); `reasons` (default:
    at DEBUG level) lists why each unstable figure is, else one line counts them."""
    dev, rt = rec["device"], rec["runtime"]
    details = dev.get("details") or {}
    threads = details.get("threads_used") or rt.get("settings", {}).get("threads")
    rp = rec.get("reduced_precision") or {}
    executed = rp.get("executed") or rec.get("precision")
    out = [f"result: {path} (schema {rec['schema_version']}, status {status_of(rec)})",
           f"  model {rec['model']['name']}" + (f" ({rec['model']['variant']})"[:80] if rec["model"].get("variant") else ""),
           f"  runtime {rt['name']} {rt.get('version', '')}, precision {rec.get('precision')} (executed {executed})"]
    out += _wrapped(f"  device {dev['type']} {dev.get('name', '?')}" + (f", {threads} threads" if threads else "")
                    + (f", ISA {' '.join(details['isa'])}" if details.get("isa") else ""))
    for a in rec["accuracy"]:
        ref = a["reference"]
        verdict = {True: "PASS", False: "FAIL", None: "n/a (subset)"}[a["passed"]]
        tail = f" vs {ref['value']:.4f} published: {verdict}" if ref else ""
        out += _wrapped(f"  accuracy {a['name']}: {a['metric']} {a['value']:.4f} on {a['num_samples']} samples{tail}")
    out += ["  " + row.rstrip() for row in perf_table(rec).splitlines()]
    out.append("  (samples/s ± its 95% interval; count: timed calls or samples; p50-p99: latency per batch)")
    out += failures(rec)
    base = rp.get("fp32_baseline") or {}
    si = base.get("speedup_interval")
    if base.get("speedup") is not None:
        iv = f" [{si['low']:.2f}, {si['high']:.2f}], {si['rounds']} interleaved rounds" \
            if si and si.get("low") is not None else (" (not interleaved: a record before schema 1.11)" if not si else "")
        out += _wrapped(f"  speed-up {executed} over fp32 at bs{base['batch_size']}: x{base['speedup']:.2f}{iv}"
                        + ("" if not si or si.get("stable", True) else " UNSTABLE"))
    out += _folded(unstable(rec), _debug() if reasons is None else reasons)
    status = status_of(rec)
    out += _wrapped(f"verdict: {status.upper()}" + ("" if status == "ok" else
                                                    f": {rec.get('error') or invalid_reason(rec) or 'no reason given'}"))
    return out
