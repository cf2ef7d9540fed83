"""Measured tables that stay true: every model on every CPU runtime at every precision, each figure
with its 95% interval, its fraction of its own precision's peak, and the in-run speed-up over fp32.

For each model, one `python -m zoo bench --runtimes R --precisions P` in the model's environment
(random-weight checkpoints from random_weights.py where no checkpoint ships, a full-size synthetic
Cityscapes tree for ErfNet and Fast-SCNN, int8 calibrated on the evaluation split where the data has
no calibration split: everything but UNet++'s built-in samples); a combination a runtime cannot run
is left out by zoo bench with a line. Then, per model x runtime x precision at its best batch size
(infer-only samples/s): samples/s with the relative half-width of its 95% interval (UNSTABLE where
the interval did not reach its tolerance), the executed precision, GFLOP/s (GOP/s for int8), the
fraction of the machine's peak AT THAT PRECISION and the kernel that gave the peak, and for a
reduced precision the speed-up over fp32 measured in the same run by interleaved windows (with its
interval: the only figure called a speed-up here), verify and the reduced-precision gate.

Writes <out>/performance.json and <out>/performance.md; `--write-docs` also writes docs/PERFORMANCE.md
(machine, ISA flags, threads, dates, commit and the command in its header). A model whose zoo bench
fails is one line and the others go on; exit 2 when any failed, 1 when a record is INVALID (verify
or its reduced-precision gate failed), else 0.

    python3 benchmarks/performance.py --write-docs -- --time-budget 20    # all five: hours (README)
    python3 benchmarks/performance.py --models unetpp --runtimes onnxruntime --precisions fp32,int8
    python3 benchmarks/performance.py --summarize --write-docs           # the tables again, no run
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.peak_fraction import (BATCH_SIZES, CITYSCAPES, ensure_cityscapes,  # noqa: E402
                                      ensure_weights, env, python_of)

MODELS = "unetpp,erfnet,fcn8s,nasfpn,fastscnn"
RUNTIMES = "torch,onnxruntime,openvino"
PRECISIONS = "fp32,bf16,int8"
CALIBRATION_SPLIT = {"unetpp"}  # built-in data with a calibration split (models/unetpp/calib_ids.txt)
DOCS = ROOT / "docs" / "PERFORMANCE.md"
SCRIPT = "benchmarks/performance.py"


# ---------------------------------------------------------------- running

def clock(seconds: float) -> str:
    """'1:02:03' / '12:03'."""
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def bench_args(model: str, runtimes: list[str], precisions: list[str], sizes: str | None, out: Path,
               extra: list[str]) -> list[str]:
    """zoo bench's arguments (after `python -m zoo`) for one model; int8 on data without a
    calibration split calibrates on the evaluation split (marked in the record), unless the
    extra arguments choose the calibration themselves."""
    from zoo.stages.config import CALIBRATED_PRECISIONS
    args = ["bench", "--model", model, "--runtimes", ",".join(runtimes), "--precisions", ",".join(precisions),
            "--out", str(out)]
    if sizes:
        args += ["--batch-sizes", sizes]
    chosen = {"--calib-ids", "--calib-from-eval"} & {a.split("=", 1)[0] for a in extra}
    if model not in CALIBRATION_SPLIT and set(precisions) & set(CALIBRATED_PRECISIONS) and not chosen:
        args.append("--calib-from-eval")
    return args + list(extra)


def run_model(model: str, args: list[str], out: Path, log_dir: Path, started: float, index: str) -> dict:
    """Run `python -m zoo <args>` in the model's environment, its stderr shown line by line with
    the configuration running and the elapsed time (and kept in log_dir/<model>.log). Returns
    {'exit', 'records' (paths of the records this run wrote, even when it failed), 'error'}."""
    from runner.validate import find_results
    folder = out / model
    before = set(find_results(folder)) if folder.is_dir() else set()
    cmd = [python_of(model), "-m", "zoo", *args]
    print(f"== {index} {model}: {shlex.join(['python', '-m', 'zoo', *args])}", file=sys.stderr, flush=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    total = 1
    for option in ("--runtimes", "--precisions"):  # the runs zoo bench makes, less those it leaves out
        total *= len(args[args.index(option) + 1].split(",")) if option in args else 1
    t0, config, count, last = time.monotonic(), "setting up", 0, ""
    with open(log_dir / f"{model}.log", "w") as log, tempfile.TemporaryFile("w+") as stdout:
        log.write(shlex.join(cmd) + "\n")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=stdout, stderr=subprocess.PIPE, text=True,
                                errors="backslashreplace")
        for line in proc.stderr:
            line = line.rstrip("\n")
            log.write(line + "\n")
            log.flush()
            if line.startswith("bench: left out:"):
                total -= 1
            if line.startswith("[1/7]"):
                count += 1
                config = f"run {count}/{max(total, count)} setting up"
            if line.startswith("[4/7] compile for "):  # '[4/7] compile for openvino (int8)'
                what = line[len("[4/7] compile for "):].split()
                config = f"{what[0]}:{what[1].strip('()') if len(what) > 1 else 'fp32'} {count}/{max(total, count)}"
            if line.strip():
                last = line.strip()
            now = time.monotonic()
            print(f"[{model} {config} +{clock(now - t0)} | total {clock(now - started)}] {line}",
                  file=sys.stderr, flush=True)
        code = proc.wait()
        stdout.seek(0)
        table = stdout.read()
    if table.strip():
        print(table, file=sys.stderr, flush=True)
    written = sorted(set(find_results(folder)) - before) if folder.is_dir() else []
    error = None
    if code not in (0, 1):  # 1: written, but a record is INVALID (its rows say so)
        error = f"{model}: zoo bench failed (exit {code}): {last[:300] or 'no message'}"
    elif not written:
        error = f"{model}: zoo bench wrote no record (exit {code})"
    print(f"== {model}: {'FAILED' if error else 'done'} in {clock(time.monotonic() - t0)}, "
          f"{len(written)} record{'s' if len(written) != 1 else ''} written", file=sys.stderr, flush=True)
    return {"exit": code, "records": written, "error": error}


def newest_records(out: Path, model: str) -> list[Path]:
    """--summarize: the newest record of each runtime x precision of `model` in out/<model>/ (by
    timestamps.started, then file name)."""
    from runner.validate import ResultError, find_results, read_json
    folder = out / model
    if not folder.is_dir():
        return []
    newest, unreadable = {}, []
    for path in find_results(folder):
        try:
            rec = read_json(path)
        except ResultError:
            unreadable.append(path)  # load() refuses it in one line
            continue
        key = ((rec.get("runtime") or {}).get("name"), rec.get("precision"))
        when = ((rec.get("timestamps") or {}).get("started") or "", path.name)
        if key not in newest or when > newest[key][0]:
            newest[key] = (when, path)
    return [p for _, p in sorted(newest.values())] + unreadable


def load(paths: list[Path]) -> tuple[list[dict], list[str]]:
    """(records, one line per refused file): the schema and the record checker's rules
    (runner.validate.load_result), as report and compare read them."""
    from runner.validate import ResultError, load_result
    records, refused = [], []
    for path in paths:
        try:
            rec = load_result(path)
        except ResultError as exc:
            refused.append(str(exc))
            continue
        rec["_path"] = str(path)
        records.append(rec)
    return records, refused


# ---------------------------------------------------------------- rows

def unit(precision: str | None) -> str:
    return "GOP/s" if precision == "int8" else "GFLOP/s"


def best_block(rec: dict) -> dict | None:
    ok = [p for p in rec.get("perf", []) if p.get("scope") == "infer_only" and p.get("status") == "ok"]
    return max(ok, key=lambda p: p["throughput"]) if ok else None


def own_peak(rec: dict) -> dict:
    """The device entry of the peak the run's fractions are against: precision_peak for a reduced
    precision (when measured), else fp32_peak ({} without a peak: --no-peak)."""
    dev = rec.get("device") or {}
    if rec.get("precision", "fp32") != "fp32" and dev.get("precision_peak"):
        return dev["precision_peak"]
    return dev.get("fp32_peak") or {}


def row(rec: dict) -> dict | None:
    """The record's best batch size (infer-only samples/s) as a table row; None when no batch
    size ran."""
    from runner.compare import _executed, side_of
    from zoo.checks import status_of
    p = best_block(rec)
    if p is None:
        return None
    side = side_of(p)  # the interval (1.11), or the one an older record's stability windows make
    iv = p.get("interval") or {}
    peak = own_peak(rec)
    rp = rec.get("reduced_precision") or {}
    base = rp.get("fp32_baseline") or {}
    si = base.get("speedup_interval")
    calib = rp.get("calibration") or {}
    weights = (rec.get("provenance") or {}).get("weights") or {}
    pipe = next((b for b in rec["perf"] if b.get("scope") == "pipeline" and b.get("status") == "ok"
                 and b["batch_size"] == p["batch_size"]), None)
    executed = _executed(rec, p["batch_size"])
    reason = iv.get("reason") if iv else (
        "its stop-when-stable windows were not stable (record before schema 1.11)" if side.stable is False else None)
    return {
        "model": rec["model"]["name"], "variant": rec["model"].get("variant"),
        "runtime": rec["runtime"]["name"], "runtime_version": rec["runtime"].get("version"),
        "precision": rec.get("precision", "fp32"), "executed": executed,
        "batch_size": p["batch_size"],
        "batch_sizes": sorted({b["batch_size"] for b in rec["perf"] if b.get("scope") == "infer_only"}),
        "failed": [{"batch_size": b["batch_size"], "scope": b.get("scope"), "error": b.get("error")}
                   for b in rec["perf"] if b.get("status") != "ok"],
        "throughput": p["throughput"], "half_width": side.half_width, "stable": side.stable,
        "low": iv.get("low"), "high": iv.get("high"), "windows": iv.get("windows", len(side.windows)),
        "interval_reason": reason, "interval_from": "interval" if iv else
        ("stability windows (record before 1.11)" if p.get("stability") else None),
        "stopped_by": p.get("stopped_by"),
        "pipeline_throughput": pipe["throughput"] if pipe else None,
        "pipeline_half_width": ((pipe or {}).get("interval") or {}).get("half_width"),
        "unit": unit(rec.get("precision")), "gflops": p.get("gflops"),  # OpenVINO says i8, not int8
        "peak_fraction": p.get("peak_fraction"), "peak_note": p.get("peak_note"),
        "peak_gflops": p.get("peak_gflops", peak.get("gflops")), "peak_precision": peak.get("precision"),
        "peak_kernel": peak.get("kernel"), "peak_unavailable": peak.get("unavailable"),
        "speedup": base.get("speedup") if si else None, "speedup_low": (si or {}).get("low"),
        "speedup_high": (si or {}).get("high"), "speedup_half_width": (si or {}).get("half_width"),
        "speedup_rounds": (si or {}).get("rounds"), "speedup_stable": (si or {}).get("stable"),
        "speedup_reason": (si or {}).get("reason"), "speedup_batch_size": base.get("batch_size") if si else None,
        "speedup_note": None if si or not rp else ("no fp32 baseline in this run" if not base else
                                                   "record before schema 1.11: no interleaved speed-up"),
        "verify_passed": (rec.get("verify") or {}).get("passed"),
        "reduced_passed": rp.get("passed") if rp else None, "reduced_criterion": rp.get("criterion"),
        "calib_from_eval": calib.get("from_evaluation_split"),
        # a manifest checkpoint (official or the project's trained one); any other file is random weights
        "trained_weights": bool(weights.get("checkpoint")) if weights else None,
        "status": status_of(rec), "error": rec.get("error"),
        "gflop_per_sample": ((rec.get("export") or {}).get("cost") or {}).get("flops_per_sample", 0) / 1e9 or None,
        "data": "built-in" if ((rec.get("provenance") or {}).get("dataset") or {}).get("builtin") else
        ((rec.get("provenance") or {}).get("dataset") or {}).get("path"),
        "started": (rec.get("timestamps") or {}).get("started"), "record": rec.get("_path"),
    }


def ordered(rows: list[dict], models: list[str], runtimes: list[str], precisions: list[str]) -> list[dict]:
    def place(value, order):
        return (order.index(value), "") if value in order else (len(order), str(value))
    return sorted(rows, key=lambda r: (place(r["model"], models), place(r["runtime"], runtimes),
                                       place(r["precision"], precisions)))


# ---------------------------------------------------------------- tables

def digits(v: float) -> int:
    """The decimals of three significant figures at most: 181, 47.6, 6.98, 0.467."""
    return 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2 if abs(v) >= 1 else 3


def number(v: float | None) -> str:
    """Three significant figures at most, never exponents: 181, 47.6, 6.98, 0.467."""
    return "-" if v is None else f"{v:.{digits(v)}f}"


def with_interval(r: dict) -> str:
    """zoo.stats.figure of a row, at number()'s precision: '25.0 ±1.1%', '6.98 ±25.9% UNSTABLE',
    '6.35 ±? (2 windows) UNSTABLE' (windows, too few for an interval), '25.0' (a record with
    neither interval nor stability windows)."""
    from zoo.stats import figure
    v = r["throughput"]
    if r["half_width"] is None and not r.get("interval_from"):
        return figure(v, digits=digits(v))
    stable = r["stable"] is not False and r["half_width"] is not None
    return figure(v, r["half_width"], stable, windows=r["windows"], digits=digits(v))


def speedup_cell(r: dict) -> str:
    """The in-run interleaved speed-up over fp32 with its interval; '-' for fp32; a reduced
    precision without one says why."""
    if r["precision"] == "fp32":
        return "-"
    if r["speedup"] is None:
        return f"- ({r['speedup_note'] or 'not measured'})"
    text = f"x{r['speedup']:.2f}"
    if r["speedup_low"] is not None and r["speedup_high"] is not None:
        text += f" [{r['speedup_low']:.2f}, {r['speedup_high']:.2f}]"
    else:
        text += " (no interval)"
    text += f" at bs{r['speedup_batch_size']}, {r['speedup_rounds']} rounds"
    return text + (" UNSTABLE" if r["speedup_stable"] is False else "")


def gate(passed) -> str:
    return {True: "pass", False: "FAIL", None: "-"}[passed]


def reduced_cell(r: dict) -> str:
    if r["precision"] == "fp32":
        return "-"
    if r["reduced_passed"] is None:
        return "- (no fp32 baseline)"
    how = {"accuracy_delta": "accuracy vs fp32", "fidelity_to_fp32": "fidelity to fp32"}.get(
        r["reduced_criterion"], r["reduced_criterion"] or "?")
    return f"{gate(r['reduced_passed'])} ({how}" + (", calibrated on the evaluation split" if r["calib_from_eval"]
                                                      else "") + ")"


def peak_cell(r: dict, notes: list[str]) -> str:
    """'27% of 227' or '- [3]' (a null fraction with a peak_note, the note in `notes`)."""
    if r["peak_fraction"] is not None:
        return f"{r['peak_fraction']:.0%} of {number(r['peak_gflops'])}"
    if r["gflops"] is None:
        return "-"
    if r["peak_note"]:
        notes.append(f"{label(r)}: {r['peak_note']}")
        return f"- [{len(notes)}]"
    if r["peak_unavailable"]:
        notes.append(f"{label(r)}: no {r['peak_precision'] or r['precision']} peak: {r['peak_unavailable'][:300]}")
        return f"- [{len(notes)}]"
    return "- (no peak measured)"


def label(r: dict) -> str:
    return f"{r['model']} {r['runtime']} {r['precision']} bs{r['batch_size']}"


def markdown(headers: list[str], cells: list[list[str]]) -> str:
    from tabulate import tabulate
    cells = [[str(c).replace("|", "\\|") for c in row] for row in cells]
    return tabulate(cells, headers=headers, tablefmt="github", disable_numparse=True)


def tables(rows: list[dict]) -> str:
    """The two tables (speed and distance to the peak; speed-up and accuracy) and their notes."""
    notes: list[str] = []
    speed = []
    for r in rows:
        speed.append([r["model"], r["runtime"], r["precision"], r["executed"], r["batch_size"], with_interval(r),
                      f"{number(r['gflops'])} {r['unit']}" if r["gflops"] is not None else "-",
                      peak_cell(r, notes), r["peak_kernel"] or "-"])
        if r["stable"] is False or (r.get("interval_from") and r["half_width"] is None):
            notes.append(f"{label(r)}: UNSTABLE: {r['interval_reason'] or 'the interval did not reach its tolerance'}")
        if r["speedup_stable"] is False:
            notes.append(f"{label(r)}: speed-up over fp32 UNSTABLE: {r['speedup_reason'] or 'above its tolerance'}")
        for f in r["failed"]:
            notes.append(f"{r['model']} {r['runtime']} {r['precision']}: bs{f['batch_size']} {f['scope']} failed: "
                         f"{(f['error'] or 'no message')[:200]}")
        if r["status"] != "ok":
            notes.append(f"{label(r)}: {r['status'].upper()}: {r['error'] or 'a check failed'}")
    accuracy = [[r["model"], r["runtime"], r["precision"], speedup_cell(r), gate(r["verify_passed"]),
                 reduced_cell(r), r["status"].upper() if r["status"] != "ok" else "ok"] for r in rows]
    out = ["### Speed and distance to the peak (best batch size of each runtime x precision)", "",
           markdown(["model", "runtime", "precision", "executed", "best bs", "samples/s (95% CI)",
                     "GFLOP/s (GOP/s int8)", "of its precision's peak", "peak kernel"], speed), "",
           "### Speed-up over fp32 (in the same run, interleaved) and accuracy", "",
           markdown(["model", "runtime", "precision", "speed-up over fp32 [95% CI]", "verify vs PyTorch",
                     "reduced-precision gate", "status"], accuracy)]
    if notes:
        out += ["", "Notes:", ""] + [f"{i}. {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(out)


# ---------------------------------------------------------------- the page

def _one(values, what: str) -> str:
    """The single value, or every distinct value with a warning that the records differ."""
    distinct = list(dict.fromkeys(v for v in values if v not in (None, "")))
    if not distinct:
        return "unknown"
    if len(distinct) == 1:
        return str(distinct[0])
    return f"{' / '.join(map(str, distinct))} (**the records come from {len(distinct)} different {what}**)"


def metadata(records: list[dict], command: list[str], now: datetime | None = None) -> dict:
    """Machine, ISA, threads, dates, commit and versions of the records, and the command."""
    now = now or datetime.now(timezone.utc)
    details = [(r.get("device") or {}).get("details") or {} for r in records]
    isa = [" ".join(d["isa"]) if d.get("isa") is not None else None for d in details]
    absent = sorted({f for d in details for f in (d.get("isa_checked") or []) if f not in (d.get("isa") or [])})
    threads = [d.get("threads_used") or ((r.get("runtime") or {}).get("settings") or {}).get("threads")
               for r, d in zip(records, details)]
    envs = [r.get("environment") or {} for r in records]
    commits = list(dict.fromkeys(e.get("git_commit") for e in envs if e.get("git_commit")))
    dirty = any(e.get("git_dirty") for e in envs)
    started = sorted((r.get("timestamps") or {}).get("started") for r in records
                     if (r.get("timestamps") or {}).get("started"))
    finished = sorted((r.get("timestamps") or {}).get("finished") for r in records
                      if (r.get("timestamps") or {}).get("finished"))
    packages = {}
    for e in envs:
        for name in ("torch", "onnxruntime", "openvino"):
            if (e.get("packages") or {}).get(name):
                packages.setdefault(name, set()).add(e["packages"][name])
    return {"machine": _one([(r.get("device") or {}).get("name") for r in records], "machines"),
            "isa": _one(isa, "ISA flag sets"), "isa_absent": absent,
            "threads": _one(threads, "thread counts"),
            "runs_from": started[0] if started else None, "runs_to": (finished or started or [None])[-1],
            "commits": commits, "dirty": dirty,
            "versions": {k: " / ".join(sorted(v)) for k, v in packages.items()},
            "generated_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": shlex.join(["python3", SCRIPT, *command]),
            "zoo_commands": list(dict.fromkeys(shlex.join(e["command"]) for e in envs if e.get("command"))),
            "peaks": peaks(records)}


def page(meta: dict, rows: list[dict], failures: list[str]) -> str:
    """docs/PERFORMANCE.md: the header (machine, ISA, threads, dates, commit, command), the
    models, the two tables, the peaks used, the failures and the zoo commands that measured."""
    commit = (", ".join(c[:12] for c in meta["commits"]) or "unknown") + (
        " (dirty: the tree had uncommitted changes)" if meta["dirty"] else "")
    dates = f"{meta['runs_from']} to {meta['runs_to']}" if meta["runs_from"] else "unknown"
    out = ["# Performance, measured", "",
           f"Generated by `{SCRIPT}` from the result records; do not edit by hand, run the command "
           "below again (or `--summarize --write-docs` to regenerate the page from the same records).", "",
           f"- Machine: {meta['machine']}, {meta['threads']} threads",
           f"- ISA flags: {meta['isa']}" + (f" (absent: {' '.join(meta['isa_absent'])})" if meta["isa_absent"] else ""),
           f"- Runs: {dates} (UTC); page generated {meta['generated_at']}",
           f"- Commit: {commit}",
           "- Versions: " + (", ".join(f"{k} {v}" for k, v in meta["versions"].items()) or "unknown"),
           f"- Command: `{meta['command']}`"
           + (f" (this page regenerated from its records by `{meta['regenerated_by']}`)"
              if meta.get("regenerated_by") else ""), "",
           "How to read: samples/s is the infer-only throughput (the runtime call on a resident batch) at the "
           "runtime x precision's best batch size, ± the relative half-width of its 95% interval (Student t over "
           "the timing windows); UNSTABLE: the interval did not reach its tolerance (the note says why). The "
           "fraction is of this machine's peak at the run's own precision (GOP/s for int8), the best of several "
           "kernels, named; '-' with a note: the model ran above the measured peak (the peak measurement is "
           "incomplete, no fraction is claimed). The speed-up is the reduced precision over the same runtime's "
           "fp32, timed in the same process in interleaved windows, with its 95% interval; ratios between "
           "separate runs are not shown.", ""]
    models = list(dict.fromkeys(r["model"] for r in rows))
    if models:
        info = []
        for m in models:
            mine = [r for r in rows if r["model"] == m]
            trained = {r["trained_weights"] for r in mine}
            weights = ("trained checkpoint" if trained == {True} else
                       "random weights (accuracy figures mean nothing)" if trained == {False} else
                       "unknown" if trained == {None} else "mixed")
            info.append([m, _one([r["variant"] for r in mine], "variants"),
                         number(mine[0]["gflop_per_sample"]), weights, _one([r["data"] for r in mine], "datasets"),
                         ",".join(map(str, sorted({b for r in mine for b in r["batch_sizes"]})))])
        out += ["### Models", "", markdown(["model", "variant", "GFLOP/sample", "weights", "data",
                                            "batch sizes"], info), ""]
    out += [tables(rows), ""]
    if meta.get("peaks"):
        out += ["### Peaks used (this machine, the runs' threads)", "", peaks_table(meta["peaks"]), ""]
    if failures:
        out += ["### Failed", ""] + [f"- {f}" for f in failures] + [""]
    if meta.get("noise"):
        out += noise_section(meta["noise"])
    if meta["zoo_commands"]:
        out += ["### The zoo commands that measured these records", ""] + \
               [f"- `{c}`" for c in meta["zoo_commands"]] + [""]
    return "\n".join(out)


def noise_section(noise: dict) -> list[str]:
    """The speed gate's noise targets (benchmarks/noise_targets.py's JSON): per experiment, how
    often the expected verdict came out, with the pairs' ratios and intervals."""
    out = ["### The speed gate's noise targets (`benchmarks/noise_targets.py`)", "",
           f"{noise.get('mode', 'ab')} mode, {noise.get('model')} bs{noise.get('batch_size')}, {noise.get('cpu')}, "
           f"{noise.get('date')}: identical = the same configuration on both sides; planted = the candidate slowed by "
           "10% on every call (a test-only runtime plug-in).", ""]
    cells = []
    for name, res in (noise.get("results") or {}).items():
        ratios = [r["ratio"] for r in res["rows"]]
        halves = [(r["high"] - r["low"]) / 2 / r["ratio"] for r in res["rows"] if r.get("low") is not None]
        cells.append([name, res["expected"], f"{res['hits']}/{res['pairs']}", str(res["target"]),
                      "met" if res["met"] else "MISSED",
                      f"{min(ratios):.3f}-{max(ratios):.3f}" if ratios else "-",
                      f"+-{sum(halves) / len(halves):.1%}" if halves else "-"])
    out += [markdown(["experiment", "expected verdict", "came out", "target", "", "ratios", "mean 95% half-width"],
                     cells), ""]
    return out


def peaks(records: list[dict]) -> list[dict]:
    """The peaks the records' fractions are against, once each: {precision, gflops, kernel,
    isa_bound, measured_at, cached, busy, others_cpu_share, unavailable}."""
    seen = {}
    for rec in records:
        dev = rec.get("device") or {}
        for peak in (dev.get("fp32_peak"), dev.get("precision_peak")):
            if not peak:
                continue
            key = (peak.get("precision"), peak.get("gflops"), peak.get("kernel"), peak.get("measured_at"))
            seen.setdefault(key, {"precision": peak.get("precision"), "gflops": peak.get("gflops"),
                                  "kernel": peak.get("kernel"), "unavailable": peak.get("unavailable"),
                                  "isa_bound": (peak.get("isa_bound") or {}).get("gflops"),
                                  "measured_at": peak.get("measured_at"), "cached": peak.get("cached"),
                                  "busy": peak.get("busy"), "others_cpu_share": peak.get("others_cpu_share")})
    return list(seen.values())


def peaks_table(found: list[dict]) -> str:
    cells = []
    for p in found:
        when = p["measured_at"] or "-"
        if p["busy"]:
            share = p["others_cpu_share"]
            when += (f" (other processes used {share:.0%} of the CPUs: may be low)" if share is not None
                     else " (measured on a busy machine: may be low)")
        value = (f"{number(p['gflops'])} {unit(p['precision'])}" if p["gflops"] is not None else
                 f"unavailable: {(p['unavailable'] or '')[:120]}")
        cells.append([p["precision"] or "?", value, p["kernel"] or "-",
                      f"{number(p['isa_bound'])} {unit(p['precision'])}" if p["isa_bound"] else "-", when])
    return markdown(["precision", "measured peak", "kernel that gave it", "ISA bound (not measured)", "measured at"],
                    cells)


def write_outputs(out: Path, meta: dict, rows: list[dict], failures: list[str], docs: Path | None) -> str:
    from zoo.fileutil import atomic_write_text
    md = page(meta, rows, failures)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "performance.md", md)
    atomic_write_text(out / "performance.json", json.dumps({"metadata": meta, "rows": rows, "failures": failures},
                                                           indent=1, allow_nan=False) + "\n")
    if docs is not None:
        docs.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(docs, md)
    return md


# ---------------------------------------------------------------- main

def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--runtimes", "--backends", dest="runtimes", default=RUNTIMES)
    ap.add_argument("--precisions", default=PRECISIONS)
    ap.add_argument("--batch-sizes", action="append", default=[], metavar="MODEL=1,2,4",
                    help="a model's batch sizes (defaults: " + ", ".join(f"{m}={s}" for m, s in BATCH_SIZES.items())
                    + ")")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "performance",
                    help="the records (out/<model>/), performance.json/.md, logs/")
    ap.add_argument("--work", type=Path, default=ROOT / "work" / "bench", help="random checkpoints, synthetic data")
    ap.add_argument("--cityscapes", type=Path, help="Cityscapes tree for ErfNet/Fast-SCNN (default: 4 synthetic "
                                                     "full-size images generated into --work)")
    ap.add_argument("--summarize", action="store_true",
                    help="run nothing: the tables from the newest record of each runtime x precision in --out")
    ap.add_argument("--write-docs", action="store_true", help=f"also write the page to --docs ({DOCS.relative_to(ROOT)})")
    ap.add_argument("--docs", type=Path, default=DOCS, help="the page --write-docs writes (default: %(default)s)")
    ap.add_argument("--noise", type=Path, help="a noise_targets.json of benchmarks/noise_targets.py to add to the page")
    ap.add_argument("extra", nargs="*", help="after --: arguments for zoo bench (e.g. --time-budget 20)")
    a = ap.parse_args(argv)
    models, runtimes, precisions = _names(a.models), _names(a.runtimes), _names(a.precisions)
    for option, names, text in (("--models", models, a.models), ("--runtimes", runtimes, a.runtimes),
                                ("--precisions", precisions, a.precisions)):
        if not names:
            print(f"error: {option} names nothing, got {text!r}", file=sys.stderr)
            return 2
    sizes = dict(BATCH_SIZES)
    for spec in a.batch_sizes:
        model, _, value = spec.partition("=")
        if not value.strip():
            print(f"error: --batch-sizes {spec!r}: expected MODEL=1,2,4", file=sys.stderr)
            return 2
        sizes[model.strip()] = value.strip()
    started = time.monotonic()
    paths: list[Path] = []
    failures: list[str] = []
    try:
        for i, model in enumerate(models, 1):
            if a.summarize:
                paths += newest_records(a.out, model)
                continue
            try:
                extra = list(a.extra)
                weights = ensure_weights(model, a.work)
                if weights:
                    extra += ["--weights", str(weights)]
                if model in CITYSCAPES:
                    extra += ["--data", str(ensure_cityscapes(a.work, a.cityscapes))]
                args = bench_args(model, runtimes, precisions, sizes.get(model), a.out, extra)
                result = run_model(model, args, a.out, a.out / "logs", started, f"[{i}/{len(models)}]")
            except Exception as exc:  # noqa: BLE001  one model's failure (its env, its checkpoint) stops only it
                msg = " ".join(str(exc).split()) or type(exc).__name__
                result = {"records": [], "error": f"{model}: {msg[:300]}"}
            paths += result["records"]
            if result["error"]:
                print(f"error: {result['error']}", file=sys.stderr, flush=True)
                failures.append(result["error"])
    except KeyboardInterrupt:
        print("error: interrupted; no tables written", file=sys.stderr)
        return 130
    records, refused = load(paths)
    for line in refused:
        print(f"error: record refused: {line}", file=sys.stderr)
    failures += [f"record refused: {line}" for line in refused]
    rows = ordered([r for r in map(row, records) if r is not None
                    if not a.summarize or (r["runtime"] in runtimes and r["precision"] in precisions)],
                   models, runtimes, precisions)
    if not rows:
        print(f"error: no record to tabulate ({'none in ' + str(a.out) if a.summarize else 'every run failed'})",
              file=sys.stderr)
        return 2
    meta = metadata([r for r in records if any(x["record"] == r["_path"] for x in rows)], argv)
    if a.summarize:  # the page names the command that measured, and this one that only regenerated it
        try:
            measured = json.loads((a.out / "performance.json").read_text())["metadata"]["command"]
        except (OSError, ValueError, KeyError, TypeError):
            measured = None
        if measured and "--summarize" not in measured:
            meta["regenerated_by"], meta["command"] = meta["command"], measured
    if a.noise is not None:
        try:
            meta["noise"] = json.loads(a.noise.read_text())
        except (OSError, ValueError) as exc:
            print(f"error: {a.noise}: not a noise_targets.json ({exc})", file=sys.stderr)
            return 2
    write_outputs(a.out, meta, rows, failures, a.docs if a.write_docs else None)
    print(tables(rows))
    print(f"\nwrote {a.out / 'performance.json'}, {a.out / 'performance.md'}"
          + (f", {a.docs}" if a.write_docs else "") + f" ({clock(time.monotonic() - started)})", file=sys.stderr)
    if failures:
        print(f"{len(failures)} failure(s): " + "; ".join(f[:120] for f in failures), file=sys.stderr)
        return 2
    return 1 if any(r["status"] == "invalid" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
