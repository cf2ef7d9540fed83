"""Compare two sets of result records: the regression gate a CI matrix runs.

    invoke compare BASELINE NEW [--max-accuracy-drop 0.01] [--max-throughput-drop 0.10] [--out DIR]

BASELINE and NEW are result folders (or single result files). Records are matched by
(model, variant, runtime, device, precision); when a key has several records the newest
(`timestamps.finished`) is used. For each match:
  - accuracy, per protocol: relative drop (baseline - new) / baseline of the headline value; a
    drop above `max_accuracy_drop` (default 1%, the guides' criterion) is a regression, and so is
    a new run whose verify stage failed (its runtime's outputs beyond the model's tolerance of
    PyTorch's: schema 1.6), and a new run whose status is not ok (schema 1.10 "invalid": verify or
    its reduced precision failed; an older record that said ok over a failed verify counts as
    invalid too, zoo.checks.status_of);
  - throughput, per batch size and scope (infer_only, pipeline): ratio new / baseline; a drop
    above `max_throughput_drop` (default 10%) is a regression; a batch size that ran in the
    baseline but failed in the new run is a regression too.
A key present in the baseline but absent from NEW is a regression unless `allow_missing`.
Reduced-precision runs (precision != fp32) are also checked within NEW alone (schema 1.7): a
record whose `reduced_precision.passed` is false (its accuracy delta to the fp32 baseline it ran,
or for untrained weights its fidelity to fp32, beyond the guides' 1%) is a regression, and so is
a protocol whose value is more than `max_accuracy_drop` (relative) below the fp32 run of the same
model / variant / runtime / device in NEW.
With `accuracy_only` (results from another machine: throughput is not comparable, accuracy is)
the device name leaves the key (its type stays: cpu, cuda, npu) and throughput is not compared.
Records are read through runner.validate: the schema, then the record checker's rules (zoo.checks:
a figure that is not what the record's other figures make); a record that breaks one is bad input.
Exit codes (the CLI): 0 no regression, 1 regression, 2 bad input (missing folder, invalid record).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from runner.validate import ResultError, load_result, load_results
from zoo.checks import invalid_reason, status_of


@dataclass
class Row:
    kind: str                 # "accuracy" | "throughput" | "missing"
    key: str                  # model / variant / runtime / device / precision
    item: str                 # protocol, or "bs<N> <scope>"
    baseline: float | None
    new: float | None
    change: float | None      # accuracy: relative drop; throughput: new / baseline
    status: str               # "ok" | "regression" | "improved" | "new" | "missing" | "failed"
    note: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Comparison:
    rows: list[Row] = field(default_factory=list)
    thresholds: dict = field(default_factory=dict)

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.status in ("regression", "missing", "failed")]


def _records(path: Path) -> list[dict]:
    path = Path(path)
    if path.is_file():
        return [load_result(path)]
    records = load_results(path)
    if not records:
        raise ResultError(f"{path}: no result records found")
    return records


def record_key(rec: dict, device_name: bool = True) -> str:
    dev = rec.get("device", {})
    device = f"{dev.get('type', '?')}:{dev.get('name', '?')}" if device_name else f"{dev.get('type', '?')}:any"
    return " / ".join([rec["model"]["name"], rec["model"].get("variant") or "-", rec["runtime"]["name"],
                       device, rec.get("precision", "?")])


def latest_by_key(records: list[dict], device_name: bool = True) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for rec in records:
        k = record_key(rec, device_name)
        if k not in out or rec["timestamps"]["finished"] > out[k]["timestamps"]["finished"]:
            out[k] = rec
    return out


def _perf(rec: dict) -> dict[tuple[int, str], dict]:
    return {(p["batch_size"], p["scope"]): p for p in rec.get("perf", [])}


def compare(baseline: list[dict], new: list[dict], max_accuracy_drop: float = 0.01,
            max_throughput_drop: float = 0.10, allow_missing: bool = False, accuracy_only: bool = False) -> Comparison:
    if not 0 <= max_accuracy_drop < 1 or not 0 <= max_throughput_drop < 1:
        raise ResultError("thresholds must be fractions in [0, 1)")
    result = Comparison(thresholds={"max_accuracy_drop": max_accuracy_drop,
                                    "max_throughput_drop": None if accuracy_only else max_throughput_drop,
                                    "allow_missing": allow_missing, "accuracy_only": accuracy_only})
    base, cand = latest_by_key(baseline, not accuracy_only), latest_by_key(new, not accuracy_only)
    for key in sorted(set(base) | set(cand)):
        if key not in cand:
            result.rows.append(Row("missing", key, "-", None, None, None, "ok" if allow_missing else "missing",
                                   "in the baseline, not in the new results"))
            continue
        if key not in base:
            result.rows.append(Row("missing", key, "-", None, None, None, "new", "no baseline"))
            continue
        b, n = base[key], cand[key]
        b_acc = {a["name"]: a for a in b.get("accuracy", [])}
        n_acc = {a["name"]: a for a in n.get("accuracy", [])}
        for proto in sorted(set(b_acc) | set(n_acc)):
            ba, na = b_acc.get(proto), n_acc.get(proto)
            if ba is None or na is None:
                result.rows.append(Row("accuracy", key, proto, ba and ba["value"], na and na["value"], None,
                                       "new" if ba is None else ("ok" if allow_missing else "missing"),
                                       "protocol only in one set"))
                continue
            bv, nv = float(ba["value"]), float(na["value"])
            drop = (bv - nv) / abs(bv) if bv else (0.0 if nv == bv else float("inf"))
            note = ""
            if ba.get("num_samples") != na.get("num_samples"):
                note = f"different sample counts ({ba.get('num_samples')} vs {na.get('num_samples')})"
            status = "regression" if drop > max_accuracy_drop else ("improved" if drop < -max_accuracy_drop else "ok")
            result.rows.append(Row("accuracy", key, f"{proto} {na['metric']}", bv, nv, drop, status, note))
        status = status_of(n)  # schema 1.10: invalid = written, but its numerics failed a check
        if status != "ok":
            result.rows.append(Row("accuracy", key, "record status", None, None, None, "failed",
                                   f"{status}: {n.get('error') or invalid_reason(n) or 'no reason given'}"[:300]))
        ver = n.get("verify")  # schema 1.6: the new run's runtime checked against PyTorch
        if ver is not None and not ver["passed"]:
            result.rows.append(Row("accuracy", key, "verify vs PyTorch", None, ver["max_rel_diff"], None, "failed",
                                   f"{ver['candidate']}: {ver.get('decision_flips', 0)} decision flips, max_rel_diff "
                                   f"{ver['max_rel_diff']:.2g}, beyond the model's tolerance"))
        if accuracy_only:
            continue
        bp, np_ = _perf(b), _perf(n)
        for bs, scope in sorted(set(bp) | set(np_)):
            item = f"bs{bs} {scope}"
            pb, pn = bp.get((bs, scope)), np_.get((bs, scope))
            if pb is None or pb.get("status") != "ok":
                if pn is not None and pn.get("status") == "ok":
                    result.rows.append(Row("throughput", key, item, None, pn["throughput"], None, "new",
                                           "not measured in the baseline"))
                continue
            if pn is None:
                result.rows.append(Row("throughput", key, item, pb["throughput"], None, None,
                                       "ok" if allow_missing else "missing", "not measured in the new run"))
                continue
            if pn.get("status") != "ok":
                result.rows.append(Row("throughput", key, item, pb["throughput"], None, None, "failed",
                                       (pn.get("error") or "failed")[:200]))
                continue
            ratio = pn["throughput"] / pb["throughput"] if pb["throughput"] else float("inf")
            status = ("regression" if ratio < 1 - max_throughput_drop
                      else "improved" if ratio > 1 + max_throughput_drop else "ok")
            result.rows.append(Row("throughput", key, item, pb["throughput"], pn["throughput"], ratio, status))
    result.rows += _reduced_precision_rows(cand, max_accuracy_drop)
    return result


def _fp32_key(key: str) -> str:
    """The key of the fp32 run of the same model / variant / runtime / device."""
    return key.rsplit(" / ", 1)[0] + " / fp32"


def _own_baseline_row(key: str, rp: dict) -> Row:
    """The run's `reduced_precision` verdict, with the figure its criterion judged worst: the
    largest relative drop against fp32 (accuracy_delta), or 1 - the lowest fidelity."""
    if rp["criterion"] == "accuracy_delta":
        judged = [(d["name"], d["fp32"], d["value"], d["relative_drop"]) for d in rp["delta"]]
    else:
        judged = [(f["metric"], None, f["value"], 1 - f["value"]) for f in rp["fidelity"]]
    name, fp32, value, drop = max(judged, key=lambda j: float("inf") if j[3] is None else j[3],
                                  default=("-", None, None, None))
    note = "" if rp["passed"] else \
        f"{name} beyond the tolerance {rp.get('tolerance', '?')} of the run's own fp32 baseline"
    return Row("accuracy", key, f"{rp['requested']} vs its fp32 baseline ({rp['criterion']})", fp32, value, drop,
               "ok" if rp["passed"] else "regression", note)


def _reduced_precision_rows(cand: dict[str, dict], max_accuracy_drop: float) -> list[Row]:
    """Within one result set: each reduced-precision run against its own recorded fp32 baseline
    (reduced_precision.passed) and against the set's fp32 run of the same key, per protocol."""
    rows = []
    for key in sorted(cand):
        rec = cand[key]
        if rec.get("precision", "fp32") == "fp32":
            continue
        if rec.get("reduced_precision") is not None:
            rows.append(_own_baseline_row(key, rec["reduced_precision"]))
        fp32 = cand.get(_fp32_key(key))
        ref = {a["name"]: a for a in fp32.get("accuracy", [])} if fp32 is not None else {}
        for a in rec.get("accuracy", []):
            r = ref.get(a["name"])
            if r is None:
                continue
            fv, v = float(r["value"]), float(a["value"])
            drop = (fv - v) / abs(fv) if fv else (0.0 if v == fv else float("inf"))
            note = "" if r.get("num_samples") == a.get("num_samples") else \
                f"different sample counts ({r.get('num_samples')} vs {a.get('num_samples')})"
            rows.append(Row("accuracy", key, f"{a['name']} {a['metric']} vs the fp32 run", fv, v, drop,
                            "regression" if drop > max_accuracy_drop else "ok", note))
    return rows


def _fmt(v, digits=4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def to_markdown(c: Comparison) -> str:
    t = c.thresholds
    thr_text = ("throughput not compared (accuracy only: results from different machines)"
                if t.get("accuracy_only") else f"throughput drop > {t['max_throughput_drop']:.0%}")
    lines = ["# Comparison", "",
             f"Thresholds: accuracy drop > {t['max_accuracy_drop']:.1%} (relative), {thr_text}. "
             f"Regressions: **{len(c.regressions)}**.", ""]
    tables = (("accuracy", "Accuracy", "protocol", "relative drop", 4, "{:+.2%}"),
              ("throughput", "Throughput (samples/s)", "batch, scope", "new/baseline", 2, "{:.2f}x"))
    for kind, title, item, change, digits, change_fmt in tables:
        rows = [r for r in c.rows if r.kind == kind]
        if not rows:
            continue
        lines += [f"## {title}", "", f"| run | {item} | baseline | new | {change} | status | note |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r.key} | {r.item} | {_fmt(r.baseline, digits)} | {_fmt(r.new, digits)} | "
                  f"{'-' if r.change is None else change_fmt.format(r.change)} | {r.status} | {r.note} |" for r in rows]
        lines.append("")
    miss = [r for r in c.rows if r.kind == "missing"]
    if miss:
        lines += ["## Runs in only one set", ""] + [f"- {r.key}: {r.note} ({r.status})" for r in miss] + [""]
    return "\n".join(lines)


def run_compare(baseline: Path, new: Path, out: Path | None = None, **kw) -> tuple[Comparison, str]:
    c = compare(_records(baseline), _records(new), **kw)
    md = to_markdown(c)
    if out is not None:
        from zoo.fileutil import atomic_write_text
        out = Path(out)
        atomic_write_text(out / "compare.md", md)
        from zoo.schema import finite_or_none
        atomic_write_text(out / "compare.json", json.dumps(finite_or_none(
            {"kind": "zoo.comparison", "baseline": str(baseline), "new": str(new), "thresholds": c.thresholds,
             "regressions": len(c.regressions), "rows": [r.as_dict() for r in c.rows]}), indent=1, allow_nan=False) + "\n")
    return c, md
