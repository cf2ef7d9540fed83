"""The report's reading of result records (runner/report.py's part): what a record's figures say,
independent of how they are shown.

A perf block's uncertainty (its schema 1.11 95% interval, or an older record's stop-when-stable
spread), latency p50, a run's shards and label (`<runtime> <device type> <precision>`, the same in
every table and plot), a limited run's subset, the same runtime's fp32 run in a result set and the
accuracy delta to it, the best infer-only block and a run's plotted accuracy; and report.csv, every
run x batch size x scope as one row (`csv_rows`, `to_csv`).
"""
from __future__ import annotations

import csv
import io

from zoo.checks import status_of

DASH = "—"
INVALID = " [INVALID]"
UNSTABLE = "UNSTABLE"
UNSTABLE_MARK = f" {UNSTABLE}"  # last in a figure whose interval is not stable (zoo.stats.figure; a badge in HTML)
CSV_NAME = "report.csv"


def _pct(share) -> str:
    return DASH if share is None else f"{100 * share:.1f}%"


def _mark(*unstable) -> str:
    return UNSTABLE_MARK if any(s is False for s in unstable) else ""


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


def _p50(lat: dict):
    return lat.get("p50", lat.get("median"))


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


# ---------------------------------------------------------------- precision (schema 1.7)

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
