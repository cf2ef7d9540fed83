"""Turn a folder of result JSONs into a guide-style report: report.md, report.html and plots.

The report follows the Ascend ModelZoo inference guides: per model an accuracy table
(ours vs the reference value, delta, relative drop, pass; under it every figure of each
protocol, e.g. a guide's running average next to the final value), per-class IoU tables (one
per protocol that has per-class figures: classes as rows, runs as columns), throughput tables
with batch sizes as rows and runs as columns (plus ratio columns and a "best batch" row), latency
and pipeline-stage tables per run, a throughput-vs-batch-size plot, and the export facts. When a
model's runs include a reduced precision (bf16, fp16, int8), a precision table (runtime x
precision x batch size: throughput, speed-up over the same runtime's fp32, accuracy delta and
fidelity to fp32, fraction of that precision's own GEMM peak, pass) and an accuracy-vs-throughput
plot (one point per runtime:precision) follow.

The content is built once as a list of blocks (headings, paragraphs, tables, images) and
rendered twice: to Markdown and to a single self-contained HTML page (plots embedded as
base64 PNGs; the PNG files are also written next to the page).

Each run's status is a badge (OK, INVALID, FAILED: zoo.checks.status_of, so a record from before
schema 1.10 that said ok over a failed verify is INVALID too); an invalid run's label carries
[INVALID] in every table and plot, its accuracy cells say so and its reason is a warning: its
figures are never shown as a sound run's. Records are read through runner.validate (schema and
the record checker's rules: a record that breaks one stops the report, exit 2).

    python -m runner.report RESULTS_DIR [--out DIR]
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
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
NUMBER = re.compile(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?%?( \(.*\))?|—|failed \[\d+\]")  # right-aligned in HTML
BADGES = {"ok": "OK", "invalid": "INVALID", "failed": "FAILED"}
INVALID = " [INVALID]"


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
    ratios = [f"{labels[i]}/{labels[0]}" for i in range(1, len(runs))]
    notes: list[str] = []

    def tput(i, bs):
        p = blocks[i].get(bs)
        return p.get("throughput") if p and p["status"] == "ok" else None

    def ratio(a, b):
        return _f(a / b, 2) if a is not None and b else DASH

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
                cells.append(_f(p.get("throughput"), 1))
        cells += [ratio(tput(i, bs), tput(0, bs)) for i in range(1, len(runs))]
        rows.append([str(bs)] + cells)

    best = []
    for i in range(len(runs)):
        ok = [(tput(i, bs), bs) for bs in batch_sizes if tput(i, bs) is not None]
        best.append(max(ok, key=lambda t: t[0]) if ok else None)  # ties: the smaller batch
    rows.append(["best batch"] + [f"{b[0]:.1f} (bs {b[1]})" if b else DASH for b in best]
                + [ratio(best[i] and best[i][0], best[0] and best[0][0]) for i in range(1, len(runs))])
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
    rows = [[str(p["batch_size"]), _f(p.get("throughput"), 1), str(p.get("workers", DASH))]
            + [_pct(p.get("stages", {}).get(s, {}).get("share")) for s in stages]
            + [_f(p.get("pipeline_vs_infer"), 2)] + _ceiling_cells(p) for p in blocks]
    notes = ["CPU ceiling/infer: the pipeline's throughput limit when the runtime's CPU time per sample "
             "(measured alone) and the read/preprocess/postprocess CPU time share the cores, over the "
             "infer-only throughput; below 1, overlapping cannot reach the infer-only rate on this machine."]
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
    the timing ended and the window spread (schema 1.2 fields; older records have none)."""
    blocks = sorted((p for p in run["perf"] if p["scope"] == "infer_only" and p["status"] == "ok"),
                    key=lambda p: p["batch_size"])
    cost = (run.get("export") or {}).get("cost")
    peak = run["device"].get("fp32_peak")
    if not blocks or not (cost or any("stability" in p for p in blocks)):
        return None
    rows = []
    for p in blocks:
        st = p.get("stability") or {}
        rows.append([str(p["batch_size"]), _f(p.get("throughput"), 1), _f(p.get("gflops"), 1),
                     _f(p.get("peak_gflops"), 0), _pct(p.get("peak_fraction")), _f(p.get("activation_gbytes_per_s"), 1),
                     _pct(p.get("bandwidth_fraction")), p.get("stopped_by", DASH),
                     _pct(st.get("spread")) if st.get("spread") is not None else DASH])
    notes = []
    if cost:
        notes.append(f"{cost['flops_per_sample'] / 1e9:.2f} GFLOP and {cost['params'] / 1e6:.2f} M parameters per "
                     f"sample ({cost.get('counted', 'from the ONNX graph')})")
    if peak:
        seen = peak.get("measurements") or [peak["gflops"]]
        notes.append(f"fp32 peak {peak['gflops']:.0f} GFLOP/s ({peak['method']}, {peak['threads']} threads; "
                     f"measured {min(seen):.0f}-{max(seen):.0f} in this run: the highest is the peak)"
                     + (f"; memory copy {peak['memory']['gbytes_per_s']:.1f} GB/s ({peak['memory'].get('method', '')})"
                        if peak.get("memory") else ""))
    own = run["device"].get("precision_peak")
    if own:  # schema 1.7: a reduced-precision run's fractions are of its own precision's peak
        notes.append(f"{own['precision']} peak {own['gflops']:.0f} {_unit(own['precision'])} ({own.get('kernel', '')}): "
                     f"'GEMM just before' and 'of peak' are of this precision's peak" if own.get("gflops") else
                     f"{own['precision']} peak unavailable ({own.get('unavailable', 'no reason given')}): no fraction")
    return Table(f"Cost and stability, {label}", ["batch size", "samples/s", "GFLOP/s", "GEMM just before", "of peak",
                                                   "activations GB/s", "of bandwidth", "stopped by", "window spread"],
                 rows, notes)


def _latency_plot(runs, labels, title: str) -> bytes | None:
    """Per run and batch size (infer_only): min-max range, p50 / p90 / p99 markers."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
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
            xl.append(f"{label}\nbs{per}")
            x += 1
    if not xt:
        return None
    ax.set_xticks(xt, xl, fontsize="x-small")
    ax.set_ylabel("latency per sample [ms] (min-max, p50, p90, p99)")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


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


def _precision_rows(run: dict, label: str, fp32: dict | None) -> list[list[str]]:
    """One row per batch size of `run`: throughputs, speed-ups over fp32 (result set, same run),
    and, on the row of the batch size its accuracy was measured at, delta, fidelity and verdict."""
    reduced = run["precision"] != "fp32"
    rp = run.get("reduced_precision") or {}
    base = rp.get("fp32_baseline") or {}
    delta, _ = _precision_delta(run, fp32) if reduced else ([], None)
    acc_bs = base.get("batch_size") or next((a["batch_size"] for a in run["accuracy"]), None)
    rows = []
    for bs in sorted({p["batch_size"] for p in run["perf"]}):
        infer, pipe = _tput(run, "infer_only", bs), _tput(run, "pipeline", bs)
        shown = [_f(v, 1) if v is not None or not _failed(run, scope, bs) else "failed"
                 for v, scope in ((infer, "infer_only"), (pipe, "pipeline"))]
        ratio = lambda a, b: _f(a / b, 2) if a is not None and b else DASH  # noqa: E731
        in_run = DASH
        if reduced and base.get("batch_size") == bs and infer and base.get("throughput_samples_per_s"):
            in_run = f"{infer / base['throughput_samples_per_s']:.2f} (in run)"
        p = _ok_block(run, "infer_only", bs) or {}
        frac = _pct(p.get("peak_fraction")) + f" of {run['precision']}" if p.get("peak_fraction") is not None else DASH
        first = bs == acc_bs
        fid = "; ".join(f"{f['metric']} {f['value']:.4f}" for f in rp.get("fidelity") or []) or DASH
        rows.append([label, run["precision"], str(bs), *shown,
                     ratio(infer, _tput(fp32, "infer_only", bs)) if reduced else "base" if infer else DASH,
                     ratio(pipe, _tput(fp32, "pipeline", bs)) if reduced else "base" if pipe else DASH, in_run,
                     _delta_cell(delta) if reduced and first else DASH,
                     fid if reduced and first else DASH, frac,
                     _precision_verdict(run, delta) if reduced and first else DASH])
    return rows


def _precision_table(runs, labels) -> Table | None:
    """Runtime x precision x batch size (only when some run is not fp32): throughput, speed-up
    over the same runtime's fp32 (its fp32 run in this result set; and, in the run's own
    reduced_precision block, the fp32 pass timed in the same process), the accuracy delta to fp32,
    the fidelity to fp32's predictions, the fraction of the precision's own GEMM peak, pass/fail."""
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
            own = run["device"].get("precision_peak") or {}
            if own.get("gflops"):
                notes.append(f"{labels[i]}: {own['precision']} peak {own['gflops']:.0f} {_unit(own['precision'])} "
                             f"({own.get('kernel', '')})")
    notes += ["x fp32: this run's throughput over the same runtime's fp32 run in this result set at the same "
              "batch size (infer only / pipeline); in run: over the fp32 pass the run timed itself, in the same "
              "process (reduced_precision.fp32_baseline)",
              "accuracy delta (vs fp32), fidelity (the fp32 predictions as ground truth) and pass: on the row of "
              "the batch size the accuracy was measured at; delta from the run's own fp32 pass, else from the "
              "fp32 run in this result set (same weights and samples)",
              "of peak: infer-only GFLOP/s (int8: GOP/s) over the GEMM peak of the run's own precision, "
              "measured in the run (device.precision_peak; fp32: device.fp32_peak)"]
    header = ["runtime", "precision", "batch size", "infer/s", "pipeline/s", "x fp32 infer", "x fp32 pipeline",
              "x fp32 in run", "accuracy delta vs fp32", "fidelity", "of peak", "pass"]
    return Table("Precision: throughput, speed-up over fp32, accuracy", header, rows, notes)


def _best_infer(run: dict) -> tuple[float, int] | None:
    ok = [(p["throughput"], -p["batch_size"]) for p in run["perf"]
          if p["scope"] == "infer_only" and p["status"] == "ok" and "throughput" in p]
    if not ok:
        return None
    t, bs = max(ok)
    return t, -bs


def _quality(run: dict, fidelity: bool) -> float | None:
    """The plot's y: the first protocol's accuracy, or the fidelity to fp32 (fp32 runs: 1)."""
    if not fidelity:
        return run["accuracy"][0]["value"] if run["accuracy"] else None
    if run["precision"] == "fp32":
        return 1.0
    fid = (run.get("reduced_precision") or {}).get("fidelity") or []
    return fid[0]["value"] if fid else None


def _precision_plot(runs, title: str) -> bytes | None:
    """Accuracy (or, when a run judged itself by fidelity -- no trained weights -- the fidelity to
    fp32) against the infer-only throughput at the best batch size: one labelled point per
    runtime:precision. None when every run is fp32."""
    if all(r["precision"] == "fp32" for r in runs):
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fidelity = any((r.get("reduced_precision") or {}).get("criterion") == "fidelity_to_fp32" for r in runs)
    fig = Figure(figsize=(7, 4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    runtimes = sorted({r["runtime"]["name"] for r in runs})
    drawn = 0
    for run in runs:
        best, y = _best_infer(run), _quality(run, fidelity)
        if best is None or y is None:
            continue
        color = f"C{runtimes.index(run['runtime']['name']) % 10}"
        marker = {"fp32": "o", "bf16": "s", "fp16": "D", "int8": "^"}.get(run["precision"], "x")
        ax.plot([best[0]], [y], marker=marker, color=color, linestyle="none")
        ax.annotate(f"{run['runtime']['name']}:{run['precision']} (bs {best[1]})", (best[0], y),
                    textcoords="offset points", xytext=(5, 5), fontsize="x-small")
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    fig = Figure(figsize=(7, 4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ticks = set()
    for i, (run, label) in enumerate(zip(runs, labels)):
        for scope, style, marker in (("infer_only", "-", "o"), ("pipeline", "--", "s")):
            pts = sorted((p["batch_size"], p["throughput"]) for p in run["perf"]
                         if p["scope"] == scope and p["status"] == "ok" and "throughput" in p)
            if pts:
                ticks.update(bs for bs, _ in pts)
                ax.plot(*zip(*pts), linestyle=style, marker=marker, color=f"C{i % 10}",
                        label=f"{label}, {scope}")
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _model_section(name: str, runs: list[dict]) -> list[Block]:
    labels = _labels(runs)
    m = runs[0]["model"]
    variants = sorted({r["model"]["variant"] for r in runs})
    blocks: list[Block] = [("h2", f"{name}: {m['title']}"),
                           ("p", f"{len(runs)} run(s); variant {', '.join(variants) or DASH}")]
    blocks += [("warn", f"{label}: run {_badge(r)}: {r['error'] or invalid_reason(r) or 'no reason given'}"
                        + ("; its figures are shown marked, not as a sound run's" if status_of(r) == "invalid" else ""))
               for r, label in zip(runs, labels) if status_of(r) != "ok"]
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
    overview = Table("Runs", ["model", "run_id", "runtime", "device", "precision", "status", "started"],
                     [[r["model"]["name"], r["run_id"], f"{r['runtime']['name']} {r['runtime']['version']}",
                       f"{r['device']['type']} ({r['device']['name']})", r["precision"], _badge(r),
                       r["timestamps"]["started"]] for r in records])
    blocks: list[Block] = [("h1", "Inference report"),
                           ("p", f"{len(records)} result file(s) from {source}; {len(by_model)} model(s). "
                                 "Throughput in samples/s; ratio columns are each run over the first run."),
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
.badge.INVALID,.badge.FAILED{background:#c0392b}"""


def _html_cell(c: str) -> str:
    e = html.escape
    if c in BADGES.values():
        return f'<td><span class="badge {c}">{c}</span></td>'
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
