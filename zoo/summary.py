"""A result record's summary for the terminal, in the manner of OpenVINO's benchmark_app and
MLPerf LoadGen's summary: what ran (model, runtime, executed precision, device, threads, ISA),
accuracy against the published figure, and per batch size the count, duration, throughput with
its 95% interval, latency percentiles and what stopped the measurement; unstable figures and the
verdict last, where the eye lands."""
from __future__ import annotations

from tabulate import tabulate

from zoo.checks import invalid_reason, status_of

STOP = {"stable": "stable", "iterations": "call cap", "time_budget": "time budget", "dataset_end": "one pass"}


def _interval(p: dict) -> str:
    iv = p.get("interval")
    if not iv:
        return "-"
    if iv["half_width"] is None:
        return f"none ({iv['windows']} windows)"
    return ("UNSTABLE " if not iv["stable"] else "") + f"+-{iv['half_width']:.1%}"


def perf_table(rec: dict) -> str:
    """Batch size x scope: samples/s, interval, calls (infer) or samples (pipeline), seconds,
    latency p50/p90/p99 per batch (ms), what stopped it."""
    rows = []
    for p in rec["perf"]:
        scope = "infer" if p["scope"] == "infer_only" else "pipeline"
        if p["status"] != "ok":
            rows.append([p["batch_size"], scope, "FAILED", (p.get("error") or "")[:40], "", "", "", "", ""])
            continue
        lat = p["latency_ms"]
        count = p.get("iterations") if p["scope"] == "infer_only" else p.get("num_samples")
        rows.append([p["batch_size"], scope, f"{p['throughput']:.1f}", _interval(p), count, f"{p['wall_s']:.1f}",
                     f"{lat['median']:.1f}", f"{lat['p90']:.1f}", f"{lat['p99']:.1f}",
                     STOP.get(p.get("stopped_by"), p.get("stopped_by") or "-")])
    return tabulate(rows, headers=["bs", "scope", "samples/s", "95% CI", "count", "s", "p50", "p90", "p99", "stop"],
                    disable_numparse=True)


def unstable(rec: dict) -> list[str]:
    """One line per figure whose interval did not reach its tolerance."""
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


def lines(rec: dict, path) -> list[str]:
    dev, rt = rec["device"], rec["runtime"]
    details = dev.get("details") or {}
    threads = details.get("threads_used") or rt.get("settings", {}).get("threads")
    rp = rec.get("reduced_precision") or {}
    executed = rp.get("executed") or rec.get("precision")
    out = [f"result: {path} (schema {rec['schema_version']}, status {status_of(rec)})",
           f"  model {rec['model']['name']}" + (f" ({rec['model']['variant']})"[:80] if rec["model"].get("variant") else ""),
           f"  runtime {rt['name']} {rt.get('version', '')}, precision {rec.get('precision')} (executed {executed})",
           f"  device {dev['type']} {dev.get('name', '?')}" + (f", {threads} threads" if threads else "")
           + (f", ISA {' '.join(details['isa'])}" if details.get("isa") else "")]
    for a in rec["accuracy"]:
        ref = a["reference"]
        verdict = {True: "PASS", False: "FAIL", None: "n/a (subset)"}[a["passed"]]
        tail = f" vs {ref['value']:.4f} published: {verdict}" if ref else ""
        out.append(f"  accuracy {a['name']}: {a['metric']} {a['value']:.4f} on {a['num_samples']} samples{tail}")
    out += ["  " + row for row in perf_table(rec).splitlines()]
    out.append("  (95% CI: the interval's half-width; count: timed calls or samples; p50-p99: ms/batch)")
    base = rp.get("fp32_baseline") or {}
    si = base.get("speedup_interval")
    if base.get("speedup") is not None:
        iv = f" [{si['low']:.2f}, {si['high']:.2f}], {si['rounds']} interleaved rounds" \
            if si and si.get("low") is not None else (" (not interleaved: a record before schema 1.11)" if not si else "")
        out.append(f"  speed-up {executed} over fp32 at bs{base['batch_size']}: x{base['speedup']:.2f}{iv}")
    out += unstable(rec)
    status = status_of(rec)
    out.append(f"verdict: {status.upper()}" + ("" if status == "ok" else
                                               f": {rec.get('error') or invalid_reason(rec) or 'no reason given'}"))
    return out
