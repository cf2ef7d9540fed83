"""The record checker: the internal consistency rules of a result record, beyond its schema, in
the spirit of MLPerf's submission checker. JSON Schema can say that `value` is a number; it
cannot say that it is the number the record's own figures make. A record edited by hand, merged
wrongly or produced by a bug breaks one of these rules, and every reader refuses it
(zoo.schema.validate runs them after the schema: `zoo run` before writing, `zoo score`,
runner.validate.load_result for report, compare, matrix and `invoke run`'s summary).

Each rule recomputes a figure from the others exactly as the pipeline defines it:
  - accuracy: value == metrics[metric]; num_samples == metrics.num_samples == the dataset's;
    reference.delta == value - reference.value; reference.relative_drop == (reference.value -
    value) / reference.value; passed == (relative_drop <= tolerance) where there is a verdict; no
    verdict on a subset of the split (zoo.stages.score: a subset is not comparable);
    consistent_across_batch_sizes == (max_spread <= 1e-4); the accuracy's batch size ran its
    pipeline; predictions.num_samples == the dataset's;
  - perf (status ok blocks; zoo.pipeline, zoo.stats.throughput, zoo.shard): infer_only throughput
    == 1000 * batch_size / latency_ms.mean (sharded: the shards' throughputs added), num_samples ==
    iterations * batch_size, latency_ms.count == iterations; pipeline throughput == num_samples /
    wall_s, num_samples == the dataset's (sharded: the shards' added); pipeline_vs_infer and
    gflops (export.cost.flops_per_sample * throughput / 1e9) as derived;
  - verify: each decision fraction == flips / decisions, decision_flips == their sum, passed ==
    numerics_passed and every fraction within max_flip_fraction (numerics_passed itself needs
    max |reference|, which the record does not keep: not checked);
  - reduced_precision: each delta against the accuracy and the fp32 baseline it names, its
    verdict, the block's verdict by its criterion, speedup;
  - status (schema 1.10+): ok only when verify and reduced_precision passed; invalid only with a
    reason in `error` and a failed check. Older records may say ok over a failed check: readers
    take `status_of` (invalid), the record stays readable.
  - peak (schema 1.11+, when the peak is cached per machine, zoo.peaks): peak_fraction <= 1 (a
    block above its peak has a null fraction and a peak_note: the peak measurement is incomplete)
    and == gflops / peak_gflops (the peak used). Older records divided by the highest of several
    GEMM measurements, not the block's peak_gflops, and some are above 1: not checked.
Not checked (not recomputable from the record): stage shares, percentiles, CPU times.

Figures are recomputed in float64 as the pipeline computes them, and JSON keeps float64 exactly,
so the tolerance only absorbs another writer's order of operations (REL_TOL)."""
from __future__ import annotations

import math

REL_TOL, ABS_TOL = 1e-9, 1e-12
SPREAD_TOL = 1e-4  # zoo.stages.score: consistent_across_batch_sizes = max spread <= 1e-4
STATUS_RULES_SINCE = (1, 10)
PEAK_RULES_SINCE = (1, 11)
FRACTION_TOL = 1e-9  # peak_fraction <= 1 + this (float rounding of another writer)
GROUPS = ("accuracy", "batch_sizes", "perf", "verify", "reduced_precision", "status")


def version(record: dict) -> tuple[int, int]:
    major, _, minor = str(record.get("schema_version", "0.0")).partition(".")
    try:
        return int(major), int(minor)
    except ValueError:
        return 0, 0


def _close(a, b, rel: float = REL_TOL) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=ABS_TOL)


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# ---------------------------------------------------------------- why a run is invalid

def _short(text: str) -> str:
    return str(text).split(" (")[0]


def verify_reason(v: dict | None) -> str | None:
    """'verify failed: onnxruntime 1.31 vs torch (fp32): max_rel_diff 8.1 > rtol 0.0001; guide:
    12.00% decisions flipped > 0.01%', or None when verify passed (or did not run)."""
    if not v or v.get("passed", True):
        return None
    parts = []
    if not v.get("numerics_passed", True) and _num(v.get("max_rel_diff")):
        parts.append(f"max_rel_diff {v['max_rel_diff']:.3g} > rtol {v.get('rtol', '?')} (atol {v.get('atol', '?')})")
    limit = v.get("max_flip_fraction")
    for key, d in (v.get("decisions") or {}).items():
        if limit is not None and d["fraction"] > limit:
            parts.append(f"{key}: {d['fraction']:.2%} decisions flipped > {limit:.2%}")
    who = f"{v.get('candidate', '?')} vs {_short(v.get('reference', 'torch'))} ({v.get('precision', 'fp32')})"
    return f"verify failed: {who}: " + ("; ".join(parts) or "passed is false")


def reduced_reason(rp: dict | None) -> str | None:
    """Why a reduced_precision block failed its own fp32 baseline, or None when it passed."""
    if not rp or rp.get("passed", True):
        return None
    tol = rp.get("tolerance")
    if rp.get("criterion") == "fidelity_to_fp32":
        parts = [f"{f['metric']} {f['value']:.4f} < {1 - tol:.4f}" if tol is not None else f"{f['metric']} {f['value']:.4f}"
                 for f in rp.get("fidelity") or []]
    else:
        parts = [f"{d['name']} {d['metric']} relative drop {d['relative_drop']:.2%} > {tol:.2%}"
                 if d.get("relative_drop") is not None and tol is not None else f"{d['name']} {d['metric']} failed"
                 for d in rp.get("delta") or [] if not d.get("passed")]
    return (f"{rp.get('requested', '?')} failed its fp32 baseline ({rp.get('criterion', '?')}): "
            + ("; ".join(parts) or "passed is false"))


def invalid_reason(record: dict) -> str | None:
    """The one-line reason a run's figures are not to be trusted (its runtime beyond the model's
    tolerance of PyTorch, or a reduced precision beyond its fp32 baseline's), or None."""
    reasons = [r for r in (verify_reason(record.get("verify")), reduced_reason(record.get("reduced_precision"))) if r]
    return "; ".join(reasons) or None


def status_of(record: dict) -> str:
    """The status a reader must show: the record's, except that a record from before schema 1.10
    saying ok over a failed verify or reduced precision is invalid."""
    status = record.get("status", "ok")
    return "invalid" if status == "ok" and invalid_reason(record) else status


# ---------------------------------------------------------------- rules

def _accuracy(rec: dict):
    ds = rec.get("provenance", {}).get("dataset", {})
    n, expected = ds.get("num_samples"), ds.get("expected_samples")
    subset = expected is None or n != expected or ds.get("shard") is not None
    names = [a["name"] for a in rec.get("accuracy", [])]
    if len(set(names)) != len(names):
        yield "accuracy", "protocol names are unique", f"{names}"
    for i, a in enumerate(rec.get("accuracy", [])):
        at = f"accuracy/{i} ({a['name']})"
        figs = a.get("metrics") or {}
        if a["metric"] in figs and not _close(a["value"], figs[a["metric"]]):
            yield at, "value == metrics[metric]", f"{a['value']} != metrics.{a['metric']} {figs[a['metric']]}"
        if _num(figs.get("num_samples")) and a["num_samples"] != figs["num_samples"]:
            yield at, "num_samples == metrics.num_samples", f"{a['num_samples']} != {figs['num_samples']}"
        if n is not None and a["num_samples"] != n:
            yield at, "num_samples == provenance.dataset.num_samples", f"{a['num_samples']} != {n}"
        yield from _reference(at, a, subset)
    kept = rec.get("predictions")
    if kept and n is not None and kept.get("num_samples") not in (None, n):
        yield "predictions", "num_samples == provenance.dataset.num_samples", f"{kept['num_samples']} != {n}"


def _reference(at: str, a: dict, subset: bool):
    ref = a.get("reference")
    if ref is not None:
        if "delta" in ref and not _close(ref["delta"], a["value"] - ref["value"]):
            yield at, "reference.delta == value - reference.value", \
                f"{ref['delta']} != {a['value']} - {ref['value']}"
        if "relative_drop" in ref and ref["value"] and \
                not _close(ref["relative_drop"], (ref["value"] - a["value"]) / ref["value"]):
            yield at, "reference.relative_drop == (reference.value - value) / reference.value", \
                f"{ref['relative_drop']} != {(ref['value'] - a['value']) / ref['value']}"
    if a["passed"] is None:
        return
    if ref is None or "relative_drop" not in ref or "tolerance" not in ref:
        yield at, "passed needs a reference with relative_drop and tolerance", f"passed {a['passed']} without one"
    elif a["passed"] != (ref["relative_drop"] <= ref["tolerance"]):
        yield at, "passed == (reference.relative_drop <= reference.tolerance)", \
            f"passed {a['passed']}, relative_drop {ref['relative_drop']}, tolerance {ref['tolerance']}"
    if subset:
        yield at, "no pass/fail verdict on a subset of the split (not comparable to the reference)", \
            f"passed {a['passed']}"


def _batch_sizes(rec: dict):
    """The figures `zoo score` cannot recompute (only the first batch size's predictions are kept)."""
    piped = {p["batch_size"] for p in rec.get("perf", []) if p["scope"] == "pipeline" and p["status"] == "ok"}
    for i, a in enumerate(rec.get("accuracy", [])):
        at = f"accuracy/{i} ({a['name']})"
        spread, consistent = a.get("max_spread_across_batch_sizes"), a.get("consistent_across_batch_sizes")
        if spread is not None and consistent is not None and consistent != (spread <= SPREAD_TOL):
            yield at, f"consistent_across_batch_sizes == (max_spread_across_batch_sizes <= {SPREAD_TOL:g})", \
                f"{consistent} with spread {spread}"
        if a.get("batch_size") is not None and piped and a["batch_size"] not in piped:
            yield at, "batch_size is one whose pipeline ran (status ok)", f"bs{a['batch_size']}, pipelines {sorted(piped)}"


def _perf(rec: dict):
    n = rec.get("provenance", {}).get("dataset", {}).get("num_samples")
    flops = ((rec.get("export") or {}).get("cost") or {}).get("flops_per_sample")
    infer = {p["batch_size"]: p for p in rec.get("perf", []) if p["scope"] == "infer_only" and p["status"] == "ok"}
    for i, p in enumerate(rec.get("perf", [])):
        if p["status"] != "ok" or not _num(p.get("throughput")):
            continue
        at = f"perf/{i} (bs{p['batch_size']} {p['scope']})"
        rules = _infer_rules(p) if p["scope"] == "infer_only" else _pipeline_rules(p, n, infer.get(p["batch_size"]))
        for rule, ok, detail in (*rules, *_interval_rules(p)):
            if not ok:
                yield at, rule, detail
        if flops and _num(p.get("gflops")) and not _close(p["gflops"], flops * p["throughput"] / 1e9):
            yield at, "gflops == export.cost.flops_per_sample * throughput / 1e9", f"{p['gflops']}"
        if version(rec) >= PEAK_RULES_SINCE:
            yield from _peak_fraction(at, p)


def _peak_fraction(at: str, p: dict):
    frac = p.get("peak_fraction")
    if not _num(frac):
        return
    if frac > 1 + FRACTION_TOL:
        yield at, "peak_fraction <= 1 (above the peak: null, with a peak_note)", f"{frac}"
    if _num(p.get("gflops")) and _num(p.get("peak_gflops")) and p["peak_gflops"] > 0 and \
            not _close(frac, p["gflops"] / p["peak_gflops"]):
        yield at, "peak_fraction == gflops / peak_gflops", f"{frac} != {p['gflops'] / p['peak_gflops']}"


def _interval_rules(p: dict):
    """(1.11) the throughput's interval: a verdict its own figures make, around the throughput."""
    iv = p.get("interval")
    if not iv:
        return
    half, tol = iv.get("half_width"), iv.get("tolerance")
    yield "interval.windows == len(interval.window_throughputs)", iv["windows"] == len(iv["window_throughputs"]), \
        f"{iv['windows']} != {len(iv['window_throughputs'])}"
    if not p.get("shards"):
        yield "interval.stable == (interval.half_width <= interval.tolerance)", \
            iv["stable"] == (half is not None and half <= tol), f"stable {iv['stable']} with +-{half} vs {tol}"
    if iv.get("low") is not None and iv.get("high") is not None:
        yield "interval.low <= throughput <= interval.high", \
            iv["low"] * (1 - 1e-9) <= p["throughput"] <= iv["high"] * (1 + 1e-9), \
            f"{p['throughput']} outside [{iv['low']}, {iv['high']}]"


def _infer_rules(p: dict):
    bs, lat, shards = p["batch_size"], p.get("latency_ms") or {}, p.get("shards")
    if shards:
        tp = sum(s["throughput"] for s in shards)
        yield "throughput == the shards' throughputs added", _close(p["throughput"], tp), f"{p['throughput']} != {tp}"
        count = sum(s["num_samples"] for s in shards)
        yield "num_samples == the shards' added", p.get("num_samples") in (None, count), f"{p.get('num_samples')} != {count}"
    elif _num(lat.get("mean")) and lat["mean"] > 0:
        tp = 1000.0 * bs / lat["mean"]
        yield "throughput == 1000 * batch_size / latency_ms.mean", _close(p["throughput"], tp), \
            f"{p['throughput']} != {tp}"
    if _num(p.get("iterations")):
        yield "num_samples == iterations * batch_size", p.get("num_samples") in (None, p["iterations"] * bs), \
            f"{p.get('num_samples')} != {p['iterations']} * {bs}"
        yield "latency_ms.count == iterations", lat.get("count") in (None, p["iterations"]), \
            f"{lat.get('count')} != {p['iterations']}"


def _pipeline_rules(p: dict, n: int | None, infer: dict | None):
    count = p.get("num_samples")
    if _num(p.get("wall_s")) and _num(count):
        tp = count / p["wall_s"] if p["wall_s"] else 0.0
        yield "throughput == num_samples / wall_s", _close(p["throughput"], tp), f"{p['throughput']} != {tp}"
    if p.get("shards"):
        added = sum(s["num_samples"] for s in p["shards"])
        yield "num_samples == the shards' added", count in (None, added), f"{count} != {added}"
    yield "num_samples == provenance.dataset.num_samples", n is None or count in (None, n), f"{count} != {n}"
    if _num(p.get("pipeline_vs_infer")) and infer is not None and infer["throughput"]:
        ratio = p["throughput"] / infer["throughput"]
        yield "pipeline_vs_infer == throughput / infer_only throughput", _close(p["pipeline_vs_infer"], ratio), \
            f"{p['pipeline_vs_infer']} != {ratio}"


def _verify(rec: dict):
    v = rec.get("verify")
    if not v or not v.get("decisions"):
        return
    flips = 0
    for key, d in v["decisions"].items():
        flips += d["flips"]
        want = d["flips"] / d["decisions"] if d["decisions"] else 0.0
        if not _close(d["fraction"], want):
            yield f"verify/decisions/{key}", "fraction == flips / decisions", f"{d['fraction']} != {want}"
    if v.get("decision_flips") is not None and v["decision_flips"] != flips:
        yield "verify", "decision_flips == the decisions' flips added", f"{v['decision_flips']} != {flips}"
    if "numerics_passed" in v and v.get("max_flip_fraction") is not None:
        want = bool(v["numerics_passed"] and all(d["fraction"] <= v["max_flip_fraction"] for d in v["decisions"].values()))
        if v["passed"] != want:
            yield "verify", "passed == numerics_passed and every decision fraction <= max_flip_fraction", \
                f"passed {v['passed']}, expected {want}"


def _reduced(rec: dict):
    rp = rec.get("reduced_precision")
    if not rp:
        return
    acc = {a["name"]: a["value"] for a in rec.get("accuracy", [])}
    fp32 = {a["name"]: a["value"] for a in rp["fp32_baseline"].get("accuracy", [])}
    tol = rp.get("tolerance")
    if sorted(d["name"] for d in rp["delta"]) != sorted(acc):
        yield "reduced_precision/delta", "one delta per accuracy protocol", f"{[d['name'] for d in rp['delta']]}"
    for i, d in enumerate(rp["delta"]):
        yield from _one_delta(f"reduced_precision/delta/{i} ({d['name']})", d, acc.get(d["name"]),
                              fp32.get(d["name"]), tol)
    if rp["criterion"] == "accuracy_delta":
        want = all(d["passed"] for d in rp["delta"])
    elif tol is not None and rp.get("fidelity"):
        want = rp["fidelity"][0]["value"] >= 1 - tol
    else:
        want = rp["passed"]
    if rp["passed"] != want:
        yield "reduced_precision", f"passed follows its criterion ({rp['criterion']})", f"passed {rp['passed']}, expected {want}"
    yield from _speedup(rec, rp)


def _one_delta(at: str, d: dict, value, fp32, tol):
    if value is not None and not _close(d["value"], value):
        yield at, "value == the accuracy's value", f"{d['value']} != {value}"
    if fp32 is not None and not _close(d["fp32"], fp32):
        yield at, "fp32 == fp32_baseline.accuracy's value", f"{d['fp32']} != {fp32}"
    if not _close(d["delta"], d["value"] - d["fp32"]):
        yield at, "delta == value - fp32", f"{d['delta']} != {d['value'] - d['fp32']}"
    drop = (d["fp32"] - d["value"]) / abs(d["fp32"]) if d["fp32"] else None
    if d.get("relative_drop") is not None and drop is not None and not _close(d["relative_drop"], drop):
        yield at, "relative_drop == (fp32 - value) / |fp32|", f"{d['relative_drop']} != {drop}"
    if tol is not None and d.get("relative_drop") is not None and d["passed"] != (d["relative_drop"] <= tol):
        yield at, "passed == (relative_drop <= tolerance)", f"passed {d['passed']}, relative_drop {d['relative_drop']}"


def _speedup(rec: dict, rp: dict):
    """Before 1.11 the speed-up is the sweep's throughput over the fp32 pass's; from 1.11 it is the
    interleaved ratio (zoo.pipeline.interleaved), which must lie within its own interval."""
    base = rp["fp32_baseline"]
    iv = base.get("speedup_interval")
    if iv is not None:
        if base.get("speedup") is not None and iv.get("low") is not None and \
                not iv["low"] * (1 - 1e-9) <= base["speedup"] <= iv["high"] * (1 + 1e-9):
            yield "reduced_precision/fp32_baseline", "low <= speedup <= high (speedup_interval)", \
                f"{base['speedup']} outside [{iv['low']}, {iv['high']}]"
        return
    fast = next((p["throughput"] for p in rec.get("perf", []) if p["batch_size"] == base["batch_size"]
                 and p["scope"] == "infer_only" and p["status"] == "ok"), None)
    if base.get("speedup") is not None and fast and base["throughput_samples_per_s"] and \
            not _close(base["speedup"], fast / base["throughput_samples_per_s"]):
        yield "reduced_precision/fp32_baseline", "speedup == infer_only throughput / fp32 throughput", \
            f"{base['speedup']} != {fast / base['throughput_samples_per_s']}"


def _status(rec: dict):
    if version(rec) < STATUS_RULES_SINCE:
        return  # status_of derives it for readers
    reason = invalid_reason(rec)
    if rec["status"] == "ok" and reason:
        yield "status", "status ok only when verify and reduced_precision passed", reason
    if rec["status"] == "invalid" and not reason:
        yield "status", "status invalid only over a failed verify or reduced_precision", "both passed"
    if rec["status"] == "invalid" and not rec.get("error"):
        yield "status", "status invalid names its reason in error", "error is empty"


RULES = {"accuracy": _accuracy, "batch_sizes": _batch_sizes, "perf": _perf, "verify": _verify,
         "reduced_precision": _reduced, "status": _status}


def broken(record: dict, groups=GROUPS) -> list[str]:
    """Every broken rule of the record as 'at <where>: <rule> (<detail>)', in GROUPS order."""
    out = []
    for g in groups:
        try:
            out += [f"at {where}: {rule} ({detail})" for where, rule, detail in RULES[g](record)]
        except (KeyError, TypeError, ValueError, ZeroDivisionError, AttributeError) as exc:  # still one line
            out.append(f"in {g}: a figure its rules need is missing or malformed ({type(exc).__name__}: {exc})")
    return out
