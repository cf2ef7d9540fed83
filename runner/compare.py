"""Compare two sets of result records: the regression gate a CI matrix runs.

    invoke compare BASELINE NEW [--max-accuracy-drop 0.01] [--max-throughput-drop 0.10] [--out DIR]

BASELINE and NEW are result folders (or single result files). Records are matched by
(model, variant, runtime, device type, precision): a run on another CPU model is compared (its
accuracy judged, its throughput "not comparable"); when a key has several records the newest
(`timestamps.finished`) is used. For each match:
  - accuracy, per protocol: relative drop (baseline - new) / baseline of the headline value; a
    drop above `max_accuracy_drop` (default 1%, the guides' criterion) is a regression, and so is
    a new run whose verify stage failed (its runtime's outputs beyond the model's tolerance of
    PyTorch's: schema 1.6), and a new run whose status is not ok (schema 1.10 "invalid": verify or
    its reduced precision failed; an older record that said ok over a failed verify counts as
    invalid too, zoo.checks.status_of);
  - throughput, per batch size and scope (infer_only, pipeline): the ratio new / baseline of the
    records' throughputs, judged with both sides' noise (`judge_throughput`): each side's window
    throughputs (schema 1.11 `interval.window_throughputs`; older records: 1000 * batch /
    `stability.window_means_ms`), a two-sided Mann-Whitney U test of the two window series and a
    seeded percentile bootstrap 95% interval of the ratio of means (each side's mean time per
    sample over its windows, i.e. its throughput as the record computes it). Verdict "faster" /
    "slower" only when p < 0.05, the interval excludes 1 and |ratio - 1| >= `min_effect` (default
    2%); else "no significant change"; "not comparable" when the CPU, its ISA flags, the threads
    or the executed precision differ, or a side is unstable or has fewer than 3 windows (not a
    regression, counted in the summary). A regression is "slower" by more than
    `max_throughput_drop` (default 10%); a batch size that ran in the baseline but failed in the
    new run is a regression too.
A key present in the baseline but absent from NEW is a regression unless `allow_missing`.
Reduced-precision runs (precision != fp32) are also checked within NEW alone (schema 1.7): a
record whose `reduced_precision.passed` is false (its accuracy delta to the fp32 baseline it ran,
or for untrained weights its fidelity to fp32, beyond the guides' 1%) is a regression, and so is
a protocol whose value is more than `max_accuracy_drop` (relative) below the fp32 run of the same
model / variant / runtime / device in NEW.
With `accuracy_only` (results from another machine: throughput is not comparable, accuracy is)
throughput is not compared at all. Across runs the windows only know the noise within each run,
not what changed on a shared machine between them: for a throughput gate, `invoke ab` times both
configurations interleaved in one process (zoo.ab).
Records are read through runner.validate: the schema, then the record checker's rules (zoo.checks:
a figure that is not what the record's other figures make); a record that breaks one is bad input.
Exit codes (the CLI): 0 no regression, 1 regression, 2 bad input (missing folder, invalid record).
"""
from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runner.validate import ResultError, load_result, load_results
from zoo.checks import invalid_reason, status_of

ALPHA = 0.05            # the rank test's significance level
CONFIDENCE = 0.95       # of the ratio's bootstrap interval
RESAMPLES = 9999        # bootstrap resamples
SEED = 22               # the bootstrap's seed: the same records give the same interval
MIN_WINDOWS = 3         # a side with fewer windows has no uncertainty to judge with
VERDICTS = ("faster", "slower", "no significant change", "not comparable")
WIDTH = 100             # the terminal text's lines fit this many columns
METHOD = (f"two-sided Mann-Whitney U over the window throughputs (p < {ALPHA}); ratio interval: "
          f"percentile bootstrap ({RESAMPLES} resamples, seed {SEED}) of the ratio of means "
          "(each side's mean time per sample over its windows)")


@dataclass
class Row:
    kind: str                 # "accuracy" | "throughput" | "missing"
    key: str                  # model / variant / runtime / device / precision
    item: str                 # protocol, or "bs<N> <scope>"
    baseline: float | None
    new: float | None
    change: float | None      # accuracy: relative drop; throughput: new / baseline (the records' figures)
    status: str               # "ok" | "regression" | "improved" | "new" | "missing" | "failed" | "not comparable"
    note: str = ""
    # throughput rows judged with both sides' noise (judge_throughput); None elsewhere
    verdict: str | None = None               # one of VERDICTS
    ratio_low: float | None = None           # the 95% bootstrap interval of new / baseline
    ratio_high: float | None = None
    p_value: float | None = None             # two-sided Mann-Whitney U of the window throughputs
    reasons: list[str] = field(default_factory=list)  # why not comparable (record-level first)
    baseline_half_width: float | None = None  # relative half-width of each side's 95% interval
    new_half_width: float | None = None
    baseline_unstable: bool = False
    new_unstable: bool = False
    baseline_windows: int = 0
    new_windows: int = 0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["reasons"] = list(self.reasons)
        return d


@dataclass
class Comparison:
    rows: list[Row] = field(default_factory=list)
    thresholds: dict = field(default_factory=dict)

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.status in ("regression", "missing", "failed")]

    @property
    def verdicts(self) -> dict[str, int]:
        """How many throughput rows got each verdict (every verdict listed, zeros too)."""
        counts = dict.fromkeys(VERDICTS, 0)
        for r in self.rows:
            if r.verdict is not None:
                counts[r.verdict] += 1
        return counts


# ---------------------------------------------------------------- throughput with its noise

@dataclass
class Side:
    """One perf block as the judge sees it: its figure, its window throughputs (samples/s), the
    relative half-width of its 95% interval and whether the record called it stable (None: no
    stability verdict recorded)."""
    throughput: float
    windows: list[float]
    half_width: float | None
    stable: bool | None


def side_of(block: dict) -> Side:
    """The windows of a perf block: `interval` (schema 1.11) or, in older records, the
    stop-when-stable `stability` block's mean latencies per window (throughput = 1000 * batch /
    mean_ms); a block with neither has no windows."""
    iv, st = block.get("interval"), block.get("stability")
    if iv:
        windows = [float(w) for w in iv.get("window_throughputs") or [] if w and w > 0]
        half, stable = iv.get("half_width"), iv.get("stable")
    elif st:
        windows = [1000.0 * block["batch_size"] / m for m in st.get("window_means_ms") or [] if m and m > 0]
        half, stable = _relative_half_width(windows), st.get("stable")
    else:
        windows, half, stable = [], None, None
    return Side(float(block["throughput"]), windows, half, stable)


def _relative_half_width(rates: list[float]) -> float | None:
    """Older records carry no interval: the relative half-width of the Student-t 95% interval of
    the windows' mean time per sample (as zoo.stats states the 1.11 one); None below MIN_WINDOWS."""
    if len(rates) < MIN_WINDOWS:
        return None
    from scipy.stats import t
    per = np.array([1.0 / r for r in rates])
    return float(t.ppf(0.5 + CONFIDENCE / 2, per.size - 1) * per.std(ddof=1) / math.sqrt(per.size) / per.mean())


def _threads(rec: dict) -> dict[str, object]:
    dev = (rec.get("device") or {}).get("details") or {}
    settings = (rec.get("runtime") or {}).get("settings") or {}
    return {"threads used": dev.get("threads_used"), "runtime threads": settings.get("threads")}


def _isa(rec: dict) -> tuple[set, set] | None:
    details = (rec.get("device") or {}).get("details") or {}
    if details.get("isa") is None:
        return None  # before schema 1.7: not recorded, nothing to compare
    flags = set(details["isa"])
    return flags, set(details.get("isa_checked") or flags)


def _executed(rec: dict, batch_size: int | None = None) -> str:
    """The precision the runtime executed: the reduced-precision block's read-back, or per batch
    size where the runtime records one (openvino), else the record's precision."""
    per_batch = ((rec.get("runtime") or {}).get("settings") or {}).get("executed_precision_per_batch") or {}
    if batch_size is not None and str(batch_size) in per_batch:
        return str(per_batch[str(batch_size)])
    rp = rec.get("reduced_precision") or {}
    return str(rp.get("executed") or rec.get("precision", "?"))


def comparable_reasons(baseline: dict, new: dict, batch_size: int | None = None) -> list[str]:
    """Why two records' throughputs (at `batch_size`) are not comparable (empty: they are):
    another CPU model, other ISA flags (among the flags both looked for), other thread counts,
    another executed precision. A figure one record lacks (an older schema) is not held against it."""
    reasons = []
    bd, nd = baseline.get("device") or {}, new.get("device") or {}
    if bd.get("name") != nd.get("name"):
        reasons.append(f"CPU differs ({bd.get('name')} vs {nd.get('name')})")
    bi, ni = _isa(baseline), _isa(new)
    if bi is not None and ni is not None:
        checked = bi[1] & ni[1]
        only_b, only_n = sorted((bi[0] - ni[0]) & checked), sorted((ni[0] - bi[0]) & checked)
        if only_b or only_n:
            diff = ", ".join([f"+{f}" for f in only_n] + [f"-{f}" for f in only_b])
            reasons.append(f"ISA flags differ (new: {diff})")
    bt, nt = _threads(baseline), _threads(new)
    for what in bt:
        if bt[what] is not None and nt[what] is not None and bt[what] != nt[what]:
            reasons.append(f"{what} differ ({bt[what]} vs {nt[what]})")
    precision = _executed(baseline, batch_size), _executed(new, batch_size)
    if precision[0] != precision[1]:
        reasons.append(f"executed precision differs ({precision[0]} vs {precision[1]})")
    return reasons


def _ratio_interval(b: list[float], n: list[float]) -> tuple[float, float]:
    """The percentile bootstrap 95% interval of new / baseline, as the ratio of means: the
    baseline's mean time per sample over its windows / the new one's (each side resampled on its
    own, seeded: the same windows give the same interval)."""
    from scipy.stats import bootstrap
    per_b, per_n = 1.0 / np.asarray(b, dtype=np.float64), 1.0 / np.asarray(n, dtype=np.float64)
    if np.ptp(per_b) == 0 and np.ptp(per_n) == 0:  # no spread on either side: nothing to resample
        ratio = float(per_b.mean() / per_n.mean())
        return ratio, ratio

    def ratio_of_means(x, y, axis=-1):
        return np.mean(x, axis=axis) / np.mean(y, axis=axis)

    res = bootstrap((per_b, per_n), ratio_of_means, vectorized=True, paired=False, n_resamples=RESAMPLES,
                    confidence_level=CONFIDENCE, method="percentile", rng=np.random.default_rng(SEED))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def judge_throughput(pb: dict, pn: dict, reasons: list[str] | tuple = (), min_effect: float = 0.02,
                     max_throughput_drop: float = 0.10) -> dict:
    """The verdict on one paired throughput figure (two ok perf blocks), as Row fields: change
    (new / baseline of the records' figures), ratio_low / ratio_high, p_value, verdict, reasons,
    status, each side's half-width, instability and window count. `reasons` are the records'
    (comparable_reasons); an unstable side or one with fewer than MIN_WINDOWS windows adds its own.
    "faster" / "slower" need p < ALPHA, the interval beyond 1 and |ratio - 1| >= min_effect; the
    status is "regression" only for "slower" by more than max_throughput_drop."""
    b, n = side_of(pb), side_of(pn)
    change = n.throughput / b.throughput if b.throughput else float("inf")
    out = {"change": change, "ratio_low": None, "ratio_high": None, "p_value": None,
           "baseline_half_width": b.half_width, "new_half_width": n.half_width,
           "baseline_unstable": b.stable is False, "new_unstable": n.stable is False,
           "baseline_windows": len(b.windows), "new_windows": len(n.windows)}
    why = list(reasons)
    for name, side in (("baseline", b), ("new", n)):
        if side.stable is False:
            why.append(f"{name} unstable" + (f" (±{side.half_width:.1%})" if side.half_width is not None else ""))
    lacking = [(name, len(side.windows)) for name, side in (("baseline", b), ("new", n))
               if len(side.windows) < MIN_WINDOWS]
    if len(lacking) == 2 and lacking[0][1] == lacking[1][1] == 0:
        why.append("no windows on either side")
    else:
        why += [f"{name}: " + (f"{k} window{'s' * (k != 1)}, too few" if k else "no windows") for name, k in lacking]
    if why:
        return {**out, "verdict": "not comparable", "status": "not comparable", "reasons": why,
                "note": "; ".join(why)}
    from scipy.stats import mannwhitneyu
    p = float(mannwhitneyu(n.windows, b.windows, alternative="two-sided").pvalue)
    p = 1.0 if math.isnan(p) else p  # every window equal on both sides: no evidence of a change
    low, high = _ratio_interval(b.windows, n.windows)
    out.update(p_value=p, ratio_low=low, ratio_high=high, reasons=[])
    verdict = "no significant change"
    if p < ALPHA and low > 1 and change - 1 >= min_effect:
        verdict = "faster"
    elif p < ALPHA and high < 1 and 1 - change >= min_effect:
        verdict = "slower"
    status = {"faster": "improved", "slower": "regression" if 1 - change > max_throughput_drop else "ok"}
    note = ""
    if verdict == "no significant change" and _least_p(len(b.windows), len(n.windows)) >= ALPHA:
        note = f"{len(b.windows)} vs {len(n.windows)} windows: too few for p < {ALPHA}"
    elif verdict == "slower" and status["slower"] == "ok":
        note = f"within the {max_throughput_drop:.0%} allowed"
    return {**out, "verdict": verdict, "status": status.get(verdict, "ok"), "note": note}


def _least_p(k1: int, k2: int) -> float:
    """The smallest two-sided p the rank test can give k1 and k2 windows (all of one side above)."""
    return min(1.0, 2 / math.comb(k1 + k2, k1))


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
    device = f"{dev.get('type', '?')}:{dev.get('name', '?')}" if device_name else dev.get("type", "?")
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
            max_throughput_drop: float = 0.10, allow_missing: bool = False, accuracy_only: bool = False,
            min_effect: float = 0.02) -> Comparison:
    if not all(0 <= t < 1 for t in (max_accuracy_drop, max_throughput_drop, min_effect)):
        raise ResultError("thresholds must be fractions in [0, 1)")
    result = Comparison(thresholds={"max_accuracy_drop": max_accuracy_drop,
                                    "max_throughput_drop": None if accuracy_only else max_throughput_drop,
                                    "min_effect": None if accuracy_only else min_effect,
                                    "alpha": None if accuracy_only else ALPHA,
                                    "method": None if accuracy_only else METHOD,
                                    "allow_missing": allow_missing, "accuracy_only": accuracy_only})
    # records pair by device type, not CPU model: another CPU compares accuracy, and its throughput
    # is "not comparable" (comparable_reasons) instead of both runs being "missing"
    base, cand = latest_by_key(baseline, False), latest_by_key(new, False)
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
            why = comparable_reasons(b, n, bs)
            result.rows.append(Row("throughput", key, item, pb["throughput"], pn["throughput"],
                                   **judge_throughput(pb, pn, why, min_effect, max_throughput_drop)))
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


def _with_noise(value: float | None, half: float | None, unstable: bool, windows: int = 0) -> str:
    """A side's throughput with its 95% half-width and a badge, zoo.stats.figure's text: '41.20 ±1.1%',
    '41.20 ±7.1% UNSTABLE', '41.20 ±? (2 windows) UNSTABLE'; a side without any interval (an old
    record) or without windows is its bare figure."""
    from zoo.stats import figure
    if half is None and not unstable:
        return figure(value, digits=2)
    return figure(value, half, not unstable, windows=windows, digits=2)


def _ratio(r: Row) -> str:
    if r.change is None:
        return "-"
    if r.ratio_low is None or r.ratio_high is None:
        return f"{r.change:.3f}"
    return f"{r.change:.3f} [{r.ratio_low:.3f}, {r.ratio_high:.3f}]"


def _p(p: float | None) -> str:
    return "-" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _summary(c: Comparison, markdown: bool = True) -> list[str]:
    t = c.thresholds
    head = f"Regressions: **{len(c.regressions)}**." if markdown else f"Regressions: {len(c.regressions)}."
    if t.get("accuracy_only"):
        return [*textwrap.wrap(head + " Throughput not compared (accuracy only: results from different machines).",
                               WIDTH), "", f"Accuracy: a relative drop above {t['max_accuracy_drop']:.1%} fails.", ""]
    v = c.verdicts
    counts = ", ".join(f"{v[k]} {k}" for k in VERDICTS)
    rules = (f"Accuracy: a relative drop above {t['max_accuracy_drop']:.1%} fails. Throughput: a figure fails "
             f"when slower by more than {t['max_throughput_drop']:.0%}; faster / slower need p < {t['alpha']} "
             "(two-sided Mann-Whitney U over the window throughputs), the 95% interval of new/baseline "
             f"beyond 1 and a change of at least {t['min_effect']:.0%}; else no significant change. "
             f"Interval: percentile bootstrap ({RESAMPLES} resamples, seed {SEED}) of the ratio of means "
             "(each side's mean time per sample over its windows). ± is a side's own 95% interval, "
             "relative; not comparable is no regression.")
    return [*textwrap.wrap(f"{head} Throughput: {counts}.", WIDTH), "", *textwrap.wrap(rules, 96), ""]


def _accuracy_table(rows: list[Row]) -> list[str]:
    lines = ["| accuracy | baseline | new | relative drop | status | note |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r.item} | {_fmt(r.baseline)} | {_fmt(r.new)} | "
              f"{'-' if r.change is None else f'{r.change:+.2%}'} | {r.status} | {r.note} |" for r in rows]
    return lines + [""]


def _shared_reasons(rows: list[Row]) -> list[str]:
    """The reasons every judged row shares when none is comparable (another CPU, threads, no
    windows): said once above the table, the rest in each row's note."""
    judged = [r for r in rows if r.verdict is not None]
    if judged and all(r.verdict == "not comparable" for r in judged):
        return [x for x in judged[0].reasons if all(x in r.reasons for r in judged)]
    return []


def _throughput_cells(rows: list[Row], shared: list[str]) -> list[list[str]]:
    """Per row: item, baseline, new, ratio [95%], p, verdict, note."""
    cells = []
    for r in rows:
        if r.verdict is None:  # not judged: only in one run, or failed in the new one
            verdict, note = r.status, r.note
        else:
            verdict = r.verdict + (", REGRESSION" if r.status == "regression" else "")
            note = "; ".join(x for x in r.reasons if x not in shared) if r.reasons else r.note
        cells.append([r.item, _with_noise(r.baseline, r.baseline_half_width, r.baseline_unstable, r.baseline_windows),
                      _with_noise(r.new, r.new_half_width, r.new_unstable, r.new_windows), _ratio(r), _p(r.p_value),
                      verdict, note])
    return cells


def _throughput_table(rows: list[Row]) -> list[str]:
    """The key's throughput rows as a Markdown table; reasons every row shares when none is
    comparable are said once above the table, the rest in each row's note."""
    shared = _shared_reasons(rows)
    cells = _throughput_cells(rows, shared)
    header = ["samples/s", "baseline", "new", "new/baseline [95%]", "p", "verdict", "note"]
    if not any(cell[-1] for cell in cells):  # no notes: no empty column
        header, cells = header[:-1], [cell[:-1] for cell in cells]
    lines = [f"Throughput not comparable: {'; '.join(shared)}.", ""] if shared else []
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell) + " |" for cell in cells]
    return lines + [""]


def _sections(c: Comparison) -> list[tuple[str, list[Row], list[Row]]]:
    """One section per configuration (run key): its accuracy rows and its throughput rows."""
    keys = sorted({r.key for r in c.rows if r.kind in ("accuracy", "throughput")})
    return [(key, [r for r in c.rows if r.key == key and r.kind == "accuracy"],
             [r for r in c.rows if r.key == key and r.kind == "throughput"]) for key in keys]


def to_markdown(c: Comparison) -> str:
    """The comparison for a reader: the summary (regressions, throughput verdict counts, the
    rules), then one section per run key with its accuracy and throughput tables, then the runs
    in only one set."""
    lines = ["# Comparison", ""] + _summary(c)
    for key, acc, thr in _sections(c):
        lines += [f"## {key}", ""]
        if acc:
            lines += _accuracy_table(acc)
        if thr:
            lines += _throughput_table(thr)
    miss = [r for r in c.rows if r.kind == "missing"]
    if miss:
        lines += ["## Runs in only one set", ""] + [f"- {r.key}: {r.note} ({r.status})" for r in miss] + [""]
    return "\n".join(lines)


def heading(key: str) -> str:
    """A run key as a terminal heading: 'unetpp onnxruntime fp32 on cpu (upsample=bilinear)'."""
    parts = key.split(" / ")
    if len(parts) < 5:
        return key
    model, variant, runtime, device, precision = parts[0], " / ".join(parts[1:-3]), *parts[-3:]
    return f"{model} {runtime} {precision} on {device}" + ("" if variant == "-" else f" ({variant})")


def _fold(text: str, indent: str = "  ") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ",
                         break_long_words=False, break_on_hyphens=False)


def _plain_table(cells: list[list], headers: list[str], colalign: tuple) -> list[str]:
    from tabulate import tabulate
    text = tabulate(cells, headers=headers, colalign=colalign, disable_numparse=True)
    return ["  " + line.rstrip() for line in text.splitlines()]


def _bs_scope(r: Row) -> list[str]:
    """'bs4 infer_only' as ['4', 'infer_only']."""
    size, _, scope = r.item.partition(" ")
    return [size.removeprefix("bs"), scope]


def to_text(c: Comparison) -> str:
    """The comparison for a terminal, every line within WIDTH columns: the summary, then per
    configuration one heading (model, runtime, precision, device, variant) and tables of what
    varies (accuracy protocols; batch size and scope with both sides' figures, the ratio, p and
    the verdict), notes below each table, then the runs in only one set."""
    lines = _summary(c, markdown=False)
    for key, acc, thr in _sections(c):
        lines += _fold("== " + heading(key), "")
        if acc:
            cells = [[r.item, _fmt(r.baseline), _fmt(r.new), "-" if r.change is None else f"{r.change:+.2%}", r.status]
                     for r in acc]
            lines += _plain_table(cells, ["accuracy", "baseline", "new", "relative\ndrop", "status"],
                                  ("left", "right", "right", "right", "left"))
            lines += [x for r in acc if r.note for x in _fold(f"{r.item}: {r.note}")]
        if thr:
            shared = _shared_reasons(thr)
            cells = _throughput_cells(thr, shared)
            lines += [""] + (_fold(f"throughput not comparable: {'; '.join(shared)}") if shared else [])
            # judged rows (ratio, p, verdict) and the rest (not comparable, failed, in one run only) apart:
            # a side's UNSTABLE figure and a judged row's interval and p never share a line, so both fit
            judged = [[*_bs_scope(r), *cell[1:6]] for r, cell in zip(thr, cells)
                      if r.verdict not in (None, "not comparable")]
            other = [[*_bs_scope(r), *cell[1:3], cell[5]] for r, cell in zip(thr, cells)
                     if r.verdict in (None, "not comparable")]
            sides = ["bs", "scope", "baseline\nsamples/s", "new\nsamples/s"]
            if judged:
                lines += _plain_table(judged, [*sides, "new/baseline\n[95% interval]", "p", "verdict"],
                                             ("right", "left", "left", "left", "left", "right", "left"))
            if other:
                lines += ([""] if judged else []) + _plain_table(other, [*sides, "verdict"], ("right", "left", "left", "left", "left"))
            lines += [x for cell in cells if cell[6] for x in _fold(f"{cell[0]}: {cell[6]}")]
        lines.append("")
    miss = [r for r in c.rows if r.kind == "missing"]
    if miss:
        lines += ["Runs in only one set:"]
        lines += [x for r in miss for x in _fold(f"{heading(r.key)}: {r.note} ({r.status})")]
    return "\n".join(lines).rstrip("\n")


def run_compare(baseline: Path, new: Path, out: Path | None = None, **kw) -> tuple[Comparison, str]:
    """The comparison and its terminal text (to_text); with `out`, compare.md (to_markdown: the
    same sections, Markdown tables) and compare.json there."""
    c = compare(_records(baseline), _records(new), **kw)
    if out is not None:
        from zoo.fileutil import atomic_write_text
        out = Path(out)
        atomic_write_text(out / "compare.md", to_markdown(c))
        from zoo.schema import finite_or_none
        atomic_write_text(out / "compare.json", json.dumps(finite_or_none(
            {"kind": "zoo.comparison", "baseline": str(baseline), "new": str(new), "thresholds": c.thresholds,
             "regressions": len(c.regressions), "verdicts": c.verdicts, "rows": [r.as_dict() for r in c.rows]}),
            indent=1, allow_nan=False) + "\n")
    return c, to_text(c)
